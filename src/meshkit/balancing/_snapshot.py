"""What the strategies share: the snapshot base classes, addresses, state carried across."""

from __future__ import annotations

import math
import random
import threading
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import attrs

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import require

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from meshkit._clock import Clock
    from meshkit.balancing._endpoint import Endpoint
    from meshkit.balancing._slowstart import SlowStart

__all__ = [
    "Address",
    "RampingStrategy",
    "RandomStrategy",
    "Strategy",
    "address",
    "carry",
    "number",
    "pickable",
    "unavailable",
]

_T = TypeVar("_T")


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


@attrs.define(eq=False, init=False, repr=False)
class Strategy(Generic[_S]):
    """Base of the strategies: one immutable `_state` that `update()` replaces in one store.

    Fields are `init=False` throughout (each strategy has its own `__init__`), which keeps
    the attrs-generated `__attrs_init__` signatures compatible down the hierarchy.
    """

    _state: _S = attrs.field(init=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._state.endpoints)} endpoints)"

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot (including weight-0 endpoints, which are never picked)."""
        return self._state.endpoints


@attrs.define(eq=False, init=False, repr=False)
class RandomStrategy(Strategy[_S]):
    """Base of the strategies that draw random numbers, read a clock and serialise updates."""

    _rand: Callable[[], float] = attrs.field(init=False)
    _clock: Clock = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False)

    def _setup(self, rng: random.Random | None, clock: Clock) -> None:
        self._rand = (random.Random() if rng is None else rng).random  # noqa: S311
        self._clock = clock
        self._lock = threading.Lock()


@attrs.define(eq=False, init=False, repr=False)
class RampingStrategy(RandomStrategy[_R]):
    """Base of the strategies with slow start, whose snapshots carry a `warm_until` time."""

    _slow_start: SlowStart | None = attrs.field(init=False)

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


def number(field: str, value: object, *, positive: bool) -> float:
    """Return `value` as a float after checking it is finite and `> 0` (or `>= 0`).

    Raises:
        ConfigurationError: If `value` is not a number, not finite, or out of range.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    require(ok, field, value, "must be a number")
    checked = float(value)  # type: ignore[arg-type]  # checked just above
    require(math.isfinite(checked), field, value, "must be finite")
    if positive:
        require(checked > 0, field, value, "must be > 0")
    else:
        require(checked >= 0, field, value, "must be >= 0")
    return checked
