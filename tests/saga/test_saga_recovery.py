"""Recovery edge cases: periodic scans, failing stores, odd logs, sagas driven twice locally."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from meshkit import (
    EventStoreUnavailableError,
    SagaAlreadyExistsError,
    SagaStateError,
)
from meshkit.eventsourcing import Event, EventStore, MemoryEventStore
from meshkit.saga import Saga, SagaOrchestrator, SagaState, Step, StepContext, StepKind
from saga_helpers import FlakyStore, Participant

if TYPE_CHECKING:
    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


def two_steps(p: Participant, first: Any = None) -> Saga:
    return Saga(
        name="order",
        steps=[
            Step(name="create", action=first or p.act, compensation=p.undo),
            Step(name="pay", action=p.act, kind=StepKind.PIVOT),
        ],
    )


async def orphan(store: EventStore, saga_id: str, name: str = "order") -> None:
    """Append the log of a saga whose orchestrator died right after starting it."""
    stream = f"saga-{saga_id}"
    events = [
        Event(stream_id=stream, version=1, type="SagaStarted", data={"saga": name, "data": {}}),
        Event(stream_id=stream, version=2, type="StepStarted", data={"step": "create"}),
    ]
    await store.append(stream, events, 0)


class TestPeriodicRecovery:
    async def test_scans_take_over_idle_sagas(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With recovery_interval, sagas orphaned later are taken over once idle long enough."""
        p = Participant()
        saga = two_steps(p)
        store = FlakyStore(failures=0)
        async with SagaOrchestrator(
            store=store, sagas=[saga], clock=clock, recover_after=5, recovery_interval=10
        ) as orch:
            await orphan(store, "late")
            store.read_failures = 1  # the first scan fails, and is logged
            with caplog.at_level(logging.WARNING, logger="meshkit.saga"):
                await clock.advance_stepwise(10)
            assert "recovery scan failed" in caplog.text
            await clock.advance_stepwise(10)  # seen now, but not idle for 5 s yet
            assert orch.statistics().running == 1
            assert orch.statistics().driving == 0
            await clock.advance_stepwise(10)
            status = await orch.wait("late")
        assert status.state is SagaState.COMPLETED
        assert p.applied == 2


class TestFailures:
    async def test_entering_fails_when_the_store_does(self) -> None:
        """A store failing during the first scan makes entering fail; nothing is left running."""
        store = FlakyStore(failures=0)
        store.read_failures = 1
        orch = SagaOrchestrator(store=store, sagas=[])
        with pytest.raises(EventStoreUnavailableError):
            async with orch:
                pass  # pragma: no cover - never entered
        with pytest.raises(SagaStateError, match="not entered"):
            await orch.resume("x")

    async def test_a_driving_bug_is_logged_and_left(self, caplog: pytest.LogCaptureFixture) -> None:
        """An unexpected error while driving is logged; the saga stays for recovery."""
        p = Participant()
        saga = two_steps(p)
        store = FlakyStore(failures=0, append_error=RuntimeError("disk on fire"))
        with caplog.at_level(logging.ERROR, logger="meshkit.saga"):
            async with SagaOrchestrator(store=store, sagas=[saga]) as orch:
                saga_id = await orch.start(saga, {})
                store.failures = 1
                status = await orch.wait(saga_id)
        assert status.state is SagaState.RUNNING
        assert "left for recovery" in caplog.text
        async with SagaOrchestrator(store=store, sagas=[saga]) as later:
            assert (await later.wait(saga_id)).state is SagaState.COMPLETED

    async def test_resume_fails_fast(self, clock: FakeClock) -> None:
        """resume() reports a store failure; the saga stays stuck and can be resumed again."""
        p = Participant()
        p.fail["pay"] = 1
        p.fail_undo["create"] = -1
        saga = Saga(name="order", steps=two_steps(p).steps, stuck_after=1)
        store = FlakyStore(failures=0)
        async with SagaOrchestrator(store=store, sagas=[saga], clock=clock) as orch:
            saga_id = await orch.start(saga, {})
            await clock.advance_stepwise(5)
            assert (await orch.wait(saga_id)).state is SagaState.STUCK
            store.failures = 1
            with pytest.raises(EventStoreUnavailableError):
                await orch.resume(saga_id)
            p.fail_undo["create"] = 0
            await orch.resume(saga_id)
            assert (await orch.wait(saga_id)).state is SagaState.COMPENSATED


class TestOddLogs:
    async def test_unknown_definition_is_not_recovered(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A saga of a type this orchestrator does not know is logged and left alone."""
        store = MemoryEventStore()
        await orphan(store, "alien", name="gone")
        with caplog.at_level(logging.ERROR, logger="meshkit.saga"):
            async with SagaOrchestrator(store=store, sagas=[]) as orch:
                status_error = None
                try:
                    await orch.wait("alien")
                except SagaStateError as exc:
                    status_error = exc
        assert status_error is not None
        assert "cannot be recovered" in caplog.text

    async def test_unknown_record_type(self) -> None:
        """A record type the machine does not know is reported, naming it."""
        store = MemoryEventStore()
        await orphan(store, "odd")
        weird = Event(stream_id="saga-odd", version=3, type="Weird", data={})
        await store.append("saga-odd", [weird], 2)
        async with SagaOrchestrator(store=store, sagas=[two_steps(Participant())]) as orch:
            with pytest.raises(SagaStateError, match="Weird"):
                await orch.status("odd")

    async def test_events_of_other_streams_are_skipped(self) -> None:
        """The scan ignores streams without the prefix, and sagas whose start it missed."""
        store = MemoryEventStore()
        other = Event(stream_id="orders-1", version=1, type="OrderPlaced", data={})
        await store.append("orders-1", [other], 0)
        mid = Event(stream_id="saga-mid", version=1, type="StepStarted", data={"step": "x"})
        await store.append("saga-mid", [mid], 0)
        async with SagaOrchestrator(store=store, sagas=[]) as orch:
            assert orch.saga_ids() == []


class TestLocalDrives:
    async def test_same_id_while_driving(self) -> None:
        """Starting an id this orchestrator is driving raises SagaAlreadyExistsError."""
        p = Participant()
        gate = anyio.Event()

        async def blocking(data: Any, context: StepContext) -> None:
            await gate.wait()

        saga = two_steps(p, blocking)
        async with SagaOrchestrator(store=MemoryEventStore(), sagas=[saga]) as orch:
            await orch.start(saga, {}, saga_id="busy")
            with pytest.raises(SagaAlreadyExistsError):
                await orch.start(saga, {}, saga_id="busy")
            assert orch.statistics().driving == 1
            gate.set()
            assert (await orch.wait("busy")).state is SagaState.COMPLETED
