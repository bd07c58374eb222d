"""RoundRobin, WeightedRoundRobin, Random, LeastRequest, PeakEwma and slow start."""

from __future__ import annotations

import collections
import itertools
import math
import random
import threading
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit import ConfigurationError, NoAvailableEndpointError
from meshkit.balancing import (
    Endpoint,
    LeastRequest,
    LoadBalancer,
    Outcome,
    PeakEwma,
    Random,
    RoundRobin,
    SlowStart,
    WeightedRoundRobin,
    _roundrobin,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from meshkit.testing import FakeClock

STRATEGIES: list[Callable[..., LoadBalancer]] = [
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastRequest,
    PeakEwma,
]


def endpoints(*weights: int, host: str = "10.0.0.1") -> list[Endpoint]:
    """Return one endpoint per weight, on consecutive ports."""
    return [Endpoint(host=host, port=8000 + i, weight=w) for i, w in enumerate(weights)]


class Scripted(random.Random):
    """A Random whose `random()` returns the scripted values, in a loop."""

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(0)
        self._values = itertools.cycle(values)

    def random(self) -> float:
        return next(self._values)


def candidates(rng: random.Random, n: int) -> tuple[int, int]:
    """Replay the documented two-candidate draw of LeastRequest and PeakEwma."""
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    return i, j + 1 if j >= i else j


class TestCommon:
    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_implements_protocol(self, factory: Callable[..., LoadBalancer]) -> None:
        """Every strategy is a LoadBalancer and exposes its snapshot."""
        eps = endpoints(1, 2)
        balancer = factory(eps)
        assert isinstance(balancer, LoadBalancer)
        assert balancer.endpoints == tuple(eps)
        assert type(balancer).__name__ in repr(balancer)

    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_empty_raises(self, factory: Callable[..., LoadBalancer]) -> None:
        """No endpoints raises NoAvailableEndpointError naming the balancer."""
        with pytest.raises(NoAvailableEndpointError, match="no endpoints") as info:
            factory().pick()
        assert info.value.balancer == type(factory()).__name__

    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_all_weight_zero_raises(self, factory: Callable[..., LoadBalancer]) -> None:
        """A snapshot of weight-0 endpoints has nothing to pick."""
        with pytest.raises(NoAvailableEndpointError, match="weight 0"):
            factory(endpoints(0, 0)).pick()

    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_weight_zero_never_picked(self, factory: Callable[..., LoadBalancer]) -> None:
        """An endpoint with weight 0 is never picked."""
        eps = endpoints(1, 0, 3)
        balancer = factory(eps)
        for _ in range(200):
            chosen = balancer.pick()
            assert chosen.weight > 0
            balancer.report(chosen, Outcome.SUCCESS, 0.01)

    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_duplicate_address_rejected(self, factory: Callable[..., LoadBalancer]) -> None:
        """Two endpoints with one address are a ConfigurationError naming the field."""
        eps = [Endpoint(host="h", port=1), Endpoint(host="h", port=1, weight=2)]
        with pytest.raises(ConfigurationError) as info:
            factory(eps)
        assert info.value.field == "endpoints"
        with pytest.raises(ConfigurationError, match="duplicate"):
            factory().update(eps)

    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_update_swaps_snapshot(self, factory: Callable[..., LoadBalancer]) -> None:
        """After update() only the new endpoints are picked."""
        balancer = factory(endpoints(1, 1))
        new = endpoints(1, 2, host="10.0.0.2")
        balancer.update(new)
        assert balancer.endpoints == tuple(new)
        assert {balancer.pick() for _ in range(50)} <= set(new)

    @pytest.mark.parametrize("factory", STRATEGIES)
    def test_readers_see_either_snapshot(self, factory: Callable[..., LoadBalancer]) -> None:
        """Picks racing with updates in another thread always return an endpoint of a snapshot."""
        old, new = endpoints(1, 2, 3), endpoints(2, 1, host="10.0.0.2")
        balancer = factory(old)
        allowed = set(old) | set(new)
        stop = threading.Event()
        bad: list[object] = []

        def reader() -> None:
            while not stop.is_set():
                try:
                    chosen = balancer.pick()
                except Exception as exc:
                    bad.append(exc)
                    return
                if chosen not in allowed:
                    bad.append(chosen)
                balancer.report(chosen, Outcome.SUCCESS, 0.001)

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for thread in readers:
            thread.start()
        for k in range(300):
            balancer.update(new if k % 2 else old)
        stop.set()
        for thread in readers:
            thread.join()
        assert bad == []


class TestRoundRobin:
    @given(n=st.integers(1, 12), rounds=st.integers(1, 5))
    def test_cycles_evenly_in_order(self, n: int, rounds: int) -> None:
        """Each endpoint is picked once per round, in list order, weights ignored."""
        eps = [Endpoint(host="h", port=p, weight=p + 1) for p in range(n)]
        balancer = RoundRobin(eps)
        picks = [balancer.pick() for _ in range(n * rounds)]
        assert picks == eps * rounds

    @given(n=st.integers(1, 12), seed=st.integers(0, 2**16))
    def test_update_starts_anywhere_and_stays_even(self, n: int, seed: int) -> None:
        """After an update the cycle starts at a random position yet stays even."""
        balancer = RoundRobin(rng=random.Random(seed))
        eps = endpoints(*[1] * n)
        balancer.update(eps)
        picks = [balancer.pick() for _ in range(3 * n)]
        assert collections.Counter(picks) == dict.fromkeys(eps, 3)
        assert picks[n:] == picks[:-n]

    def test_report_is_accepted(self) -> None:
        """report() is a no-op that does not disturb the cycle."""
        eps = endpoints(1, 1)
        balancer = RoundRobin(eps)
        balancer.report(eps[0], Outcome.ERROR, 1.0)
        assert [balancer.pick(), balancer.pick()] == eps

    def test_concurrent_picks_share_the_cycle(self) -> None:
        """Threads picking together still split the picks exactly evenly."""
        eps = endpoints(*[1] * 5)
        balancer = RoundRobin(eps)
        counts: collections.Counter[Endpoint] = collections.Counter()
        lock = threading.Lock()

        def worker() -> None:
            local = collections.Counter(balancer.pick() for _ in range(1000))
            with lock:
                counts.update(local)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert counts == dict.fromkeys(eps, 800)


def _windows_exact(weights: list[int], picks: list[Endpoint], eps: list[Endpoint]) -> None:
    total = sum(weights)
    for start in range(len(picks) - total + 1):
        window = collections.Counter(picks[start : start + total])
        assert {e: window[e] for e in eps} == {e: e.weight for e in eps}


class TestWeightedRoundRobin:
    @given(weights=st.lists(st.integers(0, 9), min_size=1, max_size=7), seed=st.integers(0, 99))
    def test_any_window_gets_exact_weights(self, weights: list[int], seed: int) -> None:
        """Over ANY window of sum(weights) consecutive picks, each endpoint gets its weight."""
        if sum(weights) == 0:
            weights = [*weights, 1]
        eps = endpoints(*weights)
        balancer = WeightedRoundRobin(rng=random.Random(seed))
        balancer.update(eps)
        picks = [balancer.pick() for _ in range(3 * sum(weights))]
        _windows_exact(weights, picks, eps)

    @given(weights=st.lists(st.integers(1, 9), min_size=1, max_size=6))
    @settings(max_examples=50)
    def test_heap_walk_matches_precomputed_order(
        self, weights: list[int], monkeypatch_module: pytest.MonkeyPatch
    ) -> None:
        """A period too long to precompute is walked on a heap in the very same order."""
        eps = endpoints(*weights)
        expected = WeightedRoundRobin(eps)
        monkeypatch_module.setattr(_roundrobin, "MAX_SCHEDULE", 0)
        walked = WeightedRoundRobin(eps)
        monkeypatch_module.undo()
        assert iter(walked._state.cycle) is walked._state.cycle
        count = 3 * sum(weights)
        picks = [walked.pick() for _ in range(count)]
        assert picks == [expected.pick() for _ in range(count)]
        _windows_exact(weights, picks, eps)

    def test_spreads_a_heavy_endpoint(self) -> None:
        """Weights 5:1:1 never run the heavy endpoint more than 3 times in a row, cyclically."""
        eps = endpoints(5, 1, 1)
        balancer = WeightedRoundRobin(eps)
        picks = [balancer.pick() for _ in range(70)]
        longest = max(len(list(run)) for _, run in itertools.groupby(picks))
        assert longest == 3

    def test_equal_weights_alternate(self) -> None:
        """Equal weights (any common factor) never pick the same endpoint twice in a row."""
        balancer = WeightedRoundRobin(endpoints(4, 4, 4))
        picks = [balancer.pick() for _ in range(30)]
        assert all(a != b for a, b in itertools.pairwise(picks))


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    """A MonkeyPatch usable inside hypothesis tests (undone by each example)."""
    return pytest.MonkeyPatch()


class TestRandom:
    def test_proportions_within_bounds(self) -> None:
        """Seeded weighted picks land within 5 sigma of the weights' proportions."""
        eps = endpoints(1, 2, 3, 4)
        balancer = Random(eps, rng=random.Random(1234))
        n = 20_000
        counts = collections.Counter(balancer.pick() for _ in range(n))
        for e in eps:
            p = e.weight / 10
            assert abs(counts[e] - n * p) < 5 * math.sqrt(n * p * (1 - p))

    def test_uniform_weights_use_every_endpoint(self) -> None:
        """Equal weights pick every endpoint about equally."""
        eps = endpoints(3, 3, 3, 3)
        balancer = Random(eps, rng=random.Random(7))
        counts = collections.Counter(balancer.pick() for _ in range(4000))
        assert all(800 < counts[e] < 1200 for e in eps)

    def test_rng_drives_the_choice(self) -> None:
        """The injected rng decides: r * n picks a column of the alias table, then a side."""
        eps = endpoints(1, 3)
        picks = [Random(eps, rng=Scripted([r])).pick() for r in (0.0, 0.24, 0.25, 0.99)]
        assert picks == [eps[0], eps[0], eps[1], eps[1]]

    @given(weights=st.lists(st.integers(1, 1000), min_size=1, max_size=30))
    def test_alias_table_is_exact(self, weights: list[int]) -> None:
        """Each endpoint's total probability in the alias table equals weight / total."""
        balancer = Random(endpoints(*weights))
        state = balancer._state
        n = len(weights)
        mass: dict[Endpoint, float] = collections.defaultdict(float)
        for e, p, alias in zip(state.eps, state.prob, state.alias, strict=True):
            mass[e] += p / n
            mass[alias] += (1 - p) / n
        for e, w in zip(state.eps, weights, strict=True):
            assert mass[e] == pytest.approx(w / sum(weights), abs=1e-12)


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

    def test_weights_with_bias_one(self) -> None:
        """Unequal weights compare weight / (active + 1): 3/(2+1) ties 1/(0+1), first wins."""
        eps = endpoints(3, 1)
        balancer = LeastRequest(eps, rng=Scripted([0.0, 0.0]))
        assert [balancer.pick() for _ in range(3)] == [eps[0], eps[0], eps[0]]
        assert balancer.pick() == eps[1]

    @pytest.mark.parametrize(("bias", "expected"), [(0.0, [0, 0, 0]), (2.0, [0, 1, 0])])
    def test_bias_changes_the_weight_of_load(self, bias: float, expected: list[int]) -> None:
        """Bias 0 ignores load; with bias 2 one active request outweighs a 3x weight."""
        eps = endpoints(3, 1)
        balancer = LeastRequest(eps, active_request_bias=bias, rng=Scripted([0.0, 0.0]))
        assert [eps.index(balancer.pick()) for _ in range(3)] == expected

    @pytest.mark.parametrize("bias", [-1, math.inf, math.nan, "1", True])
    def test_bad_bias(self, bias: object) -> None:
        """A negative, infinite or non-numeric bias is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError) as info:
            LeastRequest(active_request_bias=bias)  # type: ignore[arg-type]
        assert info.value.field == "active_request_bias"

    def test_threads_keep_counts_exact(self) -> None:
        """Concurrent pick/report pairs from threads leave every count at zero."""
        eps = endpoints(*[1] * 4)
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

    @pytest.mark.parametrize("decay", [0, -1, math.inf, None])
    def test_bad_decay(self, decay: object) -> None:
        """A non-positive or infinite decay is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError) as info:
            PeakEwma(decay=decay)  # type: ignore[arg-type]
        assert info.value.field == "decay"
