"""Round robin and smooth weighted round robin: a precomputed cycle, advanced without a lock."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
from typing import TYPE_CHECKING, final

import attrs

from meshkit.balancing._endpoint import Endpoint, Outcome, check_endpoints
from meshkit.balancing._snapshot import Strategy, pickable, unavailable

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

__all__ = ["RoundRobin", "WeightedRoundRobin"]

MAX_SCHEDULE = 1 << 16
"""Longest weighted schedule precomputed per snapshot; a longer one is walked on a heap."""


@attrs.frozen
class _State:
    endpoints: tuple[Endpoint, ...]
    cycle: Iterator[Endpoint]


class _Cycler(Strategy[_State]):
    """Shared code: a snapshot is the endpoint tuple plus the iterator `pick()` advances.

    `next()` on an `itertools.cycle` runs in C without releasing the GIL, so concurrent picks
    neither lock nor skip nor repeat a slot; `update()` builds the new cycle fully and then
    assigns the one `_state` attribute.
    """

    __slots__ = ("_rng",)

    def __init__(
        self, endpoints: Iterable[Endpoint] = (), *, rng: random.Random | None = None
    ) -> None:
        self._rng = random.Random() if rng is None else rng  # noqa: S311 - not cryptography
        self._state = self._build(check_endpoints(endpoints), first=True)

    def pick(self, key: str | bytes | None = None) -> Endpoint:  # noqa: ARG002 - protocol
        """Return the next endpoint of the cycle (`key` is ignored).

        Raises:
            NoAvailableEndpointError: If no endpoint has a positive weight.
        """
        try:
            return next(self._state.cycle)
        except StopIteration:
            raise unavailable(type(self).__name__, self._state.endpoints) from None

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Swap in a new endpoint set; the new cycle starts at a random position.

        Raises:
            ConfigurationError: If an item is not an `Endpoint` or two share an address.
        """
        self._state = self._build(check_endpoints(endpoints), first=False)

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:
        """Accept a call's outcome; round robin does not learn from it."""

    def _build(self, endpoints: tuple[Endpoint, ...], *, first: bool) -> _State:
        order = self._order(pickable(endpoints))
        if isinstance(order, _HeapSchedule):
            return _State(endpoints, order)
        offset = 0 if first or not order else self._rng.randrange(len(order))
        return _State(endpoints, itertools.cycle(order[offset:] + order[:offset]))

    def _order(self, endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...] | _HeapSchedule:
        return endpoints


@final
class RoundRobin(_Cycler):
    """Pick endpoints in turn, ignoring weights (except that weight 0 is never picked).

    The first snapshot starts at its first endpoint; each later `update()` starts the new
    cycle at a random position (from `rng`), so frequent updates do not favour the first.

    Args:
        endpoints: The initial endpoint set.
        rng: Source of the start position after updates (inject a seeded one in tests).

    Raises:
        ConfigurationError: If an item is not an `Endpoint` or two share an address.
    """

    __slots__ = ()


@final
class WeightedRoundRobin(_Cycler):
    """Smooth weighted round robin: exact proportions over any `sum(weights)` picks, no bursts.

    Weights are first divided by their greatest common divisor. Picks repeat one period of
    `sum(weights)` slots, in which endpoint `i` has `weight` slots at the virtual times
    `(k + phase_i) / weight` for `k = 0 .. weight - 1`, taken in time order (ties: list
    order). Each endpoint's slots are thus evenly spaced, and the phases (multiples of the
    golden ratio, modulo 1) keep endpoints of equal weight from landing on the same times,
    which would make bursts. Because the picks repeat that period, every window of
    `sum(weights)` consecutive picks holds each endpoint exactly `weight` times.

    The period is precomputed per snapshot when it has at most `MAX_SCHEDULE` slots, making a
    pick one lock-free `next()`; a longer period is walked on a heap under a short lock (the
    same order, one to two microseconds per pick). Building a period of 65,536 slots at
    `update()` takes some 50 ms.

    Args:
        endpoints: The initial endpoint set.
        rng: Source of the start position after updates (inject a seeded one in tests).

    Raises:
        ConfigurationError: If an item is not an `Endpoint` or two share an address.
    """

    __slots__ = ()

    def _order(self, endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...] | _HeapSchedule:
        divisor = math.gcd(*(e.weight for e in endpoints)) or 1
        weights = [e.weight // divisor for e in endpoints]
        if sum(weights) > MAX_SCHEDULE:
            return _HeapSchedule(endpoints, weights)
        slots = [(_time(i, k, w), i) for i, w in enumerate(weights) for k in range(w)]
        slots.sort()
        return tuple(endpoints[i] for _, i in slots)


def _time(i: int, k: int, weight: int) -> float:
    """Return the virtual time of slot `k` of endpoint `i` in a period, in [0, 1)."""
    return (k + (i * _GOLDEN) % 1.0) / weight


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class _HeapSchedule:
    """The weighted order for a long period: a heap of `(period, time, i, k)`, under a lock.

    Keeping the period number apart from the in-period time makes every period repeat the
    precomputed order exactly, however long the balancer runs.
    """

    __slots__ = ("_endpoints", "_heap", "_lock", "_weights")

    def __init__(self, endpoints: Sequence[Endpoint], weights: Sequence[int]) -> None:
        self._endpoints = endpoints
        self._weights = weights
        self._heap = [(0, _time(i, 0, w), i, 0) for i, w in enumerate(weights)]
        heapq.heapify(self._heap)
        self._lock = threading.Lock()

    def __iter__(self) -> _HeapSchedule:
        return self

    def __next__(self) -> Endpoint:
        with self._lock:
            period, _, i, k = self._heap[0]
            k += 1
            if k == self._weights[i]:
                period, k = period + 1, 0
            heapq.heapreplace(self._heap, (period, _time(i, k, self._weights[i]), i, k))
        return self._endpoints[i]
