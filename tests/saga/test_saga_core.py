"""Hypothesis drives the pure saga state machine: direction, compensation order, replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from meshkit import SagaStateError
from meshkit.saga import (
    Compensate,
    Finish,
    Record,
    RecordType,
    RunStep,
    SagaMachine,
    SagaPlan,
    SagaState,
    StepKind,
    StepState,
)
from saga_helpers import outcome, plan_of, plans, replay, simulate

if TYPE_CHECKING:
    from collections.abc import Callable


def _types(log: list[Record], kind: RecordType) -> list[str]:
    return [str(r.step) for r in log if r.type is kind]


def _started(log: list[Record]) -> list[str]:
    return list(dict.fromkeys(_types(log, RecordType.STEP_STARTED)))


def _crashes(data: st.DataObject, most: int = 5) -> Callable[[], bool]:
    """Return a crash oracle: rare, and at most `most` times (0, hypothesis' favourite, is no)."""
    left = [most]

    def crash() -> bool:
        hit = left[0] > 0 and data.draw(st.integers(0, 9), label="crash?") == 9
        left[0] -= hit
        return hit

    return crash


def _expected_compensations(plan: SagaPlan, log: list[Record]) -> list[str]:
    started = set(_started(log))
    return [s for s in reversed(plan.order) if s in started and s in plan.compensated]


class TestDirection:
    @given(plan=plans(), data=st.data())
    def test_saga_ends_completed_or_compensated(self, plan: SagaPlan, data: st.DataObject) -> None:
        """Whatever fails (a bounded number of times), the saga ends completed or compensated."""
        failures: dict[tuple[str, str], int] = {}

        def oracle(operation: str, step: str, call: int) -> bool:
            retried = operation == "undo" or plan.kinds[step] is StepKind.RETRIABLE
            if retried and call > 3:
                return True  # persistent operations succeed eventually
            ok = data.draw(st.booleans(), label=f"{operation} {step} #{call}")
            failures[operation, step] = failures.get((operation, step), 0) + (not ok)
            return ok

        log = simulate(plan, oracle, _crashes(data))
        final = replay(plan, log)
        assert final.state in {SagaState.COMPLETED, SagaState.COMPENSATED}
        assert final.next_commands() == ()
        if final.state is SagaState.COMPENSATED:
            done = _types(log, RecordType.COMPENSATION_SUCCEEDED)
            assert done == _expected_compensations(plan, log)  # each once, last first
            failed = _types(log, RecordType.STEP_FAILED)
            assert any(plan.kinds[s] is not StepKind.RETRIABLE for s in failed)
        else:
            assert _types(log, RecordType.COMPENSATION_STARTED) == []
            assert set(_types(log, RecordType.STEP_SUCCEEDED)) == set(plan.order)

    @given(plan=plans(), data=st.data())
    def test_pivot_decides_the_direction(self, plan: SagaPlan, data: st.DataObject) -> None:
        """Once the pivot (or a retriable step) has succeeded, the saga can only complete."""

        def oracle(operation: str, step: str, call: int) -> bool:
            if operation == "undo" or plan.kinds[step] is StepKind.RETRIABLE:
                return call > 2 or data.draw(st.booleans())
            return data.draw(st.booleans())

        log = simulate(plan, oracle, _crashes(data))
        final = replay(plan, log)
        point_of_no_return = [
            s
            for s in _types(log, RecordType.STEP_SUCCEEDED)
            if plan.kinds[s] is not StepKind.COMPENSATABLE
        ]
        if point_of_no_return:
            assert final.state is SagaState.COMPLETED

    @given(plan=plans(), failures=st.integers(1, 20))
    def test_a_failing_retriable_step_never_compensates(
        self, plan: SagaPlan, failures: int
    ) -> None:
        """Retriable steps that fail many times are retried; nothing is compensated."""

        def oracle(operation: str, step: str, call: int) -> bool:
            return plan.kinds[step] is not StepKind.RETRIABLE or call > failures

        log = simulate(plan, oracle, lambda: False)
        assert replay(plan, log).state is SagaState.COMPLETED
        assert _types(log, RecordType.COMPENSATION_STARTED) == []

    @given(plan=plans(), data=st.data())
    def test_replay_rebuilds_the_same_state(self, plan: SagaPlan, data: st.DataObject) -> None:
        """Folding any prefix of a log twice gives the same state, data and step progress."""
        log = simulate(plan, lambda *_: data.draw(st.booleans()), lambda: False)
        cut = data.draw(st.integers(0, len(log)))
        a, b = replay(plan, log[:cut]), replay(plan, log[:cut])
        assert (a.state, a.data, a.steps, a.version) == (b.state, b.data, b.steps, cut)


class TestRecords:
    def _machine(self) -> SagaMachine:
        plan = plan_of([[("a", StepKind.COMPENSATABLE)], [("p", StepKind.PIVOT)]], {"a"})
        machine = SagaMachine("m", plan)
        machine.apply(Record(RecordType.STARTED, {"data": {"x": 1}}))
        return machine

    def test_unknown_step_is_refused(self) -> None:
        """A record naming a step the plan lacks raises SagaStateError."""
        machine = self._machine()
        with pytest.raises(SagaStateError, match="nope"):
            machine.apply(Record(RecordType.STEP_STARTED, {"step": "nope"}))

    def test_nothing_after_the_end(self) -> None:
        """A record after SagaCompleted raises SagaStateError."""
        machine = self._machine()
        machine.apply(Record(RecordType.COMPLETED))
        with pytest.raises(SagaStateError, match="completed"):
            machine.apply(Record(RecordType.CLAIMED))

    def test_a_crashed_call_counts(self) -> None:
        """A step started twice without an outcome counts one call, and the next is the 2nd."""
        machine = self._machine()
        machine.apply(Record(RecordType.STEP_STARTED, {"step": "a"}))
        assert machine.next_commands() == (RunStep("a", 2),)
        machine.apply(Record(RecordType.STEP_STARTED, {"step": "a"}))
        assert machine.steps["a"].calls == 1
        machine.apply(outcome(machine, RunStep("a", 2), ok=False))
        assert machine.state is SagaState.COMPENSATING
        assert machine.next_commands() == (Compensate("a", 1),)
        machine.apply(Record(RecordType.COMPENSATION_STARTED, {"step": "a"}))
        assert machine.next_commands() == (Compensate("a", 2),)
        machine.apply(Record(RecordType.COMPENSATION_STARTED, {"step": "a"}))
        assert machine.steps["a"].compensation_calls == 1

    def test_cancelled_action_then_compensation_counts_the_action(self) -> None:
        """A started action that is compensated without an outcome counts as one call."""
        plan = plan_of([[("a", StepKind.COMPENSATABLE), ("b", StepKind.COMPENSATABLE)]], {"a", "b"})
        machine = SagaMachine("m", plan)
        machine.apply(Record(RecordType.STARTED, {}))
        for step in "ab":
            machine.apply(Record(RecordType.STEP_STARTED, {"step": step}))
        machine.apply(outcome(machine, RunStep("a", 1), ok=False))
        assert machine.next_commands() == (Compensate("b", 1),)
        machine.apply(Record(RecordType.COMPENSATION_STARTED, {"step": "b"}))
        assert machine.steps["b"].calls == 1

    def test_claims(self) -> None:
        """Each command's claim is the record that starts it."""
        machine = self._machine()
        assert machine.claim(RunStep("a", 1)).type is RecordType.STEP_STARTED
        assert machine.claim(Compensate("a", 1)).type is RecordType.COMPENSATION_STARTED
        assert machine.claim(Finish(SagaState.COMPLETED)).type is RecordType.COMPLETED
        assert machine.claim(Finish(SagaState.COMPENSATED)).type is RecordType.COMPENSATED


GROUPS = [
    [("a", StepKind.COMPENSATABLE)],
    [("b1", StepKind.COMPENSATABLE), ("b2", StepKind.COMPENSATABLE)],
    [("p", StepKind.PIVOT)],
    [("r1", StepKind.RETRIABLE), ("r2", StepKind.RETRIABLE)],
]
PLAN = plan_of(GROUPS, {"a", "b1", "b2"})


class SagaMachineModel(RuleBasedStateMachine):
    """Outcomes, crashes, stuck and resume in any order, checked against the log."""

    @initialize()
    def start(self) -> None:
        self.log: list[Record] = []
        self.machine = SagaMachine("saga-1", PLAN)
        self.in_flight: list[RunStep | Compensate] = []
        self.commit([Record(RecordType.STARTED, {"data": {}})])

    def commit(self, records: list[Record]) -> None:
        for record in records:
            self.machine.apply(record)
            self.log.append(record)

    @precondition(lambda self: not self.in_flight and self.machine.next_commands())
    @rule()
    def plan_next(self) -> None:
        """Claim the next commands (or finish)."""
        commands = self.machine.next_commands()
        self.commit([self.machine.claim(c) for c in commands])
        self.in_flight = [c for c in commands if not isinstance(c, Finish)]

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(0, 5), ok=st.booleans())
    def finish_one(self, index: int, ok: bool) -> None:
        """One in-flight command ends (siblings of a turning failure are cancelled)."""
        command = self.in_flight.pop(index % len(self.in_flight))
        record = outcome(self.machine, command, ok)
        self.commit([record])
        if record.type is RecordType.STEP_FAILED and record.data["compensate"]:
            self.in_flight = []

    @precondition(lambda self: self.in_flight)
    @rule()
    def crash(self) -> None:
        """The orchestrator dies: in-flight calls lose their outcome; the log is replayed."""
        self.in_flight = []
        self.machine = replay(PLAN, self.log)

    @precondition(
        lambda self: (
            not self.in_flight and self.machine.state in {SagaState.RUNNING, SagaState.COMPENSATING}
        )
    )
    @rule()
    def get_stuck(self) -> None:
        """An operator-visible STUCK mark parks the saga."""
        step = PLAN.order[-1] if not self.machine.compensating else "a"
        self.commit([Record(RecordType.STUCK, {"step": step, "error": "down"})])
        assert self.machine.next_commands() == ()

    @precondition(lambda self: self.machine.state is SagaState.STUCK)
    @rule()
    def resume(self) -> None:
        """Resuming restores the direction the saga had."""
        state = "compensating" if self.machine.compensating else "running"
        self.commit([Record(RecordType.RESUMED, {"state": state})])
        assert self.machine.state.value == state

    @rule()
    def look(self) -> None:
        """A finished saga has nothing left to do."""
        if self.machine.state.finished:
            assert self.machine.next_commands() == ()

    @invariant()
    def replay_matches(self) -> None:
        """The log alone rebuilds the machine."""
        again = replay(PLAN, self.log)
        assert (again.state, again.data, again.steps) == (
            self.machine.state,
            self.machine.data,
            self.machine.steps,
        )

    @invariant()
    def compensations_are_reverse_and_once(self) -> None:
        """Compensated steps were started, each once, last first; never past the pivot."""
        done = _types(self.log, RecordType.COMPENSATION_SUCCEEDED)
        assert len(done) == len(set(done))
        assert set(done) <= set(_started(self.log))
        positions = [PLAN.order.index(s) for s in done]
        assert positions == sorted(positions, reverse=True)
        succeeded = set(_types(self.log, RecordType.STEP_SUCCEEDED))
        if "p" in succeeded:
            assert not self.machine.compensating
        if self.machine.state is SagaState.COMPENSATED:
            assert done == _expected_compensations(PLAN, self.log)
        if self.machine.state is SagaState.COMPLETED:
            assert all(s.state is StepState.SUCCEEDED for s in self.machine.steps.values())


TestSagaMachineModel = SagaMachineModel.TestCase
TestSagaMachineModel.settings = settings(max_examples=200, stateful_step_count=60)
