"""The orchestrator on every store: memory, SQLite and PostgreSQL behave the same."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from meshkit import SagaOwnershipLostError
from meshkit.saga import (
    Parallel,
    Saga,
    SagaOrchestrator,
    SagaState,
    SagaTransition,
    Step,
    StepContext,
    StepKind,
)
from saga_helpers import Participant, StoreFactory

pytestmark = pytest.mark.anyio


def order_saga(p: Participant) -> Saga:
    return Saga(
        name="order",
        steps=[
            Step(name="create", action=p.act, compensation=p.undo),
            Parallel(
                (
                    Step(name="reserve", action=p.act, compensation=p.undo),
                    Step(name="hold", action=p.act, compensation=p.undo),
                )
            ),
            Step(name="pay", action=p.act, kind=StepKind.PIVOT),
            Step(name="confirm", action=p.act, kind=StepKind.RETRIABLE),
        ],
    )


class TestBackends:
    async def test_complete_and_compensate(self, make_store: StoreFactory) -> None:
        """A saga completes, another is compensated; status and listing agree with the log."""
        p = Participant()
        saga = order_saga(p)
        store = await make_store()
        async with SagaOrchestrator(store=store, sagas=[saga]) as orch:
            done = await orch.run(saga, {"order": 1}, saga_id="ok")
            p.fail["pay"] = 1
            undone = await orch.run(saga, {"order": 2}, saga_id="ko")
            read = await orch.status("ko")
        assert done.state is SagaState.COMPLETED
        assert undone.state is SagaState.COMPENSATED
        assert read.state is SagaState.COMPENSATED
        assert [h.type for h in read.history] == [h.type for h in undone.history]
        assert p.did("undo")[0] in {"reserve", "hold"}
        assert p.did("undo")[-1] == "create"
        assert p.undone == 3
        async with SagaOrchestrator(store=await make_store(), sagas=[saga]) as later:
            assert later.saga_ids(SagaState.COMPLETED) == ["ok"]
            assert later.saga_ids(SagaState.COMPENSATED) == ["ko"]
            assert later.statistics().completed == 1

    async def test_recovery_and_takeover(self, make_store: StoreFactory) -> None:
        """A second orchestrator takes a standing saga over; the first stops cleanly."""
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
        async with SagaOrchestrator(store=await make_store(), sagas=[saga]) as first:
            saga_id = await first.start(saga, {})
            await entered.wait()
            claimed = anyio.Event()

            def on_claim(transition: SagaTransition) -> None:
                if transition.type == "SagaClaimed":
                    claimed.set()

            store = await make_store()
            async with SagaOrchestrator(store=store, sagas=[saga], listeners=[on_claim]) as second:
                with anyio.fail_after(60):
                    await claimed.wait()
                gate.set()
                status = await second.wait(saga_id)
                with pytest.raises(SagaOwnershipLostError):
                    await first.wait(saga_id)
        assert status.state is SagaState.COMPLETED
        assert p.applied == 2
