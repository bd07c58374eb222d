"""PeakEwma: latency x load, peak sensitivity and decay."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import pytest
from balancing_helpers import Scripted, endpoints

from meshkit import ConfigurationError
from meshkit.balancing import (
    Endpoint,
    Outcome,
    PeakEwma,
)

if TYPE_CHECKING:
    from meshkit.testing import FakeClock


class TestPeakEwma:
    def test_prefers_the_faster_endpoint(self, clock: FakeClock) -> None:
        """After both answered, the faster endpoint takes the traffic."""
        fast, slow = endpoints(1, 1)
        balancer = PeakEwma([fast, slow], clock=clock, rng=random.Random(3))
        balancer.report(fast, Outcome.SUCCESS, 0.01)
        balancer.report(slow, Outcome.SUCCESS, 0.2)
        picks = []
        for _ in range(100):
            clock.advance(0.01)
            chosen = balancer.pick()
            picks.append(chosen)
            balancer.report(chosen, Outcome.SUCCESS, 0.01 if chosen == fast else 0.2)
        assert picks.count(fast) > 90

    def test_peak_then_decay(self, clock: FakeClock) -> None:
        """A slower sample is taken at once; the cost then decays with time constant `decay`."""
        (ep,) = endpoints(1)
        balancer = PeakEwma([ep], decay=10, clock=clock)
        balancer.report(ep, Outcome.SUCCESS, 0.1)
        balancer.report(ep, Outcome.SUCCESS, 0.5)
        assert balancer.cost(ep) == pytest.approx(0.5)
        clock.advance(10)
        assert balancer.cost(ep) == pytest.approx(0.5 / math.e)
        balancer.report(ep, Outcome.SUCCESS, 0.0)
        assert balancer.cost(ep) == pytest.approx(0.5 / math.e)

    def test_cost_counts_active_requests_and_weight(self, clock: FakeClock) -> None:
        """Cost = ewma * (active + 1) / weight; no sample but requests outstanding = penalty."""
        (ep,) = endpoints(2)
        balancer = PeakEwma([ep], clock=clock)
        assert balancer.cost(ep) == 0.0
        balancer.pick()
        assert balancer.cost(ep) > 1e6
        balancer.report(ep, Outcome.SUCCESS, 0.4)
        balancer.pick()
        assert balancer.cost(ep) == pytest.approx(0.4 * 2 / 2)
        assert balancer.cost(Endpoint(host="x", port=1)) == 0.0

    def test_zero_latency_is_a_sample_not_a_missing_one(self, clock: FakeClock) -> None:
        """An endpoint that answered in 0 s (a coarse or fake clock) is cheap, not penalised."""
        instant, slow = endpoints(1, 1)
        balancer = PeakEwma([instant, slow], clock=clock, rng=Scripted([0.0, 0.0]))
        balancer.report(instant, Outcome.SUCCESS, 0.0)
        balancer.report(slow, Outcome.SUCCESS, 0.05)
        assert balancer.pick() == instant
        assert balancer.cost(instant) == 0.0
        assert balancer.pick() == instant  # 0 x (1 + 1) still beats 0.05 x 1

    def test_candidates_follow_the_rng(self, clock: FakeClock) -> None:
        """The cheaper of the two drawn candidates is chosen (first on a tie)."""
        eps = endpoints(1, 1, 1)
        balancer = PeakEwma(eps, clock=clock, rng=Scripted([0.0, 0.0]))
        assert balancer.pick() == eps[0]
        balancer.report(eps[0], Outcome.SUCCESS, 1.0)
        balancer.report(eps[1], Outcome.SUCCESS, 0.5)
        assert balancer.pick() == eps[1]

    def test_update_keeps_history_and_ignores_strangers(self, clock: FakeClock) -> None:
        """Kept addresses keep their average; reports for unknown ones are ignored."""
        eps = endpoints(1, 1)
        balancer = PeakEwma(eps, clock=clock)
        balancer.report(eps[0], Outcome.SUCCESS, 0.3)
        balancer.update([*eps, *endpoints(1, host="10.9.9.9")])
        assert balancer.cost(eps[0]) == pytest.approx(0.3)
        balancer.report(Endpoint(host="x", port=1), Outcome.SUCCESS, 0.3)
        assert balancer.cost(eps[1]) == 0.0

    def test_in_flight_picks_survive_removal_and_return(self, clock: FakeClock) -> None:
        """An address removed then re-added (an ejection) keeps its unreported picks counted."""
        eps = endpoints(1, 1)
        balancer = PeakEwma(eps, clock=clock, rng=Scripted([0.0, 0.0]))
        for e in eps:
            balancer.report(e, Outcome.SUCCESS, 0.1)
        busy = balancer.pick()
        balancer.update(eps[1:])
        balancer.update(eps)
        assert balancer.cost(busy) == pytest.approx(0.1 * 2)
        assert balancer.pick() == eps[1]
        balancer.report(busy, Outcome.SUCCESS, 0.1)
        balancer.update(eps[1:])
        balancer.update(eps)
        assert balancer.cost(busy) == 0.0  # reported, then removed: forgotten

    @pytest.mark.parametrize("decay", [0, -1, math.inf, None])
    def test_bad_decay(self, decay: object) -> None:
        """A non-positive or infinite decay is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError) as info:
            PeakEwma(decay=decay)  # type: ignore[arg-type]
        assert info.value.field == "decay"

    @pytest.mark.parametrize("latency", [math.nan, math.inf, -0.1, "0.1", None, True])
    def test_bad_latency_is_rejected_whole(self, clock: FakeClock, latency: object) -> None:
        """A NaN, infinite, negative or non-numeric latency is a ConfigurationError; no effect."""
        (ep,) = endpoints(1)
        balancer = PeakEwma([ep], clock=clock)
        balancer.report(ep, Outcome.SUCCESS, 0.2)
        balancer.pick()
        with pytest.raises(ConfigurationError) as info:
            balancer.report(ep, Outcome.SUCCESS, latency)  # type: ignore[arg-type]
        assert info.value.field == "latency"
        assert balancer.cost(ep) == pytest.approx(0.2 * 2)
        balancer.report(ep, Outcome.SUCCESS, 0.2)
        assert balancer.cost(ep) == pytest.approx(0.2)
