"""SlowStart: the ramp itself, and Random and LeastRequest ramping new endpoints."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest
from balancing_helpers import Scripted, endpoints
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.balancing import (
    LeastRequest,
    Outcome,
    Random,
    SlowStart,
)

if TYPE_CHECKING:
    from meshkit.testing import FakeClock


class TestSlowStart:
    @given(elapsed=st.floats(0, 10))
    def test_linear_ramp(self, elapsed: float) -> None:
        """With aggression 1 and no floor the factor is elapsed / window."""
        ramp = SlowStart(window=10, min_weight_percent=0)
        assert ramp.factor(elapsed) == pytest.approx(min(elapsed / 10, 1.0))

    def test_floor_and_aggression(self) -> None:
        """The factor never drops under min_weight_percent; aggression bends the curve."""
        assert SlowStart(window=10).factor(0.0) == 0.1
        assert SlowStart(window=10).factor(-5.0) == 0.1
        assert SlowStart(window=10, aggression=2, min_weight_percent=0).factor(2.5) == 0.5
        assert SlowStart(window=10).factor(10) == 1.0

    @pytest.mark.parametrize(
        ("field", "value"), [("window", 0), ("aggression", -1), ("min_weight_percent", 101)]
    )
    def test_bad_config(self, field: str, value: float) -> None:
        """Invalid knobs raise ConfigurationError naming the field."""
        kwargs: dict[str, float] = {"window": 1.0, field: value}
        with pytest.raises(ConfigurationError) as info:
            SlowStart(**kwargs)
        assert info.value.field == field

    def test_random_ramps_a_new_endpoint_linearly(self, clock: FakeClock) -> None:
        """A newly added endpoint's share grows linearly over the window, then is full."""
        old, new = endpoints(1, 1)
        ramp = SlowStart(window=10, min_weight_percent=0)
        balancer = Random([old], rng=random.Random(5), slow_start=ramp, clock=clock)
        balancer.update([old, new])
        shares = []
        for _ in range(4):
            clock.advance(2.5)
            picks = [balancer.pick() for _ in range(4000)]
            shares.append(picks.count(new) / len(picks))
        expected = [0.25 / 1.25, 0.5 / 1.5, 0.75 / 1.75, 0.5]
        assert shares == pytest.approx(expected, abs=0.03)
        assert balancer._state.warm_until is None

    def test_endpoints_present_at_start_are_warm(self, clock: FakeClock) -> None:
        """Only endpoints added by update() ramp; kept ones keep their start time."""
        eps = endpoints(1, 1)
        ramp = SlowStart(window=10)
        balancer = Random(eps, slow_start=ramp, clock=clock)
        assert balancer._state.warm_until is None
        balancer.update(eps)
        assert balancer._state.warm_until is None

    def test_settle_keeps_a_newer_snapshot(self, clock: FakeClock) -> None:
        """Ending a ramp never overwrites a snapshot swapped in meanwhile."""
        eps = endpoints(1, 1)
        balancer = Random(eps[:1], slow_start=SlowStart(window=1), clock=clock)
        balancer.update(eps)
        ramping = balancer._state
        balancer.update(eps[1:])
        clock.advance(2)
        balancer._settle(ramping)
        assert balancer.endpoints == tuple(eps[1:])

    def test_least_request_settle_keeps_a_newer_snapshot(self, clock: FakeClock) -> None:
        """LeastRequest, too, never overwrites a newer snapshot when a ramp ends."""
        eps = endpoints(1, 1)
        balancer = LeastRequest(eps[:1], slow_start=SlowStart(window=1), clock=clock)
        balancer.update(eps)
        ramping = balancer._state
        balancer.update(eps[1:])
        clock.advance(2)
        balancer._settle(ramping)
        assert balancer.endpoints == tuple(eps[1:])

    def test_least_request_ramps_a_new_endpoint(self, clock: FakeClock) -> None:
        """LeastRequest weighs a ramping endpoint by its factor, then by its full weight."""
        old, new = endpoints(1, 1)
        ramp = SlowStart(window=10, min_weight_percent=0)
        balancer = LeastRequest([old], rng=Scripted([0.9, 0.0]), slow_start=ramp, clock=clock)
        balancer.update([old, new])
        clock.advance(5)
        assert balancer.pick() == old  # new is first but weighs only 0.5
        balancer.report(old, Outcome.SUCCESS, 0.0)
        clock.advance(5)
        assert balancer.pick() == new  # full weight: equal, first candidate wins
        assert balancer._state.warm_until is None

    def test_random_all_new_at_a_zero_floor_uses_the_weights(self, clock: FakeClock) -> None:
        """Every endpoint at factor 0 at once: pick by weight, not always the last one."""
        eps = endpoints(1, 1, 1)
        ramp = SlowStart(window=10, min_weight_percent=0)
        balancer = Random(rng=random.Random(5), slow_start=ramp, clock=clock)
        balancer.update(eps)
        assert {balancer.pick() for _ in range(60)} == set(eps)

    def test_least_request_all_new_at_a_zero_floor_counts_load(self, clock: FakeClock) -> None:
        """Two candidates both at factor 0: the less loaded wins, not always the first."""
        first, second = endpoints(1, 1)
        ramp = SlowStart(window=10, min_weight_percent=0)
        balancer = LeastRequest(rng=Scripted([0.0, 0.0]), slow_start=ramp, clock=clock)
        balancer.update([first, second])
        assert [balancer.pick() for _ in range(4)] == [first, second, first, second]
