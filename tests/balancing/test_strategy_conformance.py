"""What every strategy shares: the LoadBalancer protocol, snapshots, weight 0, errors, threads."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from balancing_helpers import endpoints
from meshkit import ConfigurationError, NoAvailableEndpointError
from meshkit.balancing import (
    Endpoint,
    LeastRequest,
    LoadBalancer,
    Outcome,
    PeakEwma,
    Random,
    RoundRobin,
    WeightedRoundRobin,
)

if TYPE_CHECKING:
    from collections.abc import Callable


STRATEGIES: list[Callable[..., LoadBalancer]] = [
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastRequest,
    PeakEwma,
]


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
