"""Tests for Subscription: catch-up then live, checkpoints, retries, dead letters, transactions."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs
import pytest

from meshkit import ConfigurationError
from meshkit.eventsourcing import (
    DeadLetter,
    Event,
    MemoryCheckpointStore,
    MemoryDeadLetterStore,
    MemoryEventStore,
    Subscription,
    TransactionalCheckpointStore,
)
from meshkit.eventsourcing._subscription import _position
from meshkit.testing._eventstore_conformance import make_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


def _fill(store: MemoryEventStore, stream: str, count: int) -> None:
    start = store.stream_version_nowait(stream)
    store.append_nowait(stream, make_events(stream, start + 1, count), start)


def _subscription(
    store: MemoryEventStore,
    seen: list[int],
    checkpoints: MemoryCheckpointStore | None = None,
    **knobs: object,
) -> Subscription[object]:
    async def handler(event: Event, _tx: object) -> None:
        seen.append(_position(event))

    return Subscription(
        name="projection",
        store=store,
        handler=handler,
        checkpoints=MemoryCheckpointStore() if checkpoints is None else checkpoints,
        **knobs,  # type: ignore[arg-type]
    )


@attrs.define
class _Tx:
    """A fake database transaction: writes become visible on commit only."""

    writes: list[int] = attrs.field(factory=list)
    checkpoint: int | None = None

    async def save_checkpoint(self, name: str, position: int) -> None:
        self.checkpoint = position


@attrs.define
class _TransactionalStore:
    """A TransactionalCheckpointStore over a fake projection table."""

    table: list[int] = attrs.field(factory=list)
    position: int = 0
    rollbacks: int = 0

    async def load_checkpoint(self, name: str) -> int:
        return self.position

    async def save_checkpoint(self, name: str, position: int) -> None:
        self.position = position

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        tx = _Tx()
        try:
            yield tx
        except Exception:
            self.rollbacks += 1
            raise
        self.table.extend(tx.writes)
        if tx.checkpoint is not None:
            self.position = tx.checkpoint


class MemoryCheckpointStoreBase:
    async def load_checkpoint(self, name: str) -> int:
        return 0  # pragma: no cover - overridden

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Never called in these tests."""  # pragma: no cover


class TestSubscription:
    async def test_catch_up_then_live_exactly_once(self) -> None:
        """Stored events are caught up, then live ones followed: each once, in order."""
        store, checkpoints = MemoryEventStore(), MemoryCheckpointStore()
        seen: list[int] = []
        _fill(store, "a", 3)
        _fill(store, "b", 2)
        async with _subscription(store, seen, checkpoints, batch_size=2) as sub:
            await sub.wait_for_position(5)
            _fill(store, "a", 2)
            _fill(store, "c", 1)
            await sub.wait_for_position(8)
            assert sub.position == 8
        assert seen == list(range(1, 9))
        assert await checkpoints.load_checkpoint("projection") == 8

    async def test_restart_resumes_from_checkpoint(self) -> None:
        """A new subscription with the same checkpoint store starts after the saved position."""
        store, checkpoints = MemoryEventStore(), MemoryCheckpointStore()
        first: list[int] = []
        _fill(store, "a", 3)
        async with _subscription(store, first, checkpoints) as sub:
            await sub.wait_for_position(3)
        _fill(store, "a", 2)
        second: list[int] = []
        async with _subscription(store, second, checkpoints) as sub:
            await sub.wait_for_position(5)
        assert (first, second) == ([1, 2, 3], [4, 5])

    async def test_failing_handler_is_retried_then_parked(self, clock: FakeClock) -> None:
        """A handler failing on one event is retried with backoff, then the event is parked."""
        store, letters, reported = MemoryEventStore(), MemoryDeadLetterStore(), []
        calls: list[int] = []
        _fill(store, "a", 3)

        async def handler(event: Event, _tx: object) -> None:
            calls.append(_position(event))
            if event.version == 2:
                raise RuntimeError("poison")

        async def report(letter: DeadLetter) -> None:
            reported.append(letter)

        sub = Subscription(
            name="p",
            store=store,
            handler=handler,
            checkpoints=MemoryCheckpointStore(),
            dead_letters=letters,
            on_dead_letter=report,
            max_attempts=3,
            backoff_initial=1.0,
            clock=clock,
        )
        async with sub:
            for delay in (1.0, 2.0):
                await clock.wait_sleepers(1)
                clock.advance(delay)
            await sub.wait_for_position(3)
            _fill(store, "a", 1)
            await sub.wait_for_position(4)
        assert calls == [1, 2, 2, 2, 3, 4]
        [letter] = await letters.dead_letters("p")
        assert (letter.event.version, letter.attempts) == (2, 3)
        assert letter.error == "RuntimeError('poison')"
        assert reported == [letter]

    async def test_a_failing_report_does_not_stop_the_subscription(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """If `on_dead_letter` raises, the error is logged and the subscription goes on."""
        store, letters, seen = MemoryEventStore(), MemoryDeadLetterStore(), []
        checkpoints = MemoryCheckpointStore()
        _fill(store, "a", 2)

        async def handler(event: Event, _tx: object) -> None:
            if event.version == 1:
                raise RuntimeError("poison")
            seen.append(_position(event))

        async def broken_alert(letter: DeadLetter) -> None:
            raise ConnectionError(f"pager down, lost {letter.event.version}")

        sub = Subscription(
            name="p",
            store=store,
            handler=handler,
            checkpoints=checkpoints,
            dead_letters=letters,
            on_dead_letter=broken_alert,
            max_attempts=1,
        )
        with caplog.at_level(logging.ERROR, logger="meshkit.eventsourcing"):
            async with sub:
                await sub.wait_for_position(2)
        assert seen == [2]
        assert [letter.event.version for letter in await letters.dead_letters("p")] == [1]
        assert await checkpoints.load_checkpoint("p") == 2
        assert "on_dead_letter" in caplog.text
        assert "pager down, lost 1" in caplog.text

    async def test_flaky_handler_recovers_without_parking(self, clock: FakeClock) -> None:
        """A handler that fails twice then succeeds delivers the event; nothing is parked."""
        store, letters, seen = MemoryEventStore(), MemoryDeadLetterStore(), []
        failures = [RuntimeError("1"), RuntimeError("2")]
        _fill(store, "a", 1)

        async def handler(event: Event, _tx: object) -> None:
            if failures:
                raise failures.pop()
            seen.append(_position(event))

        sub = Subscription(
            name="p",
            store=store,
            handler=handler,
            checkpoints=MemoryCheckpointStore(),
            dead_letters=letters,
            max_attempts=None,
            backoff_initial=4.0,
            backoff_max=5.0,
            clock=clock,
        )
        async with sub:
            await clock.wait_sleepers(1)
            clock.advance(4.0)
            await clock.wait_sleepers(1)
            clock.advance(5.0)  # 8 s capped at backoff_max
            await sub.wait_for_position(1)
        assert seen == [1]
        assert await letters.dead_letters("p") == []

    async def test_retrying_forever_survives_a_long_outage(self, clock: FakeClock) -> None:
        """With `max_attempts=None`, over a thousand failures still only back off at the cap."""
        store, seen = MemoryEventStore(), []
        failures, backoffs = 1100, 0
        _fill(store, "a", 1)

        async def handler(event: Event, _tx: object) -> None:
            nonlocal failures
            if failures:
                failures -= 1
                raise ConnectionError("bus down")
            seen.append(_position(event))

        sub = Subscription(
            name="relay",
            store=store,
            handler=handler,
            checkpoints=MemoryCheckpointStore(),
            max_attempts=None,
            backoff_initial=0.5,
            backoff_max=30.0,
            clock=clock,
        )
        async with sub:
            while not seen:
                await clock.wait_sleepers(1)
                clock.advance(30.0)  # every backoff is at most backoff_max
                backoffs += 1
                await anyio.wait_all_tasks_blocked()
        assert (seen, backoffs) == ([1], 1100)

    async def test_transactional_store_commits_projection_with_checkpoint(
        self, clock: FakeClock
    ) -> None:
        """With a transactional store, writes and checkpoint commit together; failures roll back."""
        store, projection = MemoryEventStore(), _TransactionalStore()
        assert isinstance(projection, TransactionalCheckpointStore)
        _fill(store, "a", 4)

        async def handler(event: Event, tx: _Tx) -> None:
            if event.version == 3:
                raise ValueError("bad row")
            tx.writes.append(_position(event))

        sub = Subscription(
            name="p",
            store=store,
            handler=handler,
            checkpoints=projection,
            max_attempts=1,
            clock=clock,
        )
        async with sub:
            await sub.wait_for_position(4)
        assert projection.table == [1, 2, 4]
        assert projection.position == 4
        assert projection.rollbacks == 1  # the batch; its failure was event 3's one attempt

    async def test_wait_for_position_already_reached(self) -> None:
        """wait_for_position() returns at once for a position already handled."""
        store, seen = MemoryEventStore(), list[int]()
        async with _subscription(store, seen) as sub:
            with anyio.fail_after(1):
                await sub.wait_for_position(0)
        assert seen == []

    async def test_bad_configuration(self) -> None:
        """Bad knobs and entering a running subscription raise ConfigurationError."""
        store = MemoryEventStore()
        for knobs in ({"batch_size": 0}, {"max_attempts": 0}, {"backoff_initial": -1.0}):
            with pytest.raises(ConfigurationError):
                _subscription(store, [], **knobs)
        with pytest.raises(ConfigurationError, match="name"):
            attrs.evolve(_subscription(store, []), name="")
        sub = _subscription(store, [])
        async with sub:
            with pytest.raises(ConfigurationError, match="already running"):
                await sub.__aenter__()
        assert await sub.__aexit__(None, None, None) is None

    async def test_checkpoint_failure_on_start_propagates(self) -> None:
        """If the checkpoint cannot be loaded, entering the subscription raises it."""

        class FailingCheckpoints:
            async def load_checkpoint(self, name: str) -> int:
                raise OSError("disk gone")

            async def save_checkpoint(self, name: str, position: int) -> None:
                raise OSError("disk gone")

        sub = Subscription(
            name="p",
            store=MemoryEventStore(),
            handler=_noop,
            checkpoints=FailingCheckpoints(),
        )
        with pytest.raises(OSError, match="disk gone"):
            async with sub:
                pass  # pragma: no cover - never entered

    async def test_cancelled_while_starting(self) -> None:
        """A cancellation while the checkpoint loads leaves the subscription stopped."""

        class SlowCheckpoints(MemoryCheckpointStoreBase):
            async def load_checkpoint(self, name: str) -> int:
                await anyio.sleep_forever()
                raise AssertionError  # pragma: no cover - never woken

        sub = Subscription(
            name="p", store=MemoryEventStore(), handler=_noop, checkpoints=SlowCheckpoints()
        )
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with sub:
                pass  # pragma: no cover - never entered
        assert scope.cancelled_caught

    async def test_store_failure_ends_the_subscription(self) -> None:
        """If reading the log fails, the error surfaces from the `async with` block."""

        class FailingStore:
            def __init__(self) -> None:
                self.inner = MemoryEventStore()

            async def read_all(self, after: int = 0, *, limit: int | None = None) -> list[Event]:
                raise OSError("connection lost")

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        sub = Subscription(
            name="p",
            store=cast("MemoryEventStore", FailingStore()),
            handler=_noop,
            checkpoints=MemoryCheckpointStore(),
        )
        failures: list[BaseException] = []
        try:
            async with sub:
                await sub.wait_for_position(1)
        except* OSError as group:
            failures.extend(group.exceptions)
        assert [str(f) for f in failures] == ["connection lost"]

    async def test_body_error_keeps_its_cause(self) -> None:
        """An error raised in the `async with` body comes out unwrapped, its cause intact."""

        async def fail() -> None:
            async with _subscription(MemoryEventStore(), []):
                try:
                    int("twelve")
                except ValueError as exc:
                    raise LookupError("no such order") from exc

        with pytest.raises(LookupError, match="no such order") as info:
            await fail()
        assert isinstance(info.value.__cause__, ValueError)

    async def test_several_waiters(self) -> None:
        """Several tasks waiting for positions are all woken."""
        store = MemoryEventStore()
        woke: list[int] = []
        async with _subscription(store, []) as sub:

            async def wait(position: int) -> None:
                await sub.wait_for_position(position)
                woke.append(position)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, 1)
                tg.start_soon(wait, 2)
                await anyio.wait_all_tasks_blocked()
                _fill(store, "a", 2)
        assert sorted(woke) == [1, 2]

    def test_events_need_positions(self) -> None:
        """An event without a position (not read from a store) is rejected."""
        with pytest.raises(ConfigurationError, match="position"):
            _position(Event(stream_id="s", version=1, type="T"))


async def _noop(_event: Event, _tx: object) -> None:
    """Handle nothing."""
