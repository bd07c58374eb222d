"""Endpoints, call outcomes and the `LoadBalancer` protocol every strategy implements."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import count, in_range, instance_of, require

__all__ = ["MAX_WEIGHT", "Endpoint", "LoadBalancer", "Outcome", "check_endpoints"]

MAX_WEIGHT = 2**32 - 1
"""The largest endpoint weight: Envoy's (a uint32), and exact in the strategies' floats."""


def _to_metadata(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    try:
        metadata = tuple(sorted((str(k), str(v)) for k, v in pairs))
    except (TypeError, ValueError):
        raise ConfigurationError(
            "metadata", value, "must be a mapping or (key, value) pairs"
        ) from None
    keys = [k for k, _ in metadata]
    require(len(set(keys)) == len(keys), "metadata", value, "duplicate key")
    return metadata


@attrs.frozen(kw_only=True)
class Endpoint:
    """One backend a balancer can pick: an address plus what routing needs to know about it.

    Endpoints are frozen and hashable values; balancers hold them in immutable snapshots.
    `metadata` is stored as a sorted tuple of `(key, value)` pairs so the value stays hashable;
    read it with [`label()`][meshkit.balancing.Endpoint.label].

    Attributes:
        host: Host name or IP address.
        port: TCP port, 0-65535.
        weight: Relative share of traffic, 0 to `MAX_WEIGHT` (2**32 - 1, as Envoy's);
            0 means "receives nothing".
        zone: Locality label (for zone-aware routing); empty when unknown.
        metadata: Extra labels such as `version=v2`, as sorted `(key, value)` pairs.

    Raises:
        ConfigurationError: If a field has the wrong type or is out of range, or `metadata`
            is not a mapping or `(key, value)` pairs with unique keys.
    """

    host: str = attrs.field(validator=instance_of(str))
    port: int = attrs.field(validator=[instance_of(int), in_range(0, 65535)])
    weight: int = attrs.field(default=1, validator=count(0, MAX_WEIGHT))
    zone: str = attrs.field(default="", validator=instance_of(str))
    metadata: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_to_metadata)

    @property
    def address(self) -> str:
        """Return `host:port` (`[host]:port` for an IPv6 literal)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def label(self, key: str, default: str | None = None) -> str | None:
        """Return the metadata value under `key`, or `default`."""
        for k, v in self.metadata:
            if k == key:
                return v
        return default


class Outcome(enum.Enum):
    """How a call to an endpoint ended, as reported back to its balancer."""

    SUCCESS = "success"
    """The endpoint answered normally (including a well-formed application error)."""
    ERROR = "error"
    """The endpoint failed (an HTTP 5xx, a gRPC INTERNAL/UNKNOWN...)."""
    GATEWAY_ERROR = "gateway_error"
    """The endpoint could not be reached or timed out (502/503/504, connect failure)."""


@runtime_checkable
class LoadBalancer(Protocol):
    """What every balancing strategy offers; all methods are safe from threads and tasks.

    A caller picks an endpoint, makes its call, then reports exactly one outcome for that
    pick, which is what least-request, peak-EWMA and outlier ejection learn from. `update()`
    swaps in a new endpoint set as one immutable snapshot: a concurrent `pick()` sees either
    the old set or the new one, never a mix.
    """

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot."""
        ...

    def pick(self, key: str | bytes | None = None) -> Endpoint:
        """Choose an endpoint for one call (`key` is used by hash-based strategies).

        Raises:
            NoAvailableEndpointError: If there is nothing to pick.
        """
        ...

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set atomically.

        Raises:
            ConfigurationError: If the set holds duplicate addresses.
        """
        ...

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:
        """Report how the call made after a `pick()` ended, and how long it took (seconds).

        Raises:
            ConfigurationError: If the balancer uses `outcome` or `latency` and it is not an
                `Outcome` or not a finite number >= 0; the report then has no effect.
        """
        ...


def check_endpoints(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """Return `endpoints` as a tuple after checking types and that addresses are unique.

    Raises:
        ConfigurationError: If `endpoints` is not iterable, an item is not an `Endpoint`,
            or two share an address.
    """
    require(isinstance(endpoints, Iterable), "endpoints", endpoints, "must be an iterable")
    snapshot = tuple(endpoints)
    seen: set[tuple[str, int]] = set()
    for endpoint in snapshot:
        require(isinstance(endpoint, Endpoint), "endpoints", endpoint, "must be Endpoint values")
        address = (endpoint.host, endpoint.port)
        require(address not in seen, "endpoints", endpoint.address, "duplicate endpoint address")
        seen.add(address)
    return snapshot
