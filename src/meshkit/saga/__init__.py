"""Sagas: typed steps, a durable log on an event store, crash recovery, sure compensation."""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.saga._core import (
    Compensate,
    Finish,
    Record,
    RecordType,
    RunStep,
    SagaMachine,
    SagaState,
    StepProgress,
    StepState,
)
from meshkit.saga._definition import Parallel, Saga, Step, StepContext
from meshkit.saga._orchestrator import SagaOrchestrator
from meshkit.saga._plan import SagaPlan, StepKind
from meshkit.saga._status import (
    HistoryEntry,
    SagaStatistics,
    SagaStatus,
    SagaTransition,
    StepStatus,
)

__all__ = [
    "Compensate",
    "Finish",
    "HistoryEntry",
    "Parallel",
    "Record",
    "RecordType",
    "RunStep",
    "Saga",
    "SagaMachine",
    "SagaOrchestrator",
    "SagaPlan",
    "SagaState",
    "SagaStatistics",
    "SagaStatus",
    "SagaTransition",
    "Step",
    "StepContext",
    "StepKind",
    "StepProgress",
    "StepState",
    "StepStatus",
]

_publish(__name__, globals())
