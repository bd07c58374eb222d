"""What the strategies share: the snapshot base classes, addresses, state carried across."""

from __future__ import annotations

import bisect
import itertools
import random
import sys
import threading
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import attrs

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import le

if TYPE_CHECKING:
    import collections
    from collections.abc import Callable, Iterable, Mapping

    from meshkit._clock import Clock
    from meshkit._validate import Validator
    from meshkit.balancing._endpoint import Endpoint
    from meshkit.balancing._slowstart import SlowStart

__all__ = [
    "FITS_FLOAT",
    "Address",
    "RampingStrategy",
    "RandomStrategy",
    "Strategy",
    "address",
    "carry",
    "end_request",
    "pickable",
    "two_choices",
    "unavailable",
    "weighted_choice",
]

_T = TypeVar("_T")

FITS_FLOAT: Validator = le(sys.float_info.max)
"""Refuse an int too large for a float: the strategies compute in floats, where it overflows."""


class Snapshot(Protocol):
    """What every strategy's immutable state has."""

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoint set, as given to `update()`."""
        ...


class RampSnapshot(Snapshot, Protocol):
    """The state of a strategy with slow start."""

    @property
    def warm_until(self) -> float | None:
        """When the last ramping endpoint reaches full weight; None when none is ramping."""
        ...


_S = TypeVar("_S", bound=Snapshot)
_R = TypeVar("_R", bound=RampSnapshot)


class Strategy(Generic[_S]):
    """Base of the strategies: one immutable `_state` that `update()` replaces in one store."""

    __slots__ = ("_state",)

    _state: _S

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._state.endpoints)} endpoints)"

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot (including weight-0 endpoints, which are never picked)."""
        return self._state.endpoints


class RandomStrategy(Strategy[_S]):
    """Base of the strategies that draw random numbers, read a clock and serialise updates."""

    __slots__ = ("_clock", "_lock", "_rand")

    def _setup(self, rng: random.Random | None, clock: Clock) -> None:
        self._rand: Callable[[], float] = (random.Random() if rng is None else rng).random  # noqa: S311
        self._clock = clock
        self._lock = threading.Lock()


class RampingStrategy(RandomStrategy[_R]):
    """Base of the strategies with slow start, whose snapshots carry a `warm_until` time."""

    __slots__ = ("_slow_start",)

    _slow_start: SlowStart | None

    def _ramping(self, state: _R) -> tuple[SlowStart, float] | None:
        """Return the slow start and the time if `state` is still ramping, else None.

        A finished ramp is dropped from the snapshot (see `_settle`), so later picks take
        the fast path again.
        """
        now = self._clock.now()
        slow_start, until = self._slow_start, state.warm_until
        if slow_start is None or until is None or now >= until:
            self._settle(state)
            return None
        return slow_start, now

    def _settle(self, state: _R) -> None:
        """Drop the finished ramp from `state`, unless an update replaced it meanwhile."""
        with self._lock:
            if self._state is state:
                # Every RampSnapshot is an attrs class, which the TypeVar's bound cannot say.
                self._state = attrs.evolve(state, warm_until=None)  # type: ignore[misc]


Address = tuple[str, int]
"""The identity of an endpoint across snapshots: `(host, port)` (its weight may change)."""


def address(endpoint: Endpoint) -> Address:
    """Return the `(host, port)` pair that identifies `endpoint` across updates."""
    return (endpoint.host, endpoint.port)


def pickable(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """Return the endpoints with a positive weight, in order (weight 0 is never picked)."""
    return tuple(e for e in endpoints if e.weight > 0)


def carry(
    old: Mapping[Address, _T],
    endpoints: Iterable[Endpoint],
    factory: Callable[[], _T],
    busy: Callable[[_T], object] | None = None,
) -> dict[Address, _T]:
    """Return per-address state for `endpoints`, reusing `old`'s entry for a kept address.

    With `busy`, an entry of a removed address is kept too while `busy(entry)` is true (it
    has requests in flight), so their reports still land and the address, if it comes back
    (an outlier ejection ending), is not mistaken for an idle one.
    """
    state: dict[Address, _T] = {}
    for endpoint in endpoints:
        key = address(endpoint)
        found = old.get(key)
        state[key] = factory() if found is None else found
    if busy is not None:
        for key, entry in old.items():
            if key not in state and busy(entry):
                state[key] = entry
    return state


def unavailable(balancer: str, endpoints: tuple[Endpoint, ...]) -> NoAvailableEndpointError:
    """Build the error a balancer raises when its snapshot has nothing to pick."""
    if not endpoints:
        return NoAvailableEndpointError(balancer)
    return NoAvailableEndpointError(balancer, f"all {len(endpoints)} endpoints have weight 0")


def two_choices(rand: Callable[[], float], n: int) -> tuple[int, int]:
    """Draw two distinct indexes below `n` (>= 2) uniformly: the power of two choices' draw.

    The first is `int(r1 * n)`; the second `int(r2 * (n - 1))`, moved one up when it is at or
    past the first, where `r1, r2` are two successive `rand()` values.
    """
    i = int(rand() * n)
    j = int(rand() * (n - 1))
    return i, j + 1 if j >= i else j


def weighted_choice(rand: Callable[[], float], weights: Iterable[float]) -> int:
    """Draw an index with probability proportional to its weight (O(n): fresh weights).

    A zero weight is never drawn while another is positive.
    """
    cumulative = list(itertools.accumulate(weights))
    i = bisect.bisect_right(cumulative, rand() * cumulative[-1])
    return min(i, len(cumulative) - 1)  # rand() * total may round up to the total


def end_request(active: collections.deque[None]) -> None:
    """Take one token off an endpoint's active-request deque; an empty one stays empty.

    `pop()` on a deque is atomic, so concurrent reports need no lock: one that finds the
    deque emptied by another since its check does nothing.
    """
    if active:
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on the report path
            active.pop()
        except IndexError:  # pragma: no cover - a concurrent report emptied it first
            pass
