"""Least request: power of two choices with Envoy's active-request bias."""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._validate import finite, ge
from meshkit.balancing._endpoint import Endpoint, Outcome, check_endpoints
from meshkit.balancing._slowstart import WARM, SlowStart, start_times, warm_until
from meshkit.balancing._snapshot import (
    Address,
    RampingStrategy,
    address,
    carry,
    check,
    pickable,
    two_choices,
    unavailable,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

__all__ = ["LeastRequest"]

# One deque per endpoint holds a token per active request: `append()`, `pop()` and `len()` on
# a deque are atomic, so counting needs no lock and stays correct under threads.
_Active = collections.deque[None]


@attrs.frozen
class _State:
    endpoints: tuple[Endpoint, ...]
    eps: tuple[Endpoint, ...]
    n: int
    weights: tuple[float, ...]
    active: tuple[_Active, ...]
    uniform: bool
    counters: dict[Address, _Active]
    starts: dict[Address, float]
    ramp: tuple[float, ...]
    warm_until: float | None


@final
class LeastRequest(RampingStrategy[_State]):
    """Send each call to the less loaded of two random endpoints (Envoy's LEAST_REQUEST).

    A pick draws two distinct candidates uniformly: the first is `int(r1 * n)` and the second
    `int(r2 * (n - 1))`, moved one up when it is at or past the first, where `r1, r2` are
    successive `rng.random()` values and `n` the number of positive-weight endpoints. With
    equal weights it takes the candidate with fewer active requests (the first on a tie). With
    unequal weights it takes the higher `weight / (active + 1) ** active_request_bias`, as
    Envoy does. A pick counts one active request on the endpoint; `report()` ends it.

    Args:
        endpoints: The initial endpoint set (these start at full weight).
        active_request_bias: How strongly active requests lower an endpoint's weight (>= 0;
            0 ignores load, making the choice weighted random between the two).
        rng: The random source (inject a seeded `random.Random` in tests).
        slow_start: Ramp for endpoints added later by `update()`; None for no ramp.
        clock: Time source of the ramp.

    Raises:
        ConfigurationError: If `active_request_bias` is negative or not finite, an item is not
            an `Endpoint`, or two share an address.
    """

    __slots__ = ("_bias",)

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        active_request_bias: float = 1.0,
        rng: random.Random | None = None,
        slow_start: SlowStart | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._bias = float(check("active_request_bias", active_request_bias, finite, ge(0)))
        self._setup(rng, clock)
        self._slow_start = slow_start
        checked = check_endpoints(endpoints)
        self._state = self._build(checked, {}, {address(e): WARM for e in checked})

    def active(self, endpoint: Endpoint) -> int:
        """Return the number of picks of `endpoint` not yet reported (0 if unknown).

        This includes picks made before an `update()` that removed the address, until they
        are reported.
        """
        counter = self._state.counters.get(address(endpoint))
        return 0 if counter is None else len(counter)

    def pick(self, key: str | bytes | None = None) -> Endpoint:  # noqa: ARG002 - protocol
        """Return the less loaded of two random endpoints and count a request on it.

        Raises:
            NoAvailableEndpointError: If no endpoint has a positive weight.
        """
        state = self._state
        n = state.n
        if n < 2:  # noqa: PLR2004 - two choices
            if n == 0:
                raise unavailable("LeastRequest", state.endpoints)
            state.active[0].append(None)
            return state.eps[0]
        i, j = two_choices(self._rand, n)
        active = state.active
        if state.uniform and state.warm_until is None:
            if len(active[j]) < len(active[i]):
                i = j
        elif not self._first_wins(state, i, j):
            i = j
        active[i].append(None)
        return state.eps[i]

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Swap in a new endpoint set, keeping the active counts of kept addresses.

        A removed address keeps its count while picks of it are unreported, so that if it
        comes back (as after an outlier ejection) its requests still in flight count.

        Raises:
            ConfigurationError: If an item is not an `Endpoint` or two share an address.
        """
        checked = check_endpoints(endpoints)
        with self._lock:
            old = self._state
            starts = start_times(old.starts, checked, self._clock.now())
            self._state = self._build(checked, old.counters, starts)

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:  # noqa: ARG002
        """End one active request on `endpoint` (ignored for an address no longer present)."""
        counter = self._state.counters.get((endpoint.host, endpoint.port))
        if counter:
            try:  # noqa: SIM105 - cheaper than contextlib.suppress on the report path
                counter.pop()
            except IndexError:  # pragma: no cover - a concurrent report emptied it first
                pass

    def _first_wins(self, state: _State, i: int, j: int) -> bool:
        wi, wj = state.weights[i], state.weights[j]
        if state.warm_until is not None:
            wi, wj = self._ramped(state, i, j)
        ai, aj = len(state.active[i]) + 1.0, len(state.active[j]) + 1.0
        bias = self._bias
        if bias == 1.0:
            return wi * aj >= wj * ai
        return wi / math.pow(ai, bias) >= wj / math.pow(aj, bias)

    def _ramped(self, state: _State, i: int, j: int) -> tuple[float, float]:
        wi, wj = state.weights[i], state.weights[j]
        ramping = self._ramping(state)
        if ramping is None:
            return wi, wj
        slow_start, now = ramping
        ri, rj = (
            wi * slow_start.factor(now - state.ramp[i]),
            wj * slow_start.factor(now - state.ramp[j]),
        )
        if ri == rj == 0.0:  # both at a zero floor: compare their weights (and loads) instead
            return wi, wj
        return ri, rj

    def _build(
        self,
        endpoints: tuple[Endpoint, ...],
        old_counters: dict[Address, _Active],
        starts: dict[Address, float],
    ) -> _State:
        eps = pickable(endpoints)
        counters = carry(old_counters, endpoints, collections.deque, busy=len)
        weights = tuple(float(e.weight) for e in eps)
        ramp = tuple(starts[address(e)] for e in eps)
        return _State(
            endpoints=endpoints,
            eps=eps,
            n=len(eps),
            weights=weights,
            active=tuple(counters[address(e)] for e in eps),
            uniform=len(set(weights)) <= 1,
            counters=counters,
            starts=starts,
            ramp=ramp,
            warm_until=warm_until(self._slow_start, ramp, self._clock.now()),
        )
