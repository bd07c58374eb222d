"""LeastRequest: two random choices for equal weights, Envoy's weighted schedule otherwise."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from balancing_helpers import Scripted, candidates, endpoints
from meshkit import ConfigurationError, NoAvailableEndpointError
from meshkit.balancing import (
    Endpoint,
    LeastRequest,
    Outcome,
)


def pick_and_report(balancer: LeastRequest, picks: int) -> Counter[Endpoint]:
    """Make `picks` picks, reporting each before the next (zero load); count the picks."""
    counts: Counter[Endpoint] = Counter()
    for _ in range(picks):
        chosen = balancer.pick()
        balancer.report(chosen, Outcome.SUCCESS, 0.0)
        counts[chosen] += 1
    return counts


class TestLeastRequest:
    @given(
        active=st.lists(st.integers(0, 5), min_size=2, max_size=8),
        seed=st.integers(0, 2**32 - 1),
    )
    def test_never_picks_the_busier_candidate(self, active: list[int], seed: int) -> None:
        """P2C with equal weights picks the candidate with fewer active requests."""
        eps = endpoints(*[1] * len(active))
        balancer = LeastRequest(eps, rng=random.Random(seed))
        for e, count in zip(eps, active, strict=True):
            for _ in range(count):
                balancer._state.counters[(e.host, e.port)].append(None)
        i, j = candidates(random.Random(seed), len(eps))
        chosen = balancer.pick()
        assert chosen in (eps[i], eps[j])
        assert active[eps.index(chosen)] == min(active[i], active[j])
        assert balancer.active(chosen) == active[eps.index(chosen)] + 1

    def test_pick_and_report_track_active_requests(self) -> None:
        """A pick starts one active request; report() ends it, never going below 0."""
        eps = endpoints(1)
        balancer = LeastRequest(eps)
        chosen = balancer.pick()
        assert balancer.active(chosen) == 1
        balancer.report(chosen, Outcome.ERROR, 0.1)
        balancer.report(chosen, Outcome.ERROR, 0.1)
        assert balancer.active(chosen) == 0
        stranger = Endpoint(host="other", port=1)
        balancer.report(stranger, Outcome.SUCCESS, 0.1)
        assert balancer.active(stranger) == 0

    def test_update_keeps_active_counts(self) -> None:
        """A kept address keeps its in-flight count across update(), even with a new weight."""
        eps = endpoints(1, 1)
        balancer = LeastRequest(eps, rng=Scripted([0.0, 0.0]))
        chosen = balancer.pick()
        reweighted = [Endpoint(host=e.host, port=e.port, weight=5) for e in eps]
        balancer.update(reweighted)
        assert balancer.active(chosen) == 1
        balancer.report(chosen, Outcome.SUCCESS, 0.1)
        assert balancer.active(chosen) == 0

    def test_in_flight_picks_survive_removal_and_return(self) -> None:
        """An address removed then re-added (an ejection) keeps its unreported picks counted."""
        eps = endpoints(1, 1)
        balancer = LeastRequest(eps, rng=Scripted([0.0, 0.0]))
        busy, idle = balancer.pick(), eps[1]
        assert busy == eps[0]
        balancer.update([idle])
        assert balancer.active(busy) == 1
        balancer.update(eps)
        assert balancer.active(busy) == 1
        assert balancer.pick() == idle  # the returning endpoint is not taken for idle
        balancer.report(busy, Outcome.SUCCESS, 0.1)
        assert balancer.active(busy) == 0

    def test_removed_address_is_forgotten_once_reported(self) -> None:
        """A removed address's count ends with its last report and is then dropped."""
        eps = endpoints(1, 1)
        balancer = LeastRequest(eps, rng=Scripted([0.0, 0.0]))
        busy = balancer.pick()
        balancer.update(eps[1:])
        balancer.report(busy, Outcome.SUCCESS, 0.1)
        balancer.report(busy, Outcome.SUCCESS, 0.1)
        assert balancer.active(busy) == 0
        balancer.update(eps[1:])
        assert (busy.host, busy.port) not in balancer._state.counters

    @pytest.mark.parametrize("weights", [(1, 3), (1, 2, 3, 4), (5, 1, 1)])
    def test_zero_load_share_is_weight_over_sum(self, weights: tuple[int, ...]) -> None:
        """Every pick reported before the next: each endpoint gets weight / sum of the picks."""
        eps = endpoints(*weights)
        balancer = LeastRequest(eps, rng=random.Random(3))
        counts = pick_and_report(balancer, 1000 * sum(weights))
        assert [counts[e] for e in eps] == pytest.approx([1000 * w for w in weights], abs=2)

    @pytest.mark.parametrize("bias", [0.0, 1.0, 2.0])
    def test_bias_weighs_load_and_never_drains(self, bias: float) -> None:
        """Requests never end: bias 0 keeps weight shares; a larger bias spreads load more evenly.

        Each pick queues the endpoint again (active + 1) ** bias / weight later, so with a
        constant load the heavy one's share falls from 3:1 (bias 0) towards even as bias grows,
        and the light one keeps getting picks.
        """
        eps = endpoints(3, 1)
        balancer = LeastRequest(eps, active_request_bias=bias, rng=random.Random(4))
        picks = [balancer.pick() for _ in range(400)]
        ratio = picks.count(eps[0]) / picks.count(eps[1])
        expected = 3 ** (1 / (1 + bias))  # k picks of weight w take sum(k**bias)/w ~ k**(1+bias)
        assert ratio == pytest.approx(expected, rel=0.1)

    @given(
        weights=st.lists(st.integers(1, 9), min_size=2, max_size=6).filter(
            lambda w: len(set(w)) > 1
        ),
        seed=st.integers(0, 2**32 - 1),
    )
    def test_weighted_share_property(self, weights: list[int], seed: int) -> None:
        """At zero load any unequal weights give each endpoint weight / sum, within n + 1 picks."""
        eps = endpoints(*weights)
        balancer = LeastRequest(eps, rng=random.Random(seed))
        total = 20 * sum(weights)
        counts = pick_and_report(balancer, total)
        for e, w in zip(eps, weights, strict=True):
            assert abs(counts[e] - total * w / sum(weights)) <= len(eps) + 1

    def test_extreme_bias_does_not_overflow(self) -> None:
        """The largest bias on a heavily loaded endpoint saturates, no OverflowError."""
        eps = endpoints(2, 1)
        balancer = LeastRequest(eps, active_request_bias=100, rng=random.Random(1))
        for _ in range(1000):
            balancer._state.counters[(eps[0].host, eps[0].port)].append(None)
        assert {balancer.pick() for _ in range(4)} == set(eps)

    @pytest.mark.parametrize(
        "bias", [-1, math.inf, math.nan, "1", True, 101, pytest.param(10**400, id="10**400")]
    )
    def test_bad_bias(self, bias: object) -> None:
        """A negative, infinite or non-numeric bias is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError) as info:
            LeastRequest(active_request_bias=bias)  # type: ignore[arg-type]
        assert info.value.field == "active_request_bias"

    @pytest.mark.parametrize("weights", [(1, 1, 1, 1), (1, 2, 3, 4)])
    def test_threads_keep_counts_exact(self, weights: tuple[int, ...]) -> None:
        """Concurrent pick/report pairs from threads leave every count at zero."""
        eps = endpoints(*weights)
        balancer = LeastRequest(eps)

        def worker() -> None:
            for _ in range(2000):
                balancer.report(balancer.pick(), Outcome.SUCCESS, 0.0)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [balancer.active(e) for e in eps] == [0, 0, 0, 0]


class TestScheduleRebuild:
    def test_rebuilt_schedule_starts_from_the_loads(self) -> None:
        """After update(), a loaded endpoint starts a loaded period away, as Envoy adds it.

        The schedule is rebuilt on every update (an outlier ejection or return does one);
        first deadlines drawn from the weight alone gave a busy endpoint a pick at once.
        """
        busy, idle = endpoints(1, 2)
        balancer = LeastRequest([busy, idle], rng=Scripted([0.5]))
        for _ in range(1000):
            balancer._state.counters[(busy.host, busy.port)].append(None)
        balancer.update([busy, idle])  # first deadlines: half a period, 0.5 * 1001 / 1 for busy
        counts = pick_and_report(balancer, 100)  # idle, reported at once, is due every 0.5
        assert counts[busy] == 0


class LeastRequestMachine(RuleBasedStateMachine):
    """Picks, reports and updates against a model of requests in flight and weight shares.

    The bias is 0, so unequal weights make the schedule a weighted round robin: between two
    updates each endpoint's picks stay within `n + 1` of `picks * weight / sum(weights)`
    whatever the load, and the count of requests in flight per address survives updates.
    """

    def __init__(self) -> None:
        super().__init__()
        self.balancer = LeastRequest(active_request_bias=0, rng=random.Random(0))
        self.eps: list[Endpoint] = []
        self.in_flight: Counter[tuple[str, int]] = Counter()
        self.picked: Counter[Endpoint] = Counter()

    @rule(weights=st.lists(st.integers(0, 4), max_size=5), data=st.data())
    def update(self, weights: list[int], data: st.DataObject) -> None:
        ports = data.draw(st.permutations(range(5)))
        self.eps = [
            Endpoint(host="10.0.0.1", port=8000 + port, weight=w)
            for port, w in zip(ports, weights, strict=False)
        ]
        self.balancer.update(self.eps)
        self.picked.clear()

    @rule(times=st.integers(1, 40))
    def pick(self, times: int) -> None:
        if not any(e.weight for e in self.eps):
            with pytest.raises(NoAvailableEndpointError):
                self.balancer.pick()
            return
        for _ in range(times):
            chosen = self.balancer.pick()
            assert chosen in self.eps
            assert chosen.weight > 0
            self.in_flight[chosen.host, chosen.port] += 1
            self.picked[chosen] += 1

    @precondition(lambda self: +self.in_flight)
    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        host, port = data.draw(st.sampled_from(sorted(+self.in_flight)))
        self.balancer.report(Endpoint(host=host, port=port), Outcome.SUCCESS, 0.0)
        self.in_flight[host, port] -= 1

    @invariant()
    def in_flight_counts_survive_updates(self) -> None:
        for (host, port), count in self.in_flight.items():
            assert self.balancer.active(Endpoint(host=host, port=port)) == count

    @invariant()
    def unequal_weights_get_their_share(self) -> None:
        live = [e for e in self.eps if e.weight > 0]
        if len({e.weight for e in live}) < 2:  # equal weights: two choices, no share to check
            return
        picks, total = sum(self.picked.values()), sum(e.weight for e in live)
        for e in live:
            assert abs(self.picked[e] - picks * e.weight / total) <= len(live) + 1


LeastRequestMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=60)
TestLeastRequestMachine = LeastRequestMachine.TestCase
