"""Weighted random choice in O(1): a per-snapshot alias table and one random draw per pick."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit.balancing._endpoint import Endpoint, Outcome, check_endpoints
from meshkit.balancing._slowstart import WARM, SlowStart, ramped, start_times, warm_until
from meshkit.balancing._snapshot import (
    Address,
    RampingStrategy,
    address,
    pickable,
    unavailable,
    weighted_choice,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

__all__ = ["Random"]


@attrs.frozen
class _State:
    endpoints: tuple[Endpoint, ...]
    eps: tuple[Endpoint, ...]
    n: int
    weights: tuple[int, ...]
    prob: tuple[float, ...]
    alias: tuple[Endpoint, ...]
    starts: dict[Address, float]
    ramp: tuple[float, ...]
    warm_until: float | None


@final
class Random(RampingStrategy[_State]):
    """Pick an endpoint at random, in proportion to its weight.

    A pick is O(1) whatever the weights: each snapshot precomputes Vose's alias table, and a
    pick draws one `r = rng.random() * n`, takes column `i = int(r)`, and returns endpoint `i`
    if `r - i < prob[i]`, else the column's alias. While an endpoint is ramping under
    `slow_start` the effective weights change with time, so a pick instead bisects freshly
    computed cumulative weights (O(n)) until the ramp is over.

    Args:
        endpoints: The initial endpoint set (these start at full weight).
        rng: The random source (inject a seeded `random.Random` in tests).
        slow_start: Ramp for endpoints added later by `update()`; None for no ramp.
        clock: Time source of the ramp.

    Raises:
        ConfigurationError: If an item is not an `Endpoint` or two share an address.
    """

    __slots__ = ()

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        rng: random.Random | None = None,
        slow_start: SlowStart | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._setup(rng, clock)
        self._slow_start = slow_start
        checked = check_endpoints(endpoints)
        self._state = self._build(checked, {address(e): WARM for e in checked})

    def pick(self, key: str | bytes | None = None) -> Endpoint:  # noqa: ARG002 - protocol
        """Return a random endpoint, weighted (`key` is ignored).

        Raises:
            NoAvailableEndpointError: If no endpoint has a positive weight.
        """
        state = self._state
        if state.warm_until is None:
            r = self._rand() * state.n
            i = int(r)
            try:
                return state.eps[i] if r - i < state.prob[i] else state.alias[i]
            except IndexError:
                raise unavailable("Random", state.endpoints) from None
        return self._pick_ramping(state)

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Swap in a new endpoint set; new addresses ramp up under `slow_start`.

        Raises:
            ConfigurationError: If an item is not an `Endpoint` or two share an address.
        """
        checked = check_endpoints(endpoints)
        with self._lock:
            starts = start_times(self._state.starts, checked, self._clock.now())
            self._state = self._build(checked, starts)

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:
        """Accept a call's outcome; random choice does not learn from it."""

    def _build(self, endpoints: tuple[Endpoint, ...], starts: dict[Address, float]) -> _State:
        eps = pickable(endpoints)
        weights = tuple(e.weight for e in eps)
        prob, alias = _alias_table(weights)
        ramp = tuple(starts[address(e)] for e in eps)
        return _State(
            endpoints=endpoints,
            eps=eps,
            n=len(eps),
            weights=weights,
            prob=prob,
            alias=tuple(eps[i] for i in alias),
            starts=starts,
            ramp=ramp,
            warm_until=warm_until(self._slow_start, ramp, self._clock.now()),
        )

    def _pick_ramping(self, state: _State) -> Endpoint:
        ramping = self._ramping(state)
        if ramping is None:
            return self.pick()
        return state.eps[weighted_choice(self._rand, ramped(*ramping, state.weights, state.ramp))]


def _alias_table(weights: tuple[int, ...]) -> tuple[tuple[float, ...], list[int]]:
    """Build Vose's alias table: column `i` gives `i` with probability `prob[i]`, else its alias."""
    n = len(weights)
    total = sum(weights)
    scaled = [w * n / total for w in weights]
    prob = [1.0] * n
    alias = list(range(n))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        less, more = small.pop(), large.pop()
        prob[less], alias[less] = scaled[less], more
        scaled[more] += scaled[less] - 1.0
        (small if scaled[more] < 1.0 else large).append(more)
    return tuple(prob), alias
