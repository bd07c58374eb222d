"""The idempotency store's state machine, driven against a plain model (memory and SQLite)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshkit import IdempotencyConflictError
from meshkit.grpc import IdempotencyStore, MemoryIdempotencyStore, SQLiteIdempotencyStore
from meshkit.testing import FakeClock

KEYS = st.sampled_from(["a", "b", "c"])
TTL, LEASE = 100.0, 10.0


class StoreMachine(RuleBasedStateMachine):
    """Claims, answers, failures and time, against {key: (answer or None, at)}."""

    @staticmethod
    def make_store(clock: FakeClock) -> IdempotencyStore:
        return MemoryIdempotencyStore(ttl=TTL, lease=LEASE, clock=clock)

    @initialize()
    def start(self) -> None:
        self.clock = FakeClock()
        self.store: IdempotencyStore = self.make_store(self.clock)
        self.model: dict[str, tuple[bytes | None, float]] = {}

    def _live(self, key: str) -> bool:
        if key not in self.model:
            return False
        answer, at = self.model[key]
        return self.clock.now() - at < (LEASE if answer is None else TTL)

    @rule(key=KEYS)
    def begin(self, key: str) -> None:
        live = self._live(key)
        try:
            got = self.store.begin("/m", key)
        except IdempotencyConflictError:
            assert live
            assert self.model[key][0] is None
            return
        if live:
            assert got == self.model[key][0]
        else:
            assert got is None
            self.model[key] = (None, self.clock.now())

    @rule(key=KEYS, payload=st.binary(max_size=8))
    def complete(self, key: str, payload: bytes) -> None:
        if key in self.model and self.model[key][0] is None and self._live(key):
            self.store.complete("/m", key, payload)
            self.model[key] = (payload, self.clock.now())

    @rule(key=KEYS)
    def abandon(self, key: str) -> None:
        if key in self.model and self.model[key][0] is None and self._live(key):
            self.store.abandon("/m", key)
            del self.model[key]

    @rule(seconds=st.sampled_from([1.0, 5.0, 11.0, 60.0, 101.0]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def answers_are_kept(self) -> None:
        for key, (answer, _) in self.model.items():
            if answer is not None and self._live(key):
                assert self.store.begin("/m", key) == answer


class SQLiteStoreMachine(StoreMachine):
    """The same machine over SQLite."""

    @staticmethod
    def make_store(clock: FakeClock) -> IdempotencyStore:
        return SQLiteIdempotencyStore(":memory:", ttl=TTL, lease=LEASE, clock=clock)


TestMemoryStoreMachine = StoreMachine.TestCase
TestSQLiteStoreMachine = SQLiteStoreMachine.TestCase
