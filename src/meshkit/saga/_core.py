"""The saga state machine: pure, synchronous and free of I/O.

A `SagaMachine` folds the saga's log records into its state (`apply`) and says what to do
next (`next_commands`): run the steps of a group, compensate one step, or finish. Before a
command runs, the orchestrator appends the record that `claim` returns for it; that append
(with the stream's expected version) is what makes one orchestrator the saga's only driver.
Hypothesis drives this class directly; the async orchestrator only executes its commands.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar, final

import attrs

from meshkit._errors import SagaStateError
from meshkit.saga._plan import SagaPlan, StepKind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "Command",
    "Compensate",
    "Finish",
    "Record",
    "RecordType",
    "RunStep",
    "SagaMachine",
    "SagaState",
    "StepProgress",
    "StepState",
]


class SagaState(enum.Enum):
    """Where a saga is."""

    RUNNING = "running"
    """Going forward, step after step."""
    COMPENSATING = "compensating"
    """A step before the pivot failed: started steps are being compensated, last first."""
    COMPLETED = "completed"
    """Every step succeeded."""
    COMPENSATED = "compensated"
    """Every started step with a compensation was compensated."""
    STUCK = "stuck"
    """A compensation (or a retriable step) kept failing for `stuck_after` seconds: parked
    until an operator resumes it."""

    @property
    def finished(self) -> bool:
        """Whether the saga has ended (`COMPLETED` or `COMPENSATED`)."""
        return self in {SagaState.COMPLETED, SagaState.COMPENSATED}


class StepState(enum.Enum):
    """Where one step is."""

    PENDING = "pending"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


class RecordType(enum.StrEnum):
    """The types of the events in a saga's log."""

    STARTED = "SagaStarted"
    CLAIMED = "SagaClaimed"
    STEP_STARTED = "StepStarted"
    STEP_SUCCEEDED = "StepSucceeded"
    STEP_FAILED = "StepFailed"
    COMPENSATION_STARTED = "CompensationStarted"
    COMPENSATION_SUCCEEDED = "CompensationSucceeded"
    COMPENSATION_FAILED = "CompensationFailed"
    COMPLETED = "SagaCompleted"
    COMPENSATED = "SagaCompensated"
    STUCK = "SagaStuck"
    RESUMED = "SagaResumed"


@final
@attrs.frozen
class Record:
    """One entry of a saga's log (stored as an event of the same type).

    Attributes:
        type: What happened.
        data: Its JSON payload (`step` names the step, where there is one).
    """

    type: RecordType
    data: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def step(self) -> str | None:
        """The step the record is about, if any."""
        step: str | None = self.data.get("step")
        return step


@final
@attrs.frozen
class RunStep:
    """Run the action of `step`; `attempt` is the number of its first call in this run."""

    step: str
    attempt: int


@final
@attrs.frozen
class Compensate:
    """Run the compensation of `step`; `attempt` is the number of this call."""

    step: str
    attempt: int


@final
@attrs.frozen
class Finish:
    """End the saga in `state` (`COMPLETED` or `COMPENSATED`)."""

    state: SagaState


Command = RunStep | Compensate | Finish


@attrs.define
class StepProgress:
    """What the log says about one step.

    Attributes:
        state: Its state.
        calls: Calls of its action the log knows of (a started run without outcome counts 1).
        compensation_calls: Calls of its compensation the log knows of.
        error: The last error recorded for it.
        in_flight: A call was started and its outcome is not recorded (yet, or ever: the
            orchestrator that made it may have died).
    """

    state: StepState = StepState.PENDING
    calls: int = 0
    compensation_calls: int = 0
    error: str | None = None
    in_flight: bool = False


@final
@attrs.define(eq=False)
class SagaMachine:
    """A saga's state, folded from its log, and the decision of what to do next.

    Attributes:
        saga_id: The saga's id.
        plan: The saga's shape.
        state: Its state.
        data: Its data: the start data with every succeeded step's updates merged in order.
        steps: Each step's progress.
        version: How many records have been applied (the log stream's version).
        stuck_step: The step that made the saga stuck, while it is.
    """

    saga_id: str
    plan: SagaPlan
    state: SagaState = SagaState.RUNNING
    data: dict[str, Any] = attrs.field(factory=dict)
    steps: dict[str, StepProgress] = attrs.field(init=False)
    version: int = 0
    stuck_step: str | None = None
    _compensating: bool = attrs.field(init=False, default=False)

    @steps.default
    def _make_steps(self) -> dict[str, StepProgress]:
        return {name: StepProgress() for name in self.plan.order}

    # ------------------------------------------------------------------ fold

    def apply(self, record: Record) -> None:
        """Fold `record` into the state.

        Raises:
            SagaStateError: If the record names a step the plan does not have, or comes after
                the saga finished (a log that does not fit the definition).
        """
        if self.state.finished:
            raise SagaStateError(self.saga_id, self.state.value, f"apply {record.type}")
        handler = self._HANDLERS[record.type]
        handler(self, record)
        self.version += 1

    def _step(self, record: Record) -> StepProgress:
        name = record.step
        progress = self.steps.get(name) if isinstance(name, str) else None
        if progress is None:
            raise SagaStateError(self.saga_id, self.state.value, f"apply {record.type} to {name!r}")
        return progress

    def _on_started(self, record: Record) -> None:
        self.data = dict(record.data.get("data", {}))

    def _on_claimed(self, record: Record) -> None:
        pass

    def _on_step_started(self, record: Record) -> None:
        progress = self._step(record)
        if progress.in_flight:  # the previous run ended without an outcome
            progress.calls += 1
        progress.state = StepState.STARTED
        progress.in_flight = True

    def _on_step_succeeded(self, record: Record) -> None:
        progress = self._step(record)
        progress.state = StepState.SUCCEEDED
        progress.in_flight = False
        progress.calls += int(record.data.get("attempts", 1))
        self.data.update(record.data.get("result", {}))

    def _on_step_failed(self, record: Record) -> None:
        progress = self._step(record)
        progress.state = StepState.FAILED
        progress.in_flight = False
        progress.calls += int(record.data.get("attempts", 1))
        progress.error = str(record.data.get("error", ""))
        if self.plan.kinds[record.data["step"]] is not StepKind.RETRIABLE:
            self._compensating = True
            self.state = SagaState.COMPENSATING

    def _on_compensation_started(self, record: Record) -> None:
        progress = self._step(record)
        if progress.in_flight:  # the previous call (of the action, or of this) has no outcome
            if progress.state is StepState.COMPENSATING:
                progress.compensation_calls += 1
            else:
                progress.calls += 1
        progress.state = StepState.COMPENSATING
        progress.in_flight = True

    def _on_compensation_succeeded(self, record: Record) -> None:
        progress = self._step(record)
        progress.state = StepState.COMPENSATED
        progress.in_flight = False
        progress.compensation_calls += 1

    def _on_compensation_failed(self, record: Record) -> None:
        progress = self._step(record)
        progress.in_flight = False
        progress.compensation_calls += 1
        progress.error = str(record.data.get("error", ""))

    def _on_completed(self, _record: Record) -> None:
        self.state = SagaState.COMPLETED

    def _on_compensated(self, _record: Record) -> None:
        self.state = SagaState.COMPENSATED

    def _on_stuck(self, record: Record) -> None:
        self._step(record)
        self.state = SagaState.STUCK
        self.stuck_step = record.step

    def _on_resumed(self, _record: Record) -> None:
        self.state = SagaState.COMPENSATING if self._compensating else SagaState.RUNNING
        self.stuck_step = None

    # ------------------------------------------------------------------ decide

    def next_commands(self) -> tuple[Command, ...]:
        """Return what to do next: nothing, a group to run, one compensation, or the end.

        Nothing is returned for a finished or stuck saga. It is called only when no command is
        in flight, so a step still `STARTED` is one whose earlier run ended without an outcome
        (it runs again).
        """
        if self.state is SagaState.RUNNING:
            return self._forward()
        if self.state is SagaState.COMPENSATING:
            return self._backward()
        return ()

    def _forward(self) -> tuple[Command, ...]:
        for group in self.plan.groups:
            todo = [name for name in group if self.steps[name].state is not StepState.SUCCEEDED]
            if todo:
                return tuple(RunStep(name, self._next_call(name)) for name in todo)
        return (Finish(SagaState.COMPLETED),)

    def _backward(self) -> tuple[Command, ...]:
        for name in reversed(self.plan.order):
            progress = self.steps[name]
            undo = progress.state not in {StepState.PENDING, StepState.COMPENSATED}
            if undo and name in self.plan.compensated:
                unknown = progress.in_flight and progress.state is StepState.COMPENSATING
                return (Compensate(name, progress.compensation_calls + unknown + 1),)
        return (Finish(SagaState.COMPENSATED),)

    def _next_call(self, name: str) -> int:
        progress = self.steps[name]
        return progress.calls + progress.in_flight + 1

    def claim(self, command: Command) -> Record:
        """Return the record to append (durably, first) before `command` is executed."""
        if isinstance(command, RunStep):
            return Record(RecordType.STEP_STARTED, {"step": command.step})
        if isinstance(command, Compensate):
            return Record(RecordType.COMPENSATION_STARTED, {"step": command.step})
        kind = (
            RecordType.COMPLETED if command.state is SagaState.COMPLETED else RecordType.COMPENSATED
        )
        return Record(kind)

    @property
    def compensating(self) -> bool:
        """Whether the saga has turned around (it stays so while stuck)."""
        return self._compensating

    def is_persistent(self, step: str) -> bool:
        """Whether failures of `step`'s current operation are retried until it succeeds.

        That is a compensation, or a retriable step's action; such failures may make the saga
        stuck.
        """
        return self._compensating or self.plan.kinds[step] is StepKind.RETRIABLE

    def would_compensate(self, step: str) -> bool:
        """Whether a failure of `step`'s action turns the saga around."""
        return self.plan.kinds[step] is not StepKind.RETRIABLE

    _HANDLERS: ClassVar[dict[RecordType, Callable[[SagaMachine, Record], None]]] = {
        RecordType.STARTED: _on_started,
        RecordType.CLAIMED: _on_claimed,
        RecordType.STEP_STARTED: _on_step_started,
        RecordType.STEP_SUCCEEDED: _on_step_succeeded,
        RecordType.STEP_FAILED: _on_step_failed,
        RecordType.COMPENSATION_STARTED: _on_compensation_started,
        RecordType.COMPENSATION_SUCCEEDED: _on_compensation_succeeded,
        RecordType.COMPENSATION_FAILED: _on_compensation_failed,
        RecordType.COMPLETED: _on_completed,
        RecordType.COMPENSATED: _on_compensated,
        RecordType.STUCK: _on_stuck,
        RecordType.RESUMED: _on_resumed,
    }
