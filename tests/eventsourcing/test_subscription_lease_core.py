"""The lease's pure core against the memory lease table: hypothesis drives every interleaving.

Candidates read the record, decide, and write later (a delayed compare-and-swap or
renewal), time moves in arbitrary steps, runners crash, pause and come back, release, and
commit fenced checkpoints, some inside a transaction that locks every other writer out (as
SQLite's does) for as long as it likes. Whatever happens: at most one candidate believes it
may run at any instant, fencing tokens only grow, and only the latest token can commit.
"""

from __future__ import annotations

import math
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshkit.eventsourcing import LeaseRecord, MemoryLeaseStore
from meshkit.eventsourcing._lease import LeaseCore, Standby, TakeOver

NAME = "projection"
DURATION = 1.0
INTERVAL = 0.25
CANDIDATES = st.integers(0, 2)

Pending = tuple[Literal["take", "renew"], float, LeaseRecord | None, int]


class LeaseMachine(RuleBasedStateMachine):
    """Three candidates contend for one name; writes land after their decisions."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryLeaseStore()
        self.now = 0.0
        self.generation = [0, 0, 0]
        self.cores = [self._core(i) for i in range(3)]
        self.pending: dict[int, Pending] = {}
        self.granted: list[int] = []
        self.commits: list[int] = []
        self.terms: list[list[int]] = [[], [], []]
        self.locked_by: int | None = None

    def _core(self, i: int) -> LeaseCore:
        owner = f"runner-{i}.{self.generation[i]}"
        return LeaseCore(owner=owner, duration=DURATION, renew_interval=INTERVAL)

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5, 1.0]) | st.floats(0, 2))
    def tick(self, seconds: float) -> None:
        """Time moves on (often by steps that land exactly on deadlines)."""
        self.now += seconds

    @rule(i=CANDIDATES)
    def look(self, i: int) -> None:
        """A candidate that does not hold the lease reads it; a takeover is begun, not written."""
        core = self.cores[i]
        if core.holding(self.now) or i in self.pending:
            return
        decision = core.observe(self.store.read_nowait(NAME), self.now)
        if isinstance(decision, TakeOver):
            self.pending[i] = ("take", self.now, decision.seen, 0)
        else:
            assert self.now < decision.until <= self.now + INTERVAL

    @rule(i=CANDIDATES)
    def begin_renewal(self, i: int) -> None:
        """A holder begins a renewal (its write lands later)."""
        token = self.cores[i].token
        if token is not None and i not in self.pending:
            self.pending[i] = ("renew", self.now, None, token)

    @rule(i=CANDIDATES)
    def land(self, i: int) -> None:
        """A begun takeover or renewal reaches the store, and its outcome the candidate."""
        if i not in self.pending or self.locked_by is not None:
            return  # no pending write, or it waits for the writer lock
        kind, started, seen, token = self.pending.pop(i)
        core = self.cores[i]
        if kind == "take":
            won = self.store.acquire_nowait(NAME, seen, core.owner, DURATION)
            if won is not None:
                self.granted.append(won.token)
                self.terms[i].append(won.token)
            assert core.acquired(won, started) is (won is not None)
        else:
            core.renewed(self.store.renew_nowait(NAME, core.owner, token), started)

    @rule(i=CANDIDATES, believed=st.booleans())
    def commit(self, i: int, believed: bool) -> None:
        """A runner commits a fenced checkpoint (or a paused one tries to, with a stale view)."""
        core = self.cores[i]
        token = core.token
        if token is None or (believed and not core.holding(self.now)) or self.locked_by is not None:
            return
        if self.store.renew_nowait(NAME, core.owner, token):
            assert token == self.granted[-1]  # only the latest takeover can commit
            self.commits.append(token)
        else:
            core.drop()

    @rule(i=CANDIDATES, believed=st.booleans())
    def lock(self, i: int, believed: bool) -> None:
        """A runner (or a paused one) begins a transaction that locks every other writer out."""
        core = self.cores[i]
        waits = self.locked_by is not None
        if core.token is None or (believed and not core.holding(self.now)) or waits:
            return
        self.locked_by = i
        core.transaction_locked(self.now)

    @rule(commit=st.booleans())
    def unlock(self, commit: bool) -> None:
        """The locked transaction commits its fenced checkpoint, or rolls back."""
        i, self.locked_by = self.locked_by, None
        if i is None:
            return
        core = self.cores[i]
        fenced_at = None
        if commit and core.token is not None:
            if self.store.renew_nowait(NAME, core.owner, core.token):
                assert core.token == self.granted[-1]
                self.commits.append(core.token)
                fenced_at = self.now
            else:
                core.drop()
        core.transaction_ended(fenced_at)

    @rule(i=CANDIDATES)
    def stale_term_commit(self, i: int) -> None:
        """A batch left over from an earlier term of the same runner cannot commit."""
        for token in self.terms[i][:-1]:
            assert not self.store.renew_nowait(NAME, self.cores[i].owner, token)

    @rule(i=CANDIDATES)
    def release(self, i: int) -> None:
        """A holder gives the lease up."""
        core = self.cores[i]
        if core.token is not None:
            self.store.release_nowait(NAME, core.owner, core.token)
            core.drop()

    @rule(i=CANDIDATES)
    def crash(self, i: int) -> None:
        """A candidate dies (its pending write is lost) and restarts as a new runner."""
        self.pending.pop(i, None)
        if self.locked_by == i:
            self.locked_by = None  # the lock dies with the process
        self.generation[i] += 1
        self.cores[i] = self._core(i)
        self.terms[i] = []

    @invariant()
    def at_most_one_runner(self) -> None:
        """No two candidates believe they may run at the same instant."""
        assert sum(core.holding(self.now) for core in self.cores) <= 1

    @invariant()
    def tokens_grow(self) -> None:
        """Every takeover got a larger token; commits never go back to an older one."""
        assert self.granted == sorted(set(self.granted))
        assert self.commits == sorted(self.commits)


LeaseMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50)
TestLeaseMachine = LeaseMachine.TestCase


class TestLeaseCore:
    @given(
        duration=st.floats(0.01, 100),
        ratio=st.floats(0.01, 0.99),
        first_look=st.floats(0, 50),
    )
    def test_takeover_of_a_dead_holder_is_bounded(
        self, duration: float, ratio: float, first_look: float
    ) -> None:
        """A standby following its own decisions takes a dead holder's lease in time."""
        interval = duration * ratio
        store = MemoryLeaseStore()
        holder = LeaseCore(owner="holder", duration=duration, renew_interval=interval)
        assert holder.acquired(store.acquire_nowait(NAME, None, "holder", duration), 0.0)
        standby = LeaseCore(owner="standby", duration=duration, renew_interval=interval)
        now = first_look
        while isinstance(decision := standby.observe(store.read_nowait(NAME), now), Standby):
            now = decision.until
        assert not holder.holding(now)  # the holder's own deadline passed first
        assert duration <= now <= first_look + duration  # and the wait is one lease at most
        won = store.acquire_nowait(NAME, decision.seen, "standby", duration)
        assert standby.acquired(won, now)
        assert standby.token == 2

    def test_free_released_or_own_lease_is_taken_at_once(self) -> None:
        """No record, a released one, or one of our own: take it without waiting."""
        core = LeaseCore(owner="me", duration=1.0, renew_interval=0.5)
        mine = LeaseRecord(holder="me", token=3, beat=7, duration=1.0)
        released = LeaseRecord(holder="", token=3, beat=8, duration=1.0)
        for record in (None, mine, released):
            assert core.observe(record, 0.0) == TakeOver(record)

    @given(duration=st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e300]))
    def test_a_damaged_duration_means_waiting_our_own(self, duration: float) -> None:
        """A record whose duration makes no sense is waited out for the standby's duration."""
        core = LeaseCore(owner="me", duration=3.0, renew_interval=1.0)
        record = LeaseRecord(holder="other", token=1, beat=0, duration=duration)
        assert core.observe(record, 0.0) == Standby(1.0)
        assert core.observe(record, 2.5) == Standby(3.0)
        decision = core.observe(record, 3.0)
        assert isinstance(decision, TakeOver)
        assert decision.seen is record

    def test_renewal_outcomes(self) -> None:
        """A renewal moves the deadline from its start; a refused one drops the lease."""
        core = LeaseCore(owner="me", duration=1.0, renew_interval=0.25)
        assert core.deadline == -math.inf
        assert not core.acquired(None, 0.0)
        assert core.acquired(LeaseRecord(holder="me", token=1, beat=0, duration=1.0), 0.0)
        assert (core.deadline, core.next_renewal) == (1.0, 0.25)
        assert core.renewed(ok=True, started=0.5)
        assert (core.deadline, core.next_renewal) == (1.5, 0.75)
        core.renew_failed(0.8)
        assert (core.deadline, core.next_renewal) == (1.5, 1.05)
        assert core.holding(1.4)
        assert not core.holding(1.5)
        assert not core.renewed(ok=False, started=1.0)
        assert core.token is None
        assert core.next_renewal == math.inf

    def test_a_locking_transaction_keeps_a_live_lease_only(self) -> None:
        """A transaction that locks writers out keeps a live lease held, never a lapsed one."""
        core = LeaseCore(owner="me", duration=1.0, renew_interval=0.25)
        assert core.acquired(LeaseRecord(holder="me", token=1, beat=0, duration=1.0), 0.0)
        core.transaction_locked(0.5)
        assert core.holding(5.0)  # no one else can write, so no one can take over
        assert core.recheck_at(5.0) == 5.25  # past the deadline: look again soon
        core.transaction_ended(fenced_at=4.0)  # its committed fence renewed the lease
        assert (core.deadline, core.next_renewal) == (5.0, 4.25)
        core.transaction_locked(6.0)  # the lease lapsed at 5.0: a standby may hold it now
        assert not core.holding(6.0)
        core.transaction_ended(fenced_at=None)
        assert not core.holding(6.0)
