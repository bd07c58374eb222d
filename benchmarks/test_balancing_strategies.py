"""Picks per second of each balancing strategy at 10, 100 and 1000 endpoints.

There is no peer package for these strategies, so each group carries a bare floor: the same
loop indexing a tuple with `next(counter) % n`, which is the least any pick can cost in
Python. One round times `PICKS` picks in a tight loop (so fixture overhead does not dominate);
divide a round's time by `PICKS` for the cost of one pick (`extra_info["ns_per_pick"]`).

    .venv/bin/pytest benchmarks/test_balancing_strategies.py --benchmark-only
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING

import pytest

from meshkit.balancing import (
    Endpoint,
    LeastRequest,
    LoadBalancer,
    OutlierDetector,
    PeakEwma,
    Random,
    RoundRobin,
    WeightedRoundRobin,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_benchmark.fixture import BenchmarkFixture

PICKS = 1000
SIZES = [
    pytest.param(n, marks=pytest.mark.benchmark(group=f"balancing-strategies-{n:04d}-endpoints"))
    for n in (10, 100, 1000)
]


def _endpoints(n: int, *, weighted: bool) -> list[Endpoint]:
    return [
        Endpoint(
            host=f"10.0.{i // 250}.{i % 250}", port=8080, weight=(i % 5) + 1 if weighted else 1
        )
        for i in range(n)
    ]


def _least_request(eps: list[Endpoint]) -> LoadBalancer:
    return LeastRequest(eps, rng=random.Random(1))


STRATEGIES: dict[str, tuple[Callable[[list[Endpoint]], LoadBalancer], bool]] = {
    "RoundRobin": (RoundRobin, False),
    "WeightedRoundRobin": (WeightedRoundRobin, True),
    "Random": (lambda eps: Random(eps, rng=random.Random(1)), False),
    "Random-weighted": (lambda eps: Random(eps, rng=random.Random(1)), True),
    "LeastRequest": (_least_request, False),
    "LeastRequest-weighted": (_least_request, True),
    "PeakEwma": (lambda eps: PeakEwma(eps, rng=random.Random(1)), False),
    "OutlierDetector(RoundRobin)": (lambda eps: OutlierDetector(RoundRobin(eps)), False),
}


def _reset_active(balancer: LoadBalancer) -> None:
    """Forget the active requests the last round's picks left (they are never reported)."""
    if isinstance(balancer, LeastRequest):
        for counter in balancer._state.counters.values():
            counter.clear()
    elif isinstance(balancer, PeakEwma):
        for cell in balancer._state.cells:
            cell.active.clear()


def _measure(
    benchmark: BenchmarkFixture, run: Callable[[], object], setup: Callable[[], object]
) -> None:
    benchmark.pedantic(  # type: ignore[no-untyped-call]  # pytest-benchmark is untyped here
        run, setup=setup, rounds=200, warmup_rounds=5, iterations=1
    )
    stats = benchmark.stats
    assert stats is not None
    benchmark.extra_info["ns_per_pick"] = round(stats.stats.median / PICKS * 1e9, 1)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_pick(benchmark: BenchmarkFixture, name: str, n: int) -> None:
    factory, weighted = STRATEGIES[name]
    balancer = factory(_endpoints(n, weighted=weighted))
    pick = balancer.pick

    def run() -> None:
        for _ in itertools.repeat(None, PICKS):
            pick()

    _measure(benchmark, run, lambda: _reset_active(balancer))
    assert balancer.pick() in balancer.endpoints


@pytest.mark.parametrize("n", SIZES)
def test_floor(benchmark: BenchmarkFixture, n: int) -> None:
    endpoints = tuple(_endpoints(n, weighted=False))
    counter = itertools.count()

    def run() -> None:
        for _ in itertools.repeat(None, PICKS):
            _ = endpoints[next(counter) % n]

    _measure(benchmark, run, lambda: None)
