"""Calling participants: one step's action (with its Retry and timeout) or compensation.

Each call's outcome becomes the record the state machine folds next; an exception raised by
a participant is recorded, never swallowed silently, and cancellation always propagates.
"""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import attrs

from meshkit.resilience import Timeout
from meshkit.saga._core import Compensate, Record, RecordType, RunStep, SagaMachine
from meshkit.saga._definition import Step, StepContext, idempotency_key
from meshkit.saga._json import describe, json_mapping

if TYPE_CHECKING:
    from collections.abc import Mapping

    from meshkit._clock import Clock

__all__ = ["StepRunner"]


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    # Deep: a participant that changed nested data in place would otherwise change what
    # later steps see in this run, but not in a run recovered from the log.
    return copy.deepcopy(data)


@final
@attrs.define(eq=False)
class StepRunner:
    """Runs actions and compensations for one orchestrator (it caches each step's Timeout)."""

    clock: Clock
    _timeouts: dict[tuple[str, str], Timeout] = attrs.field(init=False, factory=dict)

    def _timeout(self, saga: str, step: Step) -> Timeout | None:
        if step.timeout is None:
            return None
        key = (saga, step.name)
        timeout = self._timeouts.get(key)
        if timeout is None:
            what = f"saga step {step.name!r}"
            timeout = self._timeouts[key] = Timeout(step.timeout, clock=self.clock, what=what)
        return timeout

    async def run_group(
        self, saga: str, steps: Mapping[str, Step], machine: SagaMachine, group: list[RunStep]
    ) -> list[Record]:
        """Run a group's actions at once.

        On a failure that turns the saga around, the siblings still running are cancelled
        (they stay started, so they will be compensated).
        """
        if len(group) == 1:  # the common case needs no task group
            return [await self.run_action(saga, steps[group[0].step], machine, group[0])]
        outcomes: dict[str, Record] = {}

        async def sibling(command: RunStep, tasks: anyio.abc.TaskGroup) -> None:
            record = await self.run_action(saga, steps[command.step], machine, command)
            outcomes[command.step] = record
            if record.type is RecordType.STEP_FAILED and record.data["compensate"]:
                tasks.cancel_scope.cancel()

        async with anyio.create_task_group() as tasks:
            for command in group:
                tasks.start_soon(sibling, command, tasks)
        return [outcomes[c.step] for c in group if c.step in outcomes]

    async def run_action(
        self, saga: str, step: Step, machine: SagaMachine, command: RunStep
    ) -> Record:
        """Call the step's action through its Retry; return `StepSucceeded` or `StepFailed`."""
        calls = itertools.count(command.attempt)
        timeout = self._timeout(saga, step)
        data = machine.data
        key = idempotency_key(machine.saga_id, step.name)

        async def attempt() -> object:
            context = StepContext(
                saga_id=machine.saga_id, step=step.name, idempotency_key=key, attempt=next(calls)
            )
            if timeout is None:
                return await step.action(_copy(data), context)
            return await timeout.call(step.action, _copy(data), context)

        try:
            result = await step.retry.call(attempt)
            updates = {} if result is None else json_mapping(result, f"steps[{step.name}].result")
        except Exception as exc:  # noqa: BLE001 - recorded in the log, and decides the saga
            attempts = next(calls) - command.attempt
            return Record(
                RecordType.STEP_FAILED,
                {
                    "step": step.name,
                    "error": describe(exc),
                    "attempts": attempts,
                    "compensate": machine.would_compensate(step.name),
                },
            )
        attempts = next(calls) - command.attempt
        return Record(
            RecordType.STEP_SUCCEEDED, {"step": step.name, "result": updates, "attempts": attempts}
        )

    async def compensate(
        self, saga: str, step: Step, machine: SagaMachine, command: Compensate
    ) -> Record:
        """Call the step's compensation once, shielded from cancellation once started.

        Its own timeout still applies; a cancelled caller starts no compensation. Returns
        `CompensationSucceeded` or `CompensationFailed`.
        """
        compensation: Any = step.compensation
        context = StepContext(
            saga_id=machine.saga_id,
            step=step.name,
            idempotency_key=idempotency_key(machine.saga_id, step.name),
            attempt=command.attempt,
            compensating=True,
        )
        timeout = self._timeout(saga, step)
        # The shield below would hide a pending cancellation: a leaving orchestrator must
        # not start another compensation (recovery runs it).
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            with anyio.CancelScope(shield=True):
                if timeout is None:
                    await compensation(_copy(machine.data), context)
                else:
                    await timeout.call(compensation, _copy(machine.data), context)
        except Exception as exc:  # noqa: BLE001 - recorded, then retried after a backoff
            data = {"step": step.name, "error": describe(exc), "attempt": command.attempt}
            return Record(RecordType.COMPENSATION_FAILED, data)
        return Record(RecordType.COMPENSATION_SUCCEEDED, {"step": step.name})
