"""Saga definitions are checked when built; bad input names the field or the step."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.saga import Parallel, Saga, Step, StepContext, StepKind
from meshkit.saga._definition import check_name
from meshkit.saga._json import describe, json_mapping


async def act(data: Any, context: StepContext) -> None:
    """Do nothing."""


async def undo(data: Any, context: StepContext) -> None:
    """Undo nothing."""


def comp(name: str) -> Step:
    return Step(name=name, action=act, compensation=undo)


def pivot(name: str = "pay") -> Step:
    return Step(name=name, action=act, kind=StepKind.PIVOT)


def retriable(name: str) -> Step:
    return Step(name=name, action=act, kind=StepKind.RETRIABLE)


class TestSagaRules:
    def test_a_valid_saga_builds_its_plan(self) -> None:
        """Groups, kinds and compensations are recorded in the plan."""
        saga = Saga(
            name="order",
            steps=[comp("a"), Parallel((comp("b"), comp("c"))), pivot(), retriable("d")],
        )
        assert saga.plan.groups == (("a",), ("b", "c"), ("pay",), ("d",))
        assert saga.plan.order == ("a", "b", "c", "pay", "d")
        assert saga.plan.compensated == {"a", "b", "c"}
        assert saga.by_name["pay"].kind is StepKind.PIVOT

    def test_two_pivots(self) -> None:
        """A second pivot is refused, naming it."""
        with pytest.raises(ConfigurationError, match=r"steps\[pay2\].*at most one pivot"):
            Saga(name="s", steps=[pivot("pay1"), pivot("pay2")])

    def test_duplicate_names(self) -> None:
        """A repeated step name is refused, naming it."""
        with pytest.raises(ConfigurationError, match=r"steps\[a\].*duplicate"):
            Saga(name="s", steps=[comp("a"), comp("a")])

    def test_compensatable_after_pivot(self) -> None:
        """A compensatable step after the pivot is refused, naming it."""
        with pytest.raises(ConfigurationError, match=r"steps\[late\].*after a pivot"):
            Saga(name="s", steps=[pivot(), comp("late")])

    def test_compensatable_after_retriable(self) -> None:
        """A compensatable step after a retriable one is refused."""
        with pytest.raises(ConfigurationError, match=r"steps\[late\].*after a retriable"):
            Saga(name="s", steps=[retriable("r"), comp("late")])

    def test_pivot_after_retriable(self) -> None:
        """The pivot cannot follow a retriable step."""
        with pytest.raises(ConfigurationError, match=r"steps\[pay\]"):
            Saga(name="s", steps=[retriable("r"), pivot()])

    def test_compensatable_needs_a_compensation(self) -> None:
        """A compensatable step without a compensation is refused, naming it."""
        with pytest.raises(ConfigurationError, match=r"steps\[a\]\.compensation"):
            Step(name="a", action=act)

    def test_retriable_refuses_a_compensation(self) -> None:
        """A retriable step is never compensated, so a compensation is refused."""
        with pytest.raises(ConfigurationError, match=r"steps\[r\]\.compensation"):
            Step(name="r", action=act, compensation=undo, kind=StepKind.RETRIABLE)

    def test_parallel_groups(self) -> None:
        """A group is non-empty, holds Steps of one kind, and never the pivot."""
        with pytest.raises(ConfigurationError, match="non-empty"):
            Parallel(())
        with pytest.raises(ConfigurationError, match="must hold Step"):
            Parallel(("a",))
        with pytest.raises(ConfigurationError, match="pivot"):
            Parallel((comp("a"), pivot()))
        with pytest.raises(ConfigurationError, match="one kind"):
            Parallel((comp("a"), retriable("r")))

    @pytest.mark.parametrize("steps", [[], "ab", None, [object()]])
    def test_steps_must_be_steps(self, steps: Any) -> None:
        """Steps must be a non-empty sequence of Step or Parallel."""
        with pytest.raises(ConfigurationError, match="steps"):
            Saga(name="s", steps=steps)

    @pytest.mark.parametrize("value", [0, -1.0, float("nan"), "1", True])
    def test_stuck_after(self, value: Any) -> None:
        """stuck_after is a positive number (inf: never stuck)."""
        with pytest.raises(ConfigurationError, match="stuck_after"):
            Saga(name="s", steps=[comp("a")], stuck_after=value)
        assert Saga(name="s", steps=[comp("a")], stuck_after=float("inf")).stuck_after > 0

    def test_stuck_after_huge_int(self) -> None:
        """A huge int stuck_after is just a very long time (no OverflowError)."""
        assert Saga(name="s", steps=[comp("a")], stuck_after=10**400).stuck_after > 0

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("action", {"action": 3}),
            ("compensation", {"compensation": "x"}),
            ("kind", {"kind": "pivot"}),
            ("timeout", {"timeout": float("inf")}),
            ("timeout", {"timeout": 0}),
            ("retry", {"retry": 3}),
            ("backoff", {"backoff": 1.0}),
        ],
    )
    def test_step_fields(self, field: str, kwargs: dict[str, Any]) -> None:
        """Each bad Step field raises ConfigurationError naming it."""
        values: dict[str, Any] = {"name": "a", "action": act, "compensation": undo, **kwargs}
        with pytest.raises(ConfigurationError, match=field):
            Step(**values)


class TestNames:
    @pytest.mark.parametrize("name", ["", "a\0b", "\ud800", "x" * 201, 5, None, b"a"])
    def test_bad_names(self, name: Any) -> None:
        """Empty, NUL, lone surrogate, too long and non-str names are refused."""
        with pytest.raises(ConfigurationError, match="name"):
            Step(name=name, action=act, compensation=undo)
        with pytest.raises(ConfigurationError, match="saga_id"):
            check_name("saga_id", name)

    @given(st.text(min_size=1, max_size=200).filter(lambda t: "\0" not in t))
    def test_good_names(self, name: str) -> None:
        """Any other non-empty text (surrogates excluded by hypothesis) is a valid name."""
        assert check_name("name", name) == name


class TestJson:
    @pytest.mark.parametrize(
        "value",
        [
            {"x": float("nan")},
            {"x": float("inf")},
            {"x": object()},
            {"x": "\ud800"},
            {"x": b"bytes"},
            [1, 2],
            "text",
        ],
    )
    def test_refused(self, value: Any) -> None:
        """Non-JSON data raises ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError, match=r"steps\[pay\]\.result"):
            json_mapping(value, "steps[pay].result")

    def test_deep_nesting_is_refused(self) -> None:
        """Nesting too deep for the encoder is a ConfigurationError, not a RecursionError."""
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(100_000):
            node["x"] = {}
            node = node["x"]
        with pytest.raises(ConfigurationError, match="data"):
            json_mapping(deep, "data")

    def test_nesting_near_the_limit_is_refused_or_kept(self) -> None:
        """Nesting the encoder takes but the decoder refuses is a ConfigurationError too."""
        outcomes = set()
        for depth in range(500, 1500):  # around the recursion limit, wherever the stack is
            deep: dict[str, Any] = {}
            node = deep
            for _ in range(depth):
                node["x"] = {}
                node = node["x"]
            try:
                json_mapping(deep, "data")
                outcomes.add("kept")
            except ConfigurationError:
                outcomes.add("refused")
        assert outcomes == {"kept", "refused"}

    def test_colliding_keys_are_refused(self) -> None:
        """Keys that become one str key (True and "true") are refused, not silently merged."""
        with pytest.raises(ConfigurationError, match="data"):
            json_mapping({"x": {True: 1, "true": 2}}, "data")
        with pytest.raises(ConfigurationError, match="data"):
            json_mapping({1: "a", "1": "b"}, "data")

    def test_round_trip(self) -> None:
        """Data reads back as the log will: tuples become lists, keys become str."""
        assert json_mapping({"t": (1, 2), 3: "x"}, "data") == {"t": [1, 2], "3": "x"}

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        )
    )
    def test_json_values_pass(self, value: object) -> None:
        """Any JSON value inside a mapping passes (lone surrogates aside)."""
        try:
            f"{value}".encode()
        except UnicodeEncodeError:
            return
        assert json_mapping({"v": value}, "data") == {"v": value}

    def test_describe_is_loggable(self) -> None:
        """An error text with a lone surrogate is escaped, and bounded."""
        text = describe(ValueError("\ud800" + "x" * 5000))
        assert text.startswith("ValueError: \\ud800")
        assert len(text) <= 2000
