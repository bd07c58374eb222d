"""Helpers shared by the strategies: addresses, per-address state carried across snapshots."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypeVar

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import require

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from meshkit.balancing._endpoint import Endpoint

__all__ = ["Address", "address", "carry", "number", "pickable", "unavailable"]

_T = TypeVar("_T")

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
