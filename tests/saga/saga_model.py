"""Shared helpers for the saga tests: plans, a pure simulator of the orchestrator's loop."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from meshkit.saga import (
    Compensate,
    Finish,
    Record,
    RecordType,
    RunStep,
    SagaMachine,
    SagaPlan,
    StepKind,
)

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
