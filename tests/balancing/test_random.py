"""Weighted Random with its alias table."""

from __future__ import annotations

import collections
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancing_helpers import Scripted, endpoints
from meshkit.balancing import (
    Endpoint,
    Random,
)


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
