"""Shared helpers for the saga tests (tests/saga): participants, flaky stores, plans, and a
pure simulator of the orchestrator's loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from meshkit import EventStoreUnavailableError
from meshkit.eventsourcing import Event, EventStore, MemoryEventStore, Snapshot
from meshkit.saga import (
    Compensate,
    Finish,
    Record,
    RecordType,
    RunStep,
    SagaMachine,
    SagaPlan,
    StepContext,
    StepKind,
)

StoreFactory = Callable[[], Awaitable[EventStore]]

Oracle = Callable[[str, str, int], bool]
"""`oracle(operation, step, call)` says whether that call succeeds ("do" or "undo")."""


def plan_of(groups: list[list[tuple[str, StepKind]]], compensated: set[str]) -> SagaPlan:
    """Build a plan from groups of (name, kind)."""
    return SagaPlan.build(
        groups=tuple(tuple(name for name, _ in group) for group in groups),
        kinds={name: kind for group in groups for name, kind in group},
        compensated=compensated,
    )


@st.composite
def plans(draw: st.DrawFn) -> SagaPlan:
    """Random valid plans: compensatable groups, maybe a pivot, retriable groups."""
    groups: list[list[tuple[str, StepKind]]] = []
    counter = 0
    for kind, most in ((StepKind.COMPENSATABLE, 4), (StepKind.RETRIABLE, 3)):
        for _ in range(draw(st.integers(0, most))):
            size = draw(st.integers(1, 3))
            groups.append([(f"s{counter + i}", kind) for i in range(size)])
            counter += size
        if kind is StepKind.COMPENSATABLE and draw(st.booleans()):
            groups.append([(f"s{counter}", StepKind.PIVOT)])
            counter += 1
    if not groups:
        groups.append([("only", StepKind.PIVOT)])
    kinds = {name: kind for group in groups for name, kind in group}
    compensated = {name for name, kind in kinds.items() if kind is StepKind.COMPENSATABLE}
    pivots = [name for name, kind in kinds.items() if kind is StepKind.PIVOT]
    pivot_undo: bool = draw(st.booleans())
    if pivots and pivot_undo:
        compensated.add(pivots[0])
    return plan_of(groups, compensated)


def replay(plan: SagaPlan, log: list[Record]) -> SagaMachine:
    """Return a fresh machine with `log` applied (what a recovering orchestrator builds)."""
    machine = SagaMachine("saga-1", plan)
    for record in log:
        machine.apply(record)
    return machine


def outcome(machine: SagaMachine, command: RunStep | Compensate, ok: bool) -> Record:
    """Return the record the orchestrator writes for `command`'s outcome."""
    step = command.step
    if isinstance(command, Compensate):
        kind = RecordType.COMPENSATION_SUCCEEDED if ok else RecordType.COMPENSATION_FAILED
        return Record(kind, {"step": step, "error": "" if ok else "boom"})
    if ok:
        return Record(RecordType.STEP_SUCCEEDED, {"step": step, "result": {step: 1}, "attempts": 1})
    return Record(
        RecordType.STEP_FAILED,
        {
            "step": step,
            "error": "boom",
            "attempts": 1,
            "compensate": machine.would_compensate(step),
        },
    )


def simulate(
    plan: SagaPlan, oracle: Oracle, crash: Callable[[], bool], limit: int = 500
) -> list[Record]:
    """Drive a saga as the orchestrator does, crashing (replaying the log) when told to.

    Returns the log. A failure that turns the saga around drops the outcomes of the siblings
    after it, as cancelling them does.
    """
    log: list[Record] = []
    machine = SagaMachine("saga-1", plan)

    def commit(records: list[Record]) -> None:
        for record in records:
            machine.apply(record)
            log.append(record)

    commit([Record(RecordType.STARTED, {"saga": "s", "data": {"start": True}})])
    calls: dict[tuple[str, str], int] = {}
    for _ in range(limit):
        commands = machine.next_commands()
        if not commands:
            break
        commit([machine.claim(c) for c in commands])
        if isinstance(commands[0], Finish):
            break
        outcomes: list[Record] = []
        for command in commands:
            assert not isinstance(command, Finish)
            if crash():
                outcomes = []
                machine = replay(plan, log)
                break
            operation = "undo" if isinstance(command, Compensate) else "do"
            key = (operation, command.step)
            calls[key] = calls.get(key, 0) + 1
            record = outcome(machine, command, oracle(operation, command.step, calls[key]))
            outcomes.append(record)
            if record.type is RecordType.STEP_FAILED and record.data["compensate"]:
                break  # the siblings still running are cancelled: no outcome for them
        commit(outcomes)
    return log


class Participant:
    """A participant keeping a ledger keyed by idempotency key, with injectable failures.

    `fail[step]` is how many more calls of the action fail; `fail_undo[step]` the same for
    the compensation (-1: always).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.ledger: dict[str, str] = {}
        self.fail: dict[str, int] = {}
        self.fail_undo: dict[str, int] = {}
        self.applied = 0
        self.undone = 0

    def _should_fail(self, table: dict[str, int], step: str) -> bool:
        left = table.get(step, 0)
        if left == 0:
            return False
        if left > 0:
            table[step] = left - 1
        return True

    async def act(self, data: Any, context: StepContext) -> dict[str, Any]:
        self.calls.append(("do", context.step, context.attempt))
        if self._should_fail(self.fail, context.step):
            msg = f"{context.step} refused"
            raise RuntimeError(msg)
        if context.idempotency_key not in self.ledger:
            self.ledger[context.idempotency_key] = "done"
            self.applied += 1
        return {context.step: context.idempotency_key}

    async def undo(self, data: Any, context: StepContext) -> None:
        self.calls.append(("undo", context.step, context.attempt))
        assert context.compensating
        if self._should_fail(self.fail_undo, context.step):
            msg = f"{context.step} undo refused"
            raise RuntimeError(msg)
        if self.ledger.get(context.idempotency_key) == "done":
            self.undone += 1
        self.ledger[context.idempotency_key] = "undone"  # a tombstone: a late action is refused

    def did(self, operation: str) -> list[str]:
        return [step for op, step, _ in self.calls if op == operation]


class FlakyStore:
    """A memory store whose appends (and reads of the global log) fail on demand.

    `failures` appends fail first with `EventStoreUnavailableError` (or `append_error`);
    `read_failures` calls of `read_all` fail the same way.
    """

    def __init__(self, failures: int = 2, append_error: Exception | None = None) -> None:
        self.failures = failures
        self.read_failures = 0
        self.append_error = append_error or EventStoreUnavailableError("flaky", "append", "down")
        self.inner = MemoryEventStore()

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        if self.failures:
            self.failures -= 1
            raise self.append_error
        return await self.inner.append(stream_id, events, expected_version)

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        return await self.inner.read(stream_id, from_version, limit=limit)

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        if self.read_failures:
            self.read_failures -= 1
            raise EventStoreUnavailableError("flaky", "read_all", "down")
        return await self.inner.read_all(after_position, limit=limit)

    async def stream_version(self, stream_id: str) -> int:
        return await self.inner.stream_version(stream_id)

    async def wait_for_new(self, after_position: int) -> None:
        await self.inner.wait_for_new(after_position)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self.inner.load_snapshot(stream_id)

    async def aclose(self) -> None:
        await self.inner.aclose()
