"""Tests for the retry budget: a ratio of live traffic plus a floor, over a sliding window."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshkit import ConfigurationError
from meshkit.resilience import RetryBudget, RetryBudgetStatistics
from meshkit.testing import FakeClock

EPSILON = 1e-9


class TestRetryBudget:
    def test_defaults(self) -> None:
        """The default budget is 20% of traffic plus 10 retries/s over 10 s."""
        budget = RetryBudget(clock=FakeClock())
        assert (budget.ratio, budget.min_retries_per_second, budget.window) == (0.2, 10.0, 10.0)
        assert budget.floor == 100.0
        assert budget.statistics() == RetryBudgetStatistics(requests=0, retries=0, available=100)

    def test_ratio_of_traffic(self) -> None:
        """Without a floor, 10 requests at ratio 0.2 allow exactly 2 retries."""
        budget = RetryBudget(ratio=0.2, min_retries_per_second=0, clock=FakeClock())
        for _ in range(10):
            budget.deposit()
        assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
        assert budget.statistics() == RetryBudgetStatistics(requests=10, retries=2, available=0)

    def test_floor_allows_retries_without_traffic(self) -> None:
        """The floor grants min_retries_per_second * window retries with no traffic at all."""
        budget = RetryBudget(ratio=0, min_retries_per_second=0.5, window=4, clock=FakeClock())
        assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]

    def test_window_slides(self) -> None:
        """Deposits and withdrawals expire once the window has passed them."""
        clock = FakeClock()
        budget = RetryBudget(ratio=1, min_retries_per_second=0, window=10, clock=clock)
        budget.deposit()
        assert budget.try_withdraw()
        assert not budget.try_withdraw()
        clock.advance(5)
        budget.deposit()
        assert budget.try_withdraw()  # 2 requests in the window allow 2 retries
        assert not budget.try_withdraw()
        clock.advance(5)  # the first request and retry leave the window
        assert budget.statistics() == RetryBudgetStatistics(requests=1, retries=1, available=0)
        budget.deposit()
        assert budget.try_withdraw()
        clock.advance(100)
        assert budget.statistics() == RetryBudgetStatistics(requests=0, retries=0, available=0)

    def test_clock_going_back_keeps_the_window(self) -> None:
        """A clock that jumps backwards does not clear or corrupt the window."""
        clock = FakeClock(start=50)
        budget = RetryBudget(ratio=1, min_retries_per_second=0, clock=clock)
        budget.deposit()
        clock._now = 10.0
        budget.deposit()
        assert budget.statistics().requests == 2

    def test_thread_safe(self) -> None:
        """Deposits from many threads are all counted."""
        budget = RetryBudget(clock=FakeClock())

        def deposit() -> None:
            for _ in range(500):
                budget.deposit()

        threads = [threading.Thread(target=deposit) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert budget.statistics().requests == 2000

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"ratio": -0.1}, "ratio"),
            ({"ratio": math.inf}, "ratio"),
            ({"min_retries_per_second": -1}, "min_retries_per_second"),
            ({"window": 0}, "window"),
            ({"window": math.nan}, "window"),
            ({"buckets": 0}, "buckets"),
            ({"buckets": 2.5}, "buckets"),
            ({"clock": object()}, "clock"),
        ],
    )
    def test_rejects_bad_config(self, kwargs: dict[str, object], field: str) -> None:
        """A bad value raises ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError) as info:
            RetryBudget(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field

    @given(
        ratio=st.floats(0, 2),
        floor_rate=st.floats(0, 5),
        ops=st.lists(st.tuples(st.booleans(), st.floats(0, 0.5)), max_size=200),
    )
    def test_retries_bounded_by_ratio_and_floor(
        self, ratio: float, floor_rate: float, ops: list[tuple[bool, float]]
    ) -> None:
        """Within one window, retries allowed <= ratio * requests + floor * window."""
        clock = FakeClock()
        window = 10.0
        budget = RetryBudget(
            ratio=ratio, min_retries_per_second=floor_rate, window=window, buckets=5, clock=clock
        )
        requests = retries = 0
        for is_request, step in ops:
            if clock.now() + step < window / 5:  # stay inside the first slice: nothing expires
                clock.advance(step)
            if is_request:
                budget.deposit()
                requests += 1
            elif budget.try_withdraw():
                retries += 1
        assert retries <= ratio * requests + floor_rate * window + EPSILON


class BudgetMachine(RuleBasedStateMachine):
    """Drive a RetryBudget and a plain event-list model with the same operations."""

    @initialize(
        ratio=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        floor_rate=st.sampled_from([0.0, 0.1, 1.0]),
        buckets=st.integers(1, 6),
    )
    def setup(self, ratio: float, floor_rate: float, buckets: int) -> None:
        self.clock = FakeClock()
        self.window = 3.0
        self.buckets = buckets
        self.ratio = ratio
        self.floor = floor_rate * self.window
        self.budget = RetryBudget(
            ratio=ratio,
            min_retries_per_second=floor_rate,
            window=self.window,
            buckets=buckets,
            clock=self.clock,
        )
        self.events: list[tuple[int, str]] = []  # (slice index, "request" | "retry")

    def _slice(self) -> int:
        return math.floor(self.clock.now() / (self.window / self.buckets))

    def _live(self, kind: str) -> int:
        current = self._slice()
        return sum(1 for index, k in self.events if k == kind and index > current - self.buckets)

    def _available(self) -> float:
        return self.ratio * self._live("request") + self.floor - self._live("retry")

    @precondition(lambda self: hasattr(self, "budget"))
    @rule()
    def deposit(self) -> None:
        self.budget.deposit()
        self.events.append((self._slice(), "request"))

    @precondition(lambda self: hasattr(self, "budget"))
    @rule()
    def withdraw(self) -> None:
        expected = self._available() >= 1
        assert self.budget.try_withdraw() == expected
        if expected:
            self.events.append((self._slice(), "retry"))

    @precondition(lambda self: hasattr(self, "budget"))
    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: hasattr(self, "budget"))
    @invariant()
    def matches_model(self) -> None:
        stats = self.budget.statistics()
        assert stats.requests == self._live("request")
        assert stats.retries == self._live("retry")
        assert math.isclose(stats.available, max(self._available(), 0.0), abs_tol=EPSILON)


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=60, stateful_step_count=40)


class TestRetryBudgetBoundaries:
    @pytest.mark.parametrize(("ratio", "requests", "allowed"), [(0.29, 100, 29), (0.1, 30, 3)])
    def test_exact_at_the_boundary(self, ratio: float, requests: int, allowed: int) -> None:
        """ratio * requests is exact: 0.29 of 100 requests allows 29 retries, as Finagle's."""
        budget = RetryBudget(ratio=ratio, min_retries_per_second=0, clock=FakeClock())
        for _ in range(requests):
            budget.deposit()
        granted = [budget.try_withdraw() for _ in range(allowed + 1)]
        assert granted == [True] * allowed + [False]

    def test_floor_is_exact_too(self) -> None:
        """A floor of 0.3 retries/s over 10 s is 3 retries, not 2.9999..."""
        budget = RetryBudget(ratio=0, min_retries_per_second=0.3, window=10, clock=FakeClock())
        assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"buckets": 10**9}, "buckets"),
            ({"window": 1e-320}, "window"),
            ({"window": 1e-5, "buckets": 100}, "window"),
            ({"min_retries_per_second": 1e300, "window": 1e300}, "min_retries_per_second"),
        ],
    )
    def test_refused_at_construction(self, kwargs: dict[str, float], field: str) -> None:
        """Knobs that would exhaust memory or overflow later are refused, naming the field."""
        with pytest.raises(ConfigurationError) as info:
            RetryBudget(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
