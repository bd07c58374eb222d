"""RoundRobin and smooth WeightedRoundRobin."""

from __future__ import annotations

import collections
import itertools
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancing_helpers import endpoints
from meshkit.balancing import (
    Endpoint,
    Outcome,
    RoundRobin,
    WeightedRoundRobin,
    _roundrobin,
)


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
