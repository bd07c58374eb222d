"""LeastRequest: power of two choices with active-request bias."""

from __future__ import annotations

import math
import random
import threading

import pytest
from balancing_helpers import Scripted, candidates, endpoints
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.balancing import (
    Endpoint,
    LeastRequest,
    Outcome,
)


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
