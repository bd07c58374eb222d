"""The orchestrator on the memory store with a fake clock: every behaviour of the shell."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from meshkit import (
    ConfigurationError,
    EventStoreUnavailableError,
    SagaAlreadyExistsError,
    SagaNotFoundError,
    SagaOwnershipLostError,
    SagaStateError,
)
from meshkit.eventsourcing import Event, MemoryEventStore
from meshkit.resilience import Retry
from meshkit.saga import (
    Parallel,
    Saga,
    SagaOrchestrator,
    SagaState,
    SagaTransition,
    Step,
    StepContext,
    StepKind,
    StepState,
)
from saga_helpers import FlakyStore, Participant

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


@attrs.frozen
class NoWait:
    """A backoff that never waits."""

    def delay(self, retry: int) -> float:
        return 0.0


@attrs.frozen
class Fixed:
    """A backoff of one fixed wait."""

    seconds: float

    def delay(self, retry: int) -> float:
        return self.seconds


async def async_listener(transition: SagaTransition) -> None:
    """A listener that would never be awaited (refused)."""


def order_saga(p: Participant, **step_options: Any) -> Saga:
    """Create order -> reserve -> pay (pivot) -> confirm (retriable)."""
    return Saga(
        name="order",
        steps=[
            Step(name="create", action=p.act, compensation=p.undo, **step_options),
            Step(name="reserve", action=p.act, compensation=p.undo, **step_options),
            Step(name="pay", action=p.act, kind=StepKind.PIVOT, **step_options),
            Step(name="confirm", action=p.act, kind=StepKind.RETRIABLE, **step_options),
        ],
        stuck_after=30,
    )


def orchestrator(store: Any, sagas: Sequence[Saga], **kwargs: Any) -> SagaOrchestrator:
    return SagaOrchestrator(store=store, sagas=sagas, **kwargs)


class TestHappyPath:
    async def test_completes_and_merges_data(self) -> None:
        """Every step runs once, in order, with its key; updates are merged into the data."""
        p = Participant()
        saga = order_saga(p)
        store = MemoryEventStore()
        async with orchestrator(store, [saga]) as orch:
            status = await orch.run(saga, {"order": 7}, saga_id="o-1")
        assert status.state is SagaState.COMPLETED
        assert p.did("do") == ["create", "reserve", "pay", "confirm"]
        assert status.data == {"order": 7, **{s: f"o-1:{s}" for s in p.did("do")}}
        assert [s.state for s in status.steps] == [StepState.SUCCEEDED] * 4
        # four steps: the start and each outcome carry the next claim, so five appends
        assert await store.stream_version("saga-o-1") == 10
        assert [h.type for h in status.history][:3] == [
            "SagaStarted",
            "StepStarted",
            "StepSucceeded",
        ]

    async def test_steps_cannot_change_the_data_behind_the_log(self) -> None:
        """A step mutating nested data in place changes nothing: later steps see the log's."""
        seen: list[Any] = []

        async def add(data: Any, context: StepContext) -> dict[str, Any]:
            data["items"].append("sneaky")
            return {}

        async def look(data: Any, context: StepContext) -> None:
            seen.append(data["items"])

        saga = Saga(
            name="s",
            steps=[
                Step(name="mutate", action=add, compensation=look),
                Step(name="look", action=look, kind=StepKind.PIVOT),
            ],
        )
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {"items": [1]})
        assert seen == [[1]]
        assert status.data == {"items": [1]}

    async def test_statistics_and_listing(self) -> None:
        """Finished sagas are counted and listed by state."""
        p = Participant()
        saga = order_saga(p)
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            await orch.run(saga, {}, saga_id="ok")
            p.fail["pay"] = 1
            await orch.run(saga, {}, saga_id="ko")
            stats = orch.statistics()
            assert orch.saga_ids(SagaState.COMPLETED) == ["ok"]
            assert orch.saga_ids(SagaState.COMPENSATED) == ["ko"]
            assert orch.saga_ids() == ["ok", "ko"]
        assert (stats.completed, stats.compensated, stats.running, stats.stuck) == (1, 1, 0, 0)
        assert stats.oldest_unfinished_age is None

    async def test_context(self) -> None:
        """The context carries the saga id, the step, the key and the attempt number."""
        seen: list[StepContext] = []

        async def action(data: Any, context: StepContext) -> None:
            seen.append(context)
            if len(seen) < 3:
                raise RuntimeError("again")

        step = Step(
            name="only",
            action=action,
            kind=StepKind.PIVOT,
            retry=Retry(max_attempts=3, backoff=NoWait()),
        )
        saga = Saga(name="one", steps=[step])
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {}, saga_id="s")
        assert status.state is SagaState.COMPLETED
        assert [c.attempt for c in seen] == [1, 2, 3]
        assert {(c.saga_id, c.step, c.idempotency_key, c.compensating) for c in seen} == {
            ("s", "only", "s:only", False)
        }
        assert status.steps[0].calls == 3


class TestCompensation:
    async def test_pivot_failure_compensates_in_reverse(self) -> None:
        """A failing pivot turns the saga around: started steps are undone, last first."""
        p = Participant()
        p.fail["pay"] = 1
        saga = order_saga(p)
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert status.state is SagaState.COMPENSATED
        assert p.did("undo") == ["reserve", "create"]
        assert p.applied == p.undone == 2
        assert status.steps[2].state is StepState.FAILED
        assert "pay refused" in (status.steps[2].error or "")

    async def test_failed_compensatable_step_is_compensated_too(self) -> None:
        """The failed step was started, so its compensation runs (a no-op if nothing happened)."""
        p = Participant()
        p.fail["reserve"] = 1
        saga = order_saga(p)
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert status.state is SagaState.COMPENSATED
        assert p.did("undo") == ["reserve", "create"]
        assert p.undone == 1  # only create had an effect

    async def test_retriable_step_retries_without_compensating(self) -> None:
        """A retriable step that fails is started again after its backoff; nothing is undone."""
        p = Participant()
        p.fail["confirm"] = 5
        saga = order_saga(p, backoff=NoWait())
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert status.state is SagaState.COMPLETED
        assert p.did("do").count("confirm") == 6
        assert p.did("undo") == []
        assert [c[2] for c in p.calls if c[1] == "confirm"] == [1, 2, 3, 4, 5, 6]

    async def test_compensation_retries_until_it_succeeds(self) -> None:
        """A failing compensation is called again after its backoff, then the saga ends."""
        p = Participant()
        p.fail["pay"] = 1
        p.fail_undo["create"] = 3
        saga = order_saga(p, backoff=NoWait())
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert status.state is SagaState.COMPENSATED
        assert p.did("undo") == ["reserve", "create", "create", "create", "create"]
        assert status.steps[0].compensation_calls == 4

    async def test_step_data_must_be_json(self) -> None:
        """An action returning non-JSON data fails its step, with an error naming the step."""

        async def bad(data: Any, context: StepContext) -> dict[str, Any]:
            return {"x": float("nan")}

        p = Participant()
        saga = Saga(
            name="bad",
            steps=[
                Step(name="ok", action=p.act, compensation=p.undo),
                Step(name="nan", action=bad, compensation=p.undo),
            ],
        )
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert status.state is SagaState.COMPENSATED
        assert "steps[nan].result" in (status.steps[1].error or "")

    async def test_timeout_fails_the_step(self, clock: FakeClock) -> None:
        """An action that overruns its timeout fails; it and the steps before are undone."""
        p = Participant()

        async def slow(data: Any, context: StepContext) -> None:
            await clock.sleep(100)

        saga = Saga(
            name="slow",
            steps=[
                Step(name="a", action=p.act, compensation=p.undo),
                Step(name="b", action=slow, compensation=p.undo, timeout=5),
            ],
        )
        async with orchestrator(MemoryEventStore(), [saga], clock=clock) as orch:
            saga_id = await orch.start(saga, {})
            await clock.advance_stepwise(5)
            status = await orch.wait(saga_id)
        assert status.state is SagaState.COMPENSATED
        assert p.did("undo") == ["b", "a"]
        assert "DeadlineExceededError" in (status.steps[1].error or "")


class TestParallel:
    async def test_failure_cancels_running_siblings(self) -> None:
        """One sibling fails: the one still running is cancelled, every started one undone."""
        p = Participant()
        p.fail["b"] = 1
        cancelled = anyio.Event()

        async def hang(data: Any, context: StepContext) -> None:
            try:
                await anyio.sleep_forever()
            finally:
                cancelled.set()

        saga = Saga(
            name="par",
            steps=[
                Step(name="a", action=p.act, compensation=p.undo),
                Parallel(
                    (
                        Step(name="c", action=p.act, compensation=p.undo),
                        Step(name="b", action=p.act, compensation=p.undo),
                        Step(name="h", action=hang, compensation=p.undo),
                    )
                ),
            ],
        )
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert cancelled.is_set()
        assert status.state is SagaState.COMPENSATED
        assert p.did("undo") == ["h", "b", "c", "a"]
        assert p.applied == p.undone == 2

    async def test_all_siblings_succeed(self) -> None:
        """A group whose steps all succeed merges every update and moves on."""
        p = Participant()
        saga = Saga(
            name="par",
            steps=[
                Parallel(tuple(Step(name=n, action=p.act, compensation=p.undo) for n in "xyz")),
                Step(name="last", action=p.act, kind=StepKind.PIVOT),
            ],
        )
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            status = await orch.run(saga, {})
        assert status.state is SagaState.COMPLETED
        assert set(status.data) == {"x", "y", "z", "last"}


class TestStuck:
    async def test_stuck_then_resumed(self, clock: FakeClock) -> None:
        """A compensation failing past stuck_after parks the saga STUCK until resumed."""
        p = Participant()
        p.fail["pay"] = 1
        p.fail_undo["create"] = -1
        transitions: list[SagaTransition] = []
        saga = order_saga(p, backoff=Fixed(10.0))
        async with orchestrator(
            MemoryEventStore(), [saga], clock=clock, listeners=[transitions.append]
        ) as orch:
            saga_id = await orch.start(saga, {})
            await clock.advance_stepwise(40)
            status = await orch.wait(saga_id)
            assert status.state is SagaState.STUCK
            assert status.stuck_step == "create"
            stats = orch.statistics()
            assert (stats.stuck, stats.driving) == (1, 0)
            assert stats.oldest_unfinished_age == 40
            assert orch.saga_ids(SagaState.STUCK) == [saga_id]
            assert transitions[-1].type == "SagaStuck"
            assert transitions[-1].state is SagaState.STUCK
            calls = p.did("undo").count("create")
            assert calls == 4  # at 0, 10, 20 and 30 s
            p.fail_undo["create"] = 0
            await orch.resume(saga_id)
            status = await orch.wait(saga_id)
        assert status.state is SagaState.COMPENSATED
        assert p.undone == 2
        assert [t.type for t in transitions].count("SagaResumed") == 1

    async def test_resume_refuses_a_saga_not_stuck(self) -> None:
        """Resuming a saga that is not stuck raises SagaStateError."""
        p = Participant()
        saga = order_saga(p)
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            await orch.run(saga, {}, saga_id="done")
            with pytest.raises(SagaStateError, match="completed"):
                await orch.resume("done")

    async def test_retriable_step_gets_stuck(self, clock: FakeClock) -> None:
        """A retriable step failing past stuck_after parks the saga without compensating."""
        p = Participant()
        p.fail["confirm"] = -1
        saga = order_saga(p, backoff=Fixed(10.0))
        async with orchestrator(MemoryEventStore(), [saga], clock=clock) as orch:
            saga_id = await orch.start(saga, {})
            await clock.advance_stepwise(40)
            status = await orch.wait(saga_id)
        assert status.state is SagaState.STUCK
        assert p.did("undo") == []


class TestBadInput:
    async def test_unknown_saga_id(self) -> None:
        """status() of an unknown id raises SagaNotFoundError; a bad id ConfigurationError."""
        async with orchestrator(MemoryEventStore(), []) as orch:
            with pytest.raises(SagaNotFoundError, match="nope"):
                await orch.status("nope")
            with pytest.raises(ConfigurationError, match="saga_id"):
                await orch.status("\0")

    async def test_start_checks(self) -> None:
        """Unregistered sagas, bad data and reused ids are refused at start."""
        p = Participant()
        saga = order_saga(p)
        other = Saga(name="other", steps=[Step(name="x", action=p.act, kind=StepKind.PIVOT)])
        async with orchestrator(MemoryEventStore(), [saga]) as orch:
            with pytest.raises(ConfigurationError, match="saga"):
                await orch.start(other, {})
            with pytest.raises(ConfigurationError, match="data"):
                await orch.start(saga, {"x": {1, 2}})
            await orch.run(saga, {}, saga_id="once")
            with pytest.raises(SagaAlreadyExistsError, match="once"):
                await orch.start(saga, {}, saga_id="once")

    async def test_not_entered(self) -> None:
        """Starting on an orchestrator that is not entered raises SagaStateError."""
        p = Participant()
        saga = order_saga(p)
        with pytest.raises(SagaStateError):
            await orchestrator(MemoryEventStore(), [saga]).start(saga, {})

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"sagas": 3},
            {"sagas": [3]},
            {"listeners": 3},
            {"listeners": [3]},
            {"listeners": [async_listener]},
            {"max_recovering": 0},
            {"store": object()},
        ],
    )
    async def test_bad_knobs(self, kwargs: dict[str, Any]) -> None:
        """Bad constructor arguments raise ConfigurationError naming the field."""
        values: dict[str, Any] = {"store": MemoryEventStore(), "sagas": [], **kwargs}
        with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
            SagaOrchestrator(**values)

    async def test_duplicate_saga_names(self) -> None:
        """Two definitions with one name are refused."""
        p = Participant()
        with pytest.raises(ConfigurationError, match="duplicate"):
            orchestrator(MemoryEventStore(), [order_saga(p), order_saga(p)])

    async def test_unknown_type_in_the_log(self) -> None:
        """A saga whose definition is not registered is reported, not recovered."""
        store = MemoryEventStore()
        p = Participant()
        saga = order_saga(p)
        started = Event(stream_id="saga-x", version=1, type="SagaStarted", data={"saga": "gone"})
        await store.append("saga-x", [started], 0)
        async with orchestrator(store, [saga]) as orch:
            with pytest.raises(SagaStateError, match="gone"):
                await orch.status("x")
            assert orch.saga_ids(SagaState.RUNNING) == ["x"]


class TestRecovery:
    async def test_recovers_after_the_orchestrator_stops(self) -> None:
        """A saga cut off mid-step is recovered: the step runs again with the same key."""
        p = Participant()
        gate = anyio.Event()
        entered = anyio.Event()

        async def blocking(data: Any, context: StepContext) -> dict[str, Any]:
            entered.set()
            if context.attempt == 1:
                await gate.wait()
            return await p.act(data, context)

        saga = Saga(
            name="order",
            steps=[
                Step(name="create", action=p.act, compensation=p.undo),
                Step(name="reserve", action=blocking, compensation=p.undo),
                Step(name="pay", action=p.act, kind=StepKind.PIVOT),
            ],
        )
        store = MemoryEventStore()
        async with orchestrator(store, [saga]) as first:
            saga_id = await first.start(saga, {})
            await entered.wait()
            assert first.statistics().running == 1
        async with orchestrator(store, [saga]) as second:
            assert second.statistics().running == 1
            status = await second.wait(saga_id)
        assert status.state is SagaState.COMPLETED
        assert status.steps[1].calls == 2  # the cut-off call counts
        assert [h.type for h in status.history].count("SagaClaimed") == 1
        assert p.applied == 3

    async def test_two_orchestrators_one_saga(self) -> None:
        """The orchestrator whose append conflicts stops; the other finishes the saga."""
        p = Participant()
        gate = anyio.Event()
        entered = anyio.Event()

        async def blocking(data: Any, context: StepContext) -> dict[str, Any]:
            entered.set()
            await gate.wait()
            return await p.act(data, context)

        saga = Saga(
            name="order",
            steps=[
                Step(name="create", action=blocking, compensation=p.undo),
                Step(name="pay", action=p.act, kind=StepKind.PIVOT),
            ],
        )
        store = MemoryEventStore()
        async with orchestrator(store, [saga]) as first:
            saga_id = await first.start(saga, {})
            await entered.wait()
            async with orchestrator(store, [saga]) as second:
                await anyio.wait_all_tasks_blocked()
                gate.set()
                status = await second.wait(saga_id)
                with pytest.raises(SagaOwnershipLostError, match=saga_id):
                    await first.wait(saga_id)
        assert status.state is SagaState.COMPLETED
        assert p.applied == 2
        assert sorted(p.did("do")) == ["create", "create", "pay"]  # create: at least once

    async def test_cancelled_compensation_is_recorded_and_no_new_one_starts(self) -> None:
        """A compensation cut off by shutdown is still logged; the next one is left to recovery."""
        p = Participant()
        p.fail["pay"] = 1
        saga = order_saga(p)
        store = MemoryEventStore()
        scope = anyio.CancelScope()

        async def undo_then_shut_down(data: Any, context: StepContext) -> None:
            scope.cancel()  # the orchestrator is leaving while this compensation runs
            await p.undo(data, context)

        cut = Saga(
            name="order",
            steps=[
                Step(name="create", action=p.act, compensation=p.undo),
                Step(name="reserve", action=p.act, compensation=undo_then_shut_down),
                Step(name="pay", action=p.act, kind=StepKind.PIVOT),
                Step(name="confirm", action=p.act, kind=StepKind.RETRIABLE),
            ],
            stuck_after=30,
        )
        with scope:
            async with orchestrator(store, [cut]) as first:
                saga_id = await first.start(cut, {})
                await anyio.sleep_forever()
        assert p.did("undo") == ["reserve"]  # create's compensation was not started
        async with orchestrator(store, [saga]) as second:
            status = await second.wait(saga_id)
        assert status.state is SagaState.COMPENSATED
        assert p.did("undo") == ["reserve", "create"]  # reserve compensated once, not twice

    async def test_a_saga_lost_then_recovered_again_is_waited_for(self, clock: FakeClock) -> None:
        """An orchestrator that lost a saga and later recovers it reports it, not the loss."""
        p = Participant()
        gates = [anyio.Event(), anyio.Event()]
        entered = [anyio.Event(), anyio.Event()]

        async def blocking(data: Any, context: StepContext) -> dict[str, Any]:
            if context.attempt <= len(gates):
                entered[context.attempt - 1].set()
                await gates[context.attempt - 1].wait()
            return await p.act(data, context)

        saga = Saga(
            name="order",
            steps=[
                Step(name="create", action=blocking, compensation=p.undo),
                Step(name="pay", action=p.act, kind=StepKind.PIVOT),
            ],
        )
        store = MemoryEventStore()
        async with orchestrator(store, [saga], clock=clock, recover_after=10) as first:
            saga_id = await first.start(saga, {})
            await entered[0].wait()
            async with orchestrator(store, [saga], clock=clock):
                await entered[1].wait()  # the second took the saga over
                gates[0].set()
                with pytest.raises(SagaOwnershipLostError):
                    await first.wait(saga_id)
            # the second left mid-step: the first sees the log stand still and takes it back
            for _ in range(3):
                await clock.advance_stepwise(10)
            status = await first.wait(saga_id)
        assert status.state is SagaState.COMPLETED


class TestObservers:
    async def test_listener_errors_are_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        """A listener that raises is logged; the saga goes on; every record is told."""
        p = Participant()
        saga = order_saga(p)
        told: list[str] = []

        def bad(transition: SagaTransition) -> None:
            told.append(transition.type)
            raise RuntimeError("listener bug")

        with caplog.at_level(logging.ERROR, logger="meshkit.saga"):
            async with orchestrator(MemoryEventStore(), [saga], listeners=[bad]) as orch:
                status = await orch.run(saga, {})
        assert status.state is SagaState.COMPLETED
        assert told == [h.type for h in status.history]
        assert "listener bug" in caplog.text

    async def test_store_outage_is_retried(self, clock: FakeClock) -> None:
        """Appends that fail on a store outage are retried after a backoff."""
        p = Participant()
        saga = order_saga(p)
        store = FlakyStore(failures=0)
        async with orchestrator(store, [saga], clock=clock, store_backoff=Fixed(1.0)) as orch:
            saga_id = await orch.start(saga, {})
            store.failures = 2
            await clock.advance_stepwise(5)
            status = await orch.wait(saga_id)
        assert status.state is SagaState.COMPLETED

    async def test_start_fails_fast_on_outage(self) -> None:
        """start() does not retry: the caller learns the saga was not started."""
        p = Participant()
        saga = order_saga(p)
        async with orchestrator(FlakyStore(), [saga]) as orch:
            with pytest.raises(EventStoreUnavailableError):
                await orch.start(saga, {})
