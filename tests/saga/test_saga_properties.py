"""Hypothesis drives the real orchestrator: random failures, timeouts, flaky compensations."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit.eventsourcing import MemoryEventStore
from meshkit.saga import (
    Parallel,
    Saga,
    SagaOrchestrator,
    SagaState,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
)
from meshkit.testing import FakeClock

BEHAVIOURS = st.sampled_from(["ok", "ok", "fail", "timeout", "effect-then-timeout"])
UNDOABLE = ("create", "reserve", "hold", "pay")  # in definition order


@attrs.frozen
class Fixed:
    """A fixed one-second backoff."""

    def delay(self, retry: int) -> float:
        return 1.0


class World:
    """Participants behaving as hypothesis chose, with a ledger keyed by idempotency key."""

    def __init__(self, clock: FakeClock, plan: dict[str, str], flaky: int) -> None:
        self.clock = clock
        self.plan = plan
        self.flaky = flaky
        self.effects: dict[str, int] = {}
        self.undone: list[str] = []

    async def act(self, data: Any, context: StepContext) -> None:
        if context.step == "confirm":
            if context.attempt <= 2:  # a retriable step that fails, then succeeds
                msg = "confirm unavailable"
                raise RuntimeError(msg)
            behaviour = "ok"
        else:
            behaviour = self.plan[context.step]
        if behaviour == "fail":
            msg = "refused"
            raise RuntimeError(msg)
        if behaviour != "timeout":
            key = context.idempotency_key
            self.effects[key] = self.effects.get(key, 0) + 1
        if behaviour in {"timeout", "effect-then-timeout"}:
            await self.clock.sleep(100)  # the step's 10 s timeout fires first

    async def undo(self, data: Any, context: StepContext) -> None:
        if context.attempt <= self.flaky:
            msg = "undo unavailable"
            raise RuntimeError(msg)
        if self.effects.pop(context.idempotency_key, 0):
            self.undone.append(context.step)


def saga_of(world: World) -> Saga:
    def step(name: str, **options: Any) -> Step:
        return Step(name=name, action=world.act, timeout=10, backoff=Fixed(), **options)

    return Saga(
        name="order",
        steps=[
            step("create", compensation=world.undo),
            Parallel(
                (step("reserve", compensation=world.undo), step("hold", compensation=world.undo))
            ),
            step("pay", compensation=world.undo, kind=StepKind.PIVOT),
            step("confirm", kind=StepKind.RETRIABLE),
        ],
    )


def run(world: World) -> SagaStatus:
    saga = saga_of(world)

    async def main() -> SagaStatus:
        async with SagaOrchestrator(
            store=MemoryEventStore(), sagas=[saga], clock=world.clock
        ) as orch:
            saga_id = await orch.start(saga, {})
            async with anyio.create_task_group() as tasks:

                async def tick() -> None:
                    while True:
                        await world.clock.advance_stepwise(5)

                tasks.start_soon(tick)
                status = await orch.wait(saga_id)
                tasks.cancel_scope.cancel()
            return status

    return anyio.run(main)


class TestOrchestratorProperties:
    @settings(max_examples=60)
    @given(
        plan=st.fixed_dictionaries(dict.fromkeys(UNDOABLE, BEHAVIOURS)),
        flaky=st.integers(0, 3),
    )
    def test_effects_are_kept_or_undone(self, plan: dict[str, str], flaky: int) -> None:
        """All steps ok: completed, every effect once. Otherwise: compensated, every effect
        undone once, last first; the confirm step's failures never turn the saga around."""
        world = World(FakeClock(), plan, flaky)
        status = run(world)
        if all(plan[name] == "ok" for name in UNDOABLE):
            assert status.state is SagaState.COMPLETED
            assert sorted(world.effects) == sorted(
                f"{status.saga_id}:{n}" for n in (*UNDOABLE, "confirm")
            )
            assert set(world.effects.values()) == {1}
            assert world.undone == []
            return
        assert status.state is SagaState.COMPENSATED
        assert world.effects == {}  # every effect of the compensated saga was undone
        positions = [UNDOABLE.index(step) for step in world.undone]
        assert positions == sorted(positions, reverse=True)
        assert len(set(world.undone)) == len(world.undone)
        assert "confirm" not in {s.name for s in status.steps if s.calls}
