"""VirtualService and DestinationRule as frozen values, and the pure per-call routing decision.

`MeshConfig.route(headers)` picks the first `HttpRoute` whose match applies (Istio order),
`HttpRoute.destination(u)` picks a weighted destination from a uniform number `u` in [0, 1)
(so a test can drive the 90/10 split deterministically), and `MeshConfig.subset_endpoints()`
filters endpoints by a subset's labels. `Fault.decide(u, v)` is Istio's `fault` as a decision.
Nothing here does I/O; `MeshChannel` drives it.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, final

import attrs

from meshkit._validate import finite, ge, in_range, instance_of, optional, require
from meshkit.balancing import OutlierConfig
from meshkit.grpc._checks import list_of
from meshkit.grpc._client import RetryPolicy
from meshkit.grpc._codes import Code

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from meshkit.balancing import Endpoint

__all__ = [
    "Destination",
    "Fault",
    "HeaderMatch",
    "HttpRoute",
    "LoadBalancerKind",
    "MeshConfig",
    "RouteMatch",
    "Subset",
    "TrafficPolicy",
]


def _regex(_inst: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    instance_of(str)(_inst, attribute, value)
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        require(False, attribute.name, value, f"is not a valid regex: {exc}")  # noqa: FBT003


@final
@attrs.frozen(kw_only=True)
class HeaderMatch:
    """One header condition of a route match (Istio `StringMatch`: one of exact/prefix/regex).

    Attributes:
        name: The header (gRPC metadata key), lowercase.
        exact: The value must equal this.
        prefix: The value must start with this.
        regex: The value must fully match this (RE2 in Istio; Python `re` here).
    """

    name: str = attrs.field(validator=instance_of(str))
    exact: str | None = attrs.field(default=None, validator=optional(instance_of(str)))
    prefix: str | None = attrs.field(default=None, validator=optional(instance_of(str)))
    regex: str | None = attrs.field(default=None, validator=_regex)

    def __attrs_post_init__(self) -> None:
        given = [x for x in (self.exact, self.prefix, self.regex) if x is not None]
        require(len(given) == 1, self.name, given, "needs exactly one of exact, prefix, regex")

    def matches(self, headers: Mapping[str, str]) -> bool:
        """Return whether `headers` satisfy this condition."""
        value = headers.get(self.name.lower())
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        return re.fullmatch(self.regex or "", value) is not None


@final
@attrs.frozen(kw_only=True)
class RouteMatch:
    """One `match` block: all of its header conditions must hold (Istio `HTTPMatchRequest`)."""

    headers: tuple[HeaderMatch, ...] = list_of(HeaderMatch, "headers")

    def matches(self, headers: Mapping[str, str]) -> bool:
        """Return whether every condition holds."""
        return all(h.matches(headers) for h in self.headers)


@final
@attrs.frozen(kw_only=True)
class Destination:
    """Where a route sends its share of calls (Istio `HTTPRouteDestination`).

    Attributes:
        subset: A DestinationRule subset name; None: every endpoint.
        weight: The share, relative to the route's other destinations (>= 0).
    """

    subset: str | None = attrs.field(default=None, validator=optional(instance_of(str)))
    weight: int = attrs.field(default=100, validator=[instance_of(int), ge(0)])


@final
@attrs.frozen(kw_only=True)
class Fault:
    """Istio's `fault`: delay and/or abort a percentage of calls, client-side.

    Attributes:
        delay: Seconds of injected delay (None: no delay fault).
        delay_percent: Percentage of calls delayed.
        abort: The status of injected aborts (None: no abort fault).
        abort_percent: Percentage of calls aborted.
    """

    delay: float | None = attrs.field(
        default=None, validator=optional(attrs.validators.and_(finite, ge(0)))
    )
    delay_percent: float = attrs.field(default=100.0, validator=in_range(0, 100))
    abort: Code | None = attrs.field(default=None, validator=optional(instance_of(Code)))
    abort_percent: float = attrs.field(default=100.0, validator=in_range(0, 100))

    def decide(self, u: float, v: float) -> tuple[float, Code | None]:
        """Return (delay, abort code) for a call, from two uniform numbers in [0, 1)."""
        delay = self.delay if self.delay is not None and u * 100 < self.delay_percent else 0.0
        abort = self.abort if self.abort is not None and v * 100 < self.abort_percent else None
        return delay, abort


@final
@attrs.frozen(kw_only=True)
class HttpRoute:
    """One VirtualService `http` route.

    Attributes:
        name: The route's name (for logs).
        match: Match blocks; the route applies if any holds (none: always).
        destinations: Weighted destinations (at least one, total weight > 0).
        timeout: The route's timeout in seconds (None: none).
        retries: The route's retries (None: none).
        fault: Fault injection (None: none).
    """

    name: str = attrs.field(default="", validator=instance_of(str))
    match: tuple[RouteMatch, ...] = list_of(RouteMatch, "match")
    destinations: tuple[Destination, ...] = list_of(Destination, "route")
    timeout: float | None = attrs.field(
        default=None, validator=optional(attrs.validators.and_(finite, ge(0)))
    )
    retries: RetryPolicy | None = attrs.field(
        default=None, validator=optional(instance_of(RetryPolicy))
    )
    fault: Fault | None = attrs.field(default=None, validator=optional(instance_of(Fault)))

    def __attrs_post_init__(self) -> None:
        total = sum(d.weight for d in self.destinations)
        require(total > 0, "route", self.destinations, "needs a destination with weight > 0")

    def matches(self, headers: Mapping[str, str]) -> bool:
        """Return whether the route applies to a call with these headers."""
        return not self.match or any(m.matches(headers) for m in self.match)

    def destination(self, u: float) -> Destination:
        """Return the destination for a uniform number `u` in [0, 1), by weight."""
        total = sum(d.weight for d in self.destinations)
        point = u * total
        for destination in self.destinations:
            if point < destination.weight:
                return destination
            point -= destination.weight
        return next(d for d in reversed(self.destinations) if d.weight > 0)


def _labels(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    try:
        labels = dict(value)
    except (TypeError, ValueError):
        labels = None
    ok = labels is not None and all(isinstance(x, str) for kv in labels.items() for x in kv)
    require(ok, "labels", value, "must map label names to strings")
    return tuple(sorted((labels or {}).items()))


@final
@attrs.frozen(kw_only=True)
class Subset:
    """A DestinationRule subset: the endpoints carrying all these labels (e.g. version=v2)."""

    name: str = attrs.field(validator=instance_of(str))
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)

    def selects(self, endpoint: Endpoint) -> bool:
        """Return whether `endpoint` belongs to the subset."""
        return all(endpoint.label(k) == v for k, v in self.labels)


class LoadBalancerKind(enum.Enum):
    """DestinationRule `loadBalancer`: a `simple` policy, or consistent hashing."""

    LEAST_REQUEST = "LEAST_REQUEST"
    ROUND_ROBIN = "ROUND_ROBIN"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"


@final
@attrs.frozen(kw_only=True)
class TrafficPolicy:
    """DestinationRule `trafficPolicy`, as meshkit enforces it.

    Attributes:
        load_balancer: The balancing strategy (LEAST_REQUEST by default).
        hash_header: For RING_HASH/MAGLEV: the metadata key hashed
            (`consistentHash.httpHeaderName`).
        max_requests: `connectionPool.http.http2MaxRequests`: concurrent calls (a bulkhead).
        max_pending: `connectionPool.http.http1MaxPendingRequests`: calls queued beyond it.
        outlier: `outlierDetection` as `OutlierDetector`'s config (None: no ejection).
    """

    load_balancer: LoadBalancerKind = attrs.field(
        default=LoadBalancerKind.LEAST_REQUEST, validator=instance_of(LoadBalancerKind)
    )
    hash_header: str | None = attrs.field(default=None, validator=optional(instance_of(str)))
    max_requests: int | None = attrs.field(
        default=None, validator=optional(attrs.validators.and_(instance_of(int), ge(1)))
    )
    max_pending: int = attrs.field(default=1024, validator=[instance_of(int), ge(0)])
    outlier: OutlierConfig | None = attrs.field(
        default=None, validator=optional(instance_of(OutlierConfig))
    )


_DEFAULT_ROUTE = HttpRoute(name="default", destinations=(Destination(),))


@final
@attrs.frozen(kw_only=True)
class MeshConfig:
    """Everything `MeshChannel` enforces for one service: routes, subsets, traffic policy.

    Attributes:
        host: The service name (VirtualService `hosts`, DestinationRule `host`).
        routes: The VirtualService routes in order; none: one route to every endpoint.
        subsets: The DestinationRule subsets.
        traffic_policy: The DestinationRule traffic policy.
    """

    host: str = attrs.field(validator=instance_of(str))
    routes: tuple[HttpRoute, ...] = list_of(HttpRoute, "http")
    subsets: tuple[Subset, ...] = list_of(Subset, "subsets")
    traffic_policy: TrafficPolicy = attrs.field(
        factory=TrafficPolicy, validator=instance_of(TrafficPolicy)
    )

    def __attrs_post_init__(self) -> None:
        names = {s.name for s in self.subsets}
        for route in self.routes:
            for destination in route.destinations:
                known = destination.subset is None or destination.subset in names
                require(
                    known, "subset", destination.subset, "is not defined by the DestinationRule"
                )

    def route(self, headers: Mapping[str, str]) -> HttpRoute:
        """Return the first route that applies; with no route applying, the default route."""
        for route in self.routes:
            if route.matches(headers):
                return route
        return _DEFAULT_ROUTE

    def subset(self, name: str | None) -> Subset | None:
        """Return the subset called `name` (None for None)."""
        return next((s for s in self.subsets if s.name == name), None)
