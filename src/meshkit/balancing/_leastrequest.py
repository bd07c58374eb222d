"""Least request as Envoy's: two random choices, or a load-aware weighted schedule."""

from __future__ import annotations

import collections
import heapq
import math
import threading
from typing import TYPE_CHECKING, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._validate import check, in_range
from meshkit.balancing._endpoint import Endpoint, Outcome, check_endpoints
from meshkit.balancing._slowstart import WARM, SlowStart, ramped, start_times, warm_until
from meshkit.balancing._snapshot import (
    Address,
    RampingStrategy,
    address,
    carry,
    end_request,
    pickable,
    two_choices,
    unavailable,
    weighted_choice,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable

__all__ = ["LeastRequest"]

# One deque per endpoint holds a token per active request: `append()`, `pop()` and `len()` on
# a deque are atomic, so counting needs no lock and stays correct under threads.
_Active = collections.deque[None]

_BIAS = in_range(0, 100)
"""Accepted `active_request_bias`: beyond 100, (active + 1) ** bias is past any useful scale."""

_MAX_LOAD_EXPONENT = 690.0
"""Largest natural log of `(active + 1) ** bias` used: e**690 is near the float maximum."""


def load_factor(active: int, bias: float) -> float:
    """Return `(active + 1) ** bias`, the divisor of an endpoint's weight under load.

    An extreme bias saturates near the float maximum instead of raising OverflowError.
    """
    if bias == 1.0:
        return active + 1.0
    return math.exp(min(bias * math.log1p(active), _MAX_LOAD_EXPONENT))


class _Schedule:
    """Envoy's earliest-deadline-first schedule, which least request uses for unequal weights.

    Each endpoint waits in a heap with a deadline; a pick takes the earliest (ties: the one
    queued first) and queues that endpoint again one period later, the period being
    `(active + 1) ** bias / weight` with its load read at that moment. An endpoint's load is
    thus read each time it is picked; a waiting endpoint keeps its deadline, which the picks
    of the others reach, so every endpoint is picked again. At zero load each endpoint gets
    `weight / sum(weights)` of the picks.
    """

    __slots__ = ("_active", "_bias", "_heap", "_lock", "_queued", "_weights")

    def __init__(
        self,
        weights: tuple[float, ...],
        active: tuple[_Active, ...],
        bias: float,
        rand: Callable[[], float],
    ) -> None:
        self._weights, self._active, self._bias = weights, active, bias
        # Random first deadlines (a fraction of each one's period, its load counted as in
        # Envoy's schedule, which a rebuild on every update would otherwise forget) so that
        # balancers built at the same moment do not all start on the same endpoint.
        self._heap = [(rand() * self._period(i), i, i) for i in range(len(weights))]
        heapq.heapify(self._heap)
        self._queued = len(weights)
        self._lock = threading.Lock()

    def pick(self) -> int:
        """Return the index of the endpoint due first, and queue it again one period later."""
        with self._lock:
            deadline, _, i = self._heap[0]
            heapq.heapreplace(self._heap, (deadline + self._period(i), self._queued, i))
            self._queued += 1
        return i

    def _period(self, i: int) -> float:
        """Return `1 / effective weight` of endpoint `i`: `(active + 1) ** bias / weight`."""
        return load_factor(len(self._active[i]), self._bias) / self._weights[i]


@attrs.frozen
class _State:
    endpoints: tuple[Endpoint, ...]
    eps: tuple[Endpoint, ...]
    n: int
    weights: tuple[float, ...]
    active: tuple[_Active, ...]
    schedule: _Schedule | None
    counters: dict[Address, _Active]
    starts: dict[Address, float]
    ramp: tuple[float, ...]
    warm_until: float | None


@final
class LeastRequest(RampingStrategy[_State]):
    """Send each call where the fewest requests are active, weighted (Envoy's LEAST_REQUEST).

    With equal weights a pick draws two distinct candidates uniformly (the first is
    `int(r1 * n)` and the second `int(r2 * (n - 1))`, moved one up when it is at or past the
    first, where `r1, r2` are successive `rng.random()` values and `n` the number of
    positive-weight endpoints) and takes the one with fewer active requests (the first on a
    tie). With unequal weights it follows Envoy's weighted schedule instead: earliest deadline
    first, each endpoint queued again after a pick at `1 / effective weight`, where the
    effective weight is `weight / (active + 1) ** active_request_bias` at that moment. At zero
    load each endpoint then gets `weight / sum(weights)` of the picks, and no endpoint is
    starved for good: a loaded one is only spaced out more, by a factor that grows as
    `(active + 1) ** active_request_bias` (so keep the bias near 1). While a new endpoint
    ramps up under `slow_start`, a pick instead draws an endpoint at random in proportion to
    `ramped weight / (active + 1) ** active_request_bias`, recomputed for every endpoint at
    each pick (O(n)), until the ramp ends. A pick counts one active request on the endpoint;
    `report()` ends it.

    Args:
        endpoints: The initial endpoint set (these start at full weight).
        active_request_bias: How strongly active requests lower an endpoint's weight (0 to
            100; 0 makes unequal weights a plain weighted round robin that ignores load).
        rng: The random source (inject a seeded `random.Random` in tests).
        slow_start: Ramp for endpoints added later by `update()`; None for no ramp.
        clock: Time source of the ramp.

    Raises:
        ConfigurationError: If `active_request_bias` is not a number in [0, 100], an item is
            not an `Endpoint`, or two share an address.
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
        self._bias = float(check("active_request_bias", active_request_bias, _BIAS))
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
        """Return the least loaded endpoint, as the weights say, and count a request on it.

        Raises:
            NoAvailableEndpointError: If no endpoint has a positive weight.
        """
        state = self._state
        n = state.n
        if n < 2:  # noqa: PLR2004 - two choices
            if n == 0:
                raise unavailable("LeastRequest", state.endpoints)
            i = 0
        elif state.warm_until is not None:
            i = self._pick_ramping(state)
        elif state.schedule is not None:
            i = state.schedule.pick()
        else:
            i, j = two_choices(self._rand, n)
            if len(state.active[j]) < len(state.active[i]):
                i = j
        state.active[i].append(None)
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
        if counter is not None:
            end_request(counter)

    def _pick_ramping(self, state: _State) -> int:
        """Draw an index in proportion to `ramped weight / (active + 1) ** bias`, all fresh.

        The schedule rereads a weight only when it picks that endpoint, so a ramp factor that
        starts near zero would park a new endpoint at a far deadline; a draw rereads them all.
        """
        ramping = self._ramping(state)
        weights = state.weights if ramping is None else ramped(*ramping, state.weights, state.ramp)
        bias = self._bias
        loads = [load_factor(len(active), bias) for active in state.active]
        return weighted_choice(self._rand, [w / f for w, f in zip(weights, loads, strict=True)])

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
        active = tuple(counters[address(e)] for e in eps)
        uniform = len(set(weights)) <= 1
        return _State(
            endpoints=endpoints,
            eps=eps,
            n=len(eps),
            weights=weights,
            active=active,
            schedule=None if uniform else _Schedule(weights, active, self._bias, self._rand),
            counters=counters,
            starts=starts,
            ramp=ramp,
            warm_until=warm_until(self._slow_start, ramp, self._clock.now()),
        )
