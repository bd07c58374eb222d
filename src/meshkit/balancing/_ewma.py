"""Peak EWMA (Finagle): prefer the endpoint with the lowest latency x outstanding requests."""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._validate import check, finite, ge, positive_seconds
from meshkit.balancing._endpoint import Endpoint, Outcome, check_endpoints
from meshkit.balancing._snapshot import (
    FITS_FLOAT,
    Address,
    RandomStrategy,
    address,
    carry,
    end_request,
    pickable,
    two_choices,
    unavailable,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

__all__ = ["PeakEwma"]

PENALTY = 1e9
"""Load of an endpoint with requests outstanding but no latency observed yet (seconds)."""

_NOT_NEGATIVE = ge(0)

_UNSAMPLED = -1.0
"""The average before the first sample: below any latency, so the first one replaces it."""


class _Cell:
    """Per-address load: the (cost, stamp) pair, swapped as one tuple, and active tokens."""

    __slots__ = ("active", "ewma")

    def __init__(self, now: float) -> None:
        self.ewma = (_UNSAMPLED, now)
        self.active: collections.deque[None] = collections.deque()


def _busy(cell: _Cell) -> bool:
    return bool(cell.active)


@attrs.frozen
class _State:
    endpoints: tuple[Endpoint, ...]
    eps: tuple[Endpoint, ...]
    n: int
    weights: tuple[float, ...]
    cells: tuple[_Cell, ...]
    by_address: dict[Address, _Cell]


@final
class PeakEwma(RandomStrategy[_State]):
    """Send each call to the cheaper of two random endpoints, cost = latency x load (Finagle).

    Each endpoint keeps an exponentially weighted moving average of its reported latencies
    that jumps straight up to a slower sample ("peak" sensitivity) and decays with time
    constant `decay` otherwise; between samples it also decays towards 0, so an idle slow
    endpoint is eventually tried again. The cost of an endpoint is
    `ewma * (active + 1) / weight`; one with requests outstanding but no sample yet costs
    `PENALTY`. A pick draws two distinct candidates as `LeastRequest` does (ties: the first).

    Args:
        endpoints: The initial endpoint set.
        decay: Time constant of the moving average, in seconds (> 0; Finagle uses 10).
        rng: The random source (inject a seeded `random.Random` in tests).
        clock: Time source of the decay.

    Raises:
        ConfigurationError: If `decay` is not a positive finite number, an item is not an
            `Endpoint`, or two share an address.
    """

    __slots__ = ("_decay",)

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        decay: float = 10.0,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._decay = float(check("decay", decay, positive_seconds, FITS_FLOAT))
        self._setup(rng, clock)
        self._state = self._build(check_endpoints(endpoints), {})

    def cost(self, endpoint: Endpoint) -> float:
        """Return the current cost of `endpoint` (0.0 for an unknown address)."""
        state = self._state
        cell = state.by_address.get(address(endpoint))
        if cell is None or endpoint.weight == 0:
            return 0.0
        return self._cost(cell, float(endpoint.weight), self._clock.now())

    def pick(self, key: str | bytes | None = None) -> Endpoint:  # noqa: ARG002 - protocol
        """Return the cheaper of two random endpoints and count a request on it.

        Raises:
            NoAvailableEndpointError: If no endpoint has a positive weight.
        """
        state = self._state
        n = state.n
        if n < 2:  # noqa: PLR2004 - two choices
            if n == 0:
                raise unavailable("PeakEwma", state.endpoints)
            i = 0
        else:
            i, j = two_choices(self._rand, n)
            now = self._clock.now()
            cost_i = self._cost(state.cells[i], state.weights[i], now)
            if self._cost(state.cells[j], state.weights[j], now) < cost_i:
                i = j
        state.cells[i].active.append(None)
        return state.eps[i]

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Swap in a new endpoint set, keeping the averages of kept addresses.

        A removed address keeps its average and active count while picks of it are
        unreported, so that if it comes back (as after an outlier ejection) its requests
        still in flight count.

        Raises:
            ConfigurationError: If an item is not an `Endpoint` or two share an address.
        """
        checked = check_endpoints(endpoints)
        with self._lock:
            self._state = self._build(checked, self._state.by_address)

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:  # noqa: ARG002
        """Fold `latency` into the endpoint's average and end one active request.

        Raises:
            ConfigurationError: If `latency` is not a finite number >= 0 (the report is then
                rejected whole: a NaN would otherwise poison the average for good).
        """
        # Fast path: a plain float in range skips the validators (~0.9 us, a third of a report).
        rtt = (
            latency
            if type(latency) is float and 0.0 <= latency < math.inf
            else check("latency", latency, finite, _NOT_NEGATIVE, FITS_FLOAT)
        )
        cell = self._state.by_address.get((endpoint.host, endpoint.port))
        if cell is None:
            return
        end_request(cell.active)
        with self._lock:
            cost, stamp = cell.ewma
            now = self._clock.now()
            w = math.exp(-max(now - stamp, 0.0) / self._decay)
            cost = rtt if rtt > cost * w else cost * w + rtt * (1.0 - w)
            cell.ewma = (cost, now)

    def _cost(self, cell: _Cell, weight: float, now: float) -> float:
        cost, stamp = cell.ewma
        active = len(cell.active)
        if cost < 0.0:  # no sample yet (a 0.0 s sample is a sample: a coarse or fake clock)
            return (PENALTY + active) / weight if active else 0.0
        cost *= math.exp(-max(now - stamp, 0.0) / self._decay)
        return cost * (active + 1) / weight

    def _build(self, endpoints: tuple[Endpoint, ...], old: dict[Address, _Cell]) -> _State:
        eps = pickable(endpoints)
        now = self._clock.now()
        by_address = carry(old, endpoints, lambda: _Cell(now), busy=_busy)
        return _State(
            endpoints=endpoints,
            eps=eps,
            n=len(eps),
            weights=tuple(float(e.weight) for e in eps),
            cells=tuple(by_address[address(e)] for e in eps),
            by_address=by_address,
        )
