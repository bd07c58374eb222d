"""What the orchestrator reports: a saga's status and history, transitions, statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import attrs

from meshkit.saga._core import SagaState

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    from meshkit.saga._core import SagaMachine, StepState
    from meshkit.saga._plan import StepKind

__all__ = [
    "HistoryEntry",
    "SagaStatistics",
    "SagaStatus",
    "SagaTransition",
    "StepStatus",
    "summarize",
]


@final
@attrs.frozen(kw_only=True)
class StepStatus:
    """One step as the log tells it.

    Attributes:
        name: The step.
        kind: Its kind.
        state: Where it is.
        calls: Calls of its action the log knows of.
        compensation_calls: Calls of its compensation the log knows of.
        error: The last error recorded for it, if any.
    """

    name: str
    kind: StepKind
    state: StepState
    calls: int
    compensation_calls: int
    error: str | None


@final
@attrs.frozen(kw_only=True)
class HistoryEntry:
    """One record of a saga's log.

    Attributes:
        version: Its position in the saga's stream (1-based).
        type: The record type (`"StepSucceeded"`, ...).
        step: The step it is about, if any.
        timestamp: When it was appended (UTC, wall clock).
        data: Its payload.
    """

    version: int
    type: str
    step: str | None
    timestamp: dt.datetime
    data: Mapping[str, Any]


@final
@attrs.frozen(kw_only=True)
class SagaStatus:
    """A saga's status, read from its log.

    Attributes:
        saga_id: The saga.
        saga: Its definition's name.
        state: Where it is.
        data: Its current data.
        steps: Every step, in definition order.
        history: Every record of its log, in order.
        stuck_step: The step whose failures made it stuck, while it is.
    """

    saga_id: str
    saga: str
    state: SagaState
    data: Mapping[str, Any]
    steps: tuple[StepStatus, ...]
    history: tuple[HistoryEntry, ...]
    stuck_step: str | None

    @classmethod
    def of(cls, name: str, machine: SagaMachine, history: tuple[HistoryEntry, ...]) -> SagaStatus:
        """Build the status of the saga `machine` holds."""
        steps = tuple(
            StepStatus(
                name=step,
                kind=machine.plan.kinds[step],
                state=progress.state,
                calls=progress.calls,
                compensation_calls=progress.compensation_calls,
                error=progress.error,
            )
            for step, progress in machine.steps.items()
        )
        return cls(
            saga_id=machine.saga_id,
            saga=name,
            state=machine.state,
            data=dict(machine.data),
            steps=steps,
            history=history,
            stuck_step=machine.stuck_step,
        )


@final
@attrs.frozen(kw_only=True)
class SagaTransition:
    """What a listener is told, once per record this orchestrator appends.

    Attributes:
        saga_id: The saga.
        saga: Its definition's name.
        type: The record type (`"SagaStarted"`, `"StepFailed"`, `"SagaStuck"`, ...).
        step: The step the record is about, if any.
        state: The saga's state after the record.
        version: The record's version in the saga's stream.
    """

    saga_id: str
    saga: str
    type: str
    step: str | None
    state: SagaState
    version: int


@final
@attrs.frozen(kw_only=True)
class SagaStatistics:
    """Sagas by state, as this orchestrator knows them (its own and those in the log it read).

    Attributes:
        running: Sagas going forward.
        compensating: Sagas being compensated.
        completed: Sagas that completed.
        compensated: Sagas that were compensated.
        stuck: Sagas parked until an operator resumes them.
        driving: Sagas this orchestrator is driving right now.
        oldest_unfinished_age: Seconds since the oldest unfinished (running, compensating or
            stuck) saga started, or `None` when there is none.
    """

    running: int
    compensating: int
    completed: int
    compensated: int
    stuck: int
    driving: int
    oldest_unfinished_age: float | None


def summarize(state: SagaState | None, record_type: str, data: Mapping[str, Any]) -> SagaState:
    """Return a saga's state after a record, from the record alone (no definition needed).

    The state machine writes what this needs into the records (`compensate` on a failed step,
    `state` on a resume), so an orchestrator can list sagas of any type from the global log.
    """
    after = _SUMMARY.get(record_type)
    if after is not None:
        return after
    if record_type == "StepFailed" and data.get("compensate"):
        return SagaState.COMPENSATING
    if record_type == "SagaResumed":
        compensating = data.get("state") == SagaState.COMPENSATING.value
        return SagaState.COMPENSATING if compensating else SagaState.RUNNING
    return SagaState.RUNNING if state is None else state


_SUMMARY = {
    "SagaStarted": SagaState.RUNNING,
    "SagaCompleted": SagaState.COMPLETED,
    "SagaCompensated": SagaState.COMPENSATED,
    "SagaStuck": SagaState.STUCK,
}
