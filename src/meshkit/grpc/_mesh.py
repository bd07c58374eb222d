"""The mesh channel's one definition, shared by its aio and sync shells.

`MeshCore` holds what a mesh channel decides, with no I/O: the routes and their policies, a
balancer per subset (outlier ejection around it), the connection-pool bulkhead, and the
bookkeeping of endpoint connections (calls in flight, draining). The shells
(`MeshChannel` for grpc.aio, `SyncMeshChannel` for grpcio) create and close channels and wait;
for a call they ask the core to `plan`, `fault`, `pick` and `finish`.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs

from meshkit._errors import CircuitOpenError, DeadlineExceededError, RpcStatusError
from meshkit.balancing import (
    Endpoint,
    HashRing,
    LeastRequest,
    LoadBalancer,
    Maglev,
    Outcome,
    OutlierDetector,
    RoundRobin,
)
from meshkit.balancing import Random as RandomBalancer
from meshkit.grpc._client import ClientPolicy, Failed
from meshkit.grpc._codes import SERVER_FAILURES, Code, error_for
from meshkit.grpc._routing import HttpRoute, LoadBalancerKind, MeshConfig
from meshkit.resilience import Bulkhead, CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from meshkit._clock import Clock
    from meshkit.grpc._client import CallPlan

__all__ = ["END", "Connection", "EndpointWatch", "MeshCore", "outcome_of", "unwrap"]

END = object()
"""The first "message" of a stream that ended without any."""

_GATEWAY = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED})


@runtime_checkable
class EndpointWatch(Protocol):
    """What `MeshChannel` needs from a registry: snapshots of a service's endpoints.

    `meshkit.discovery`'s `Registry` (and its `StaticRegistry`) provide `watch(service)`; any
    object with this one method works.
    """

    def watch(self, service: str) -> AsyncIterator[Sequence[Endpoint]]:
        """Yield the service's endpoints now, then again after every change."""
        ...


def outcome_of(error: BaseException | None) -> Outcome:
    """Return what a call's ending tells the balancer about the endpoint."""
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, DeadlineExceededError | CircuitOpenError):
        return Outcome.GATEWAY_ERROR
    if isinstance(error, RpcStatusError):
        code = Code.__members__.get(error.code, Code.UNKNOWN)
        if code in _GATEWAY:
            return Outcome.GATEWAY_ERROR
        return Outcome.ERROR if code in SERVER_FAILURES else Outcome.SUCCESS
    return Outcome.SUCCESS if not isinstance(error, Exception) else Outcome.ERROR


def unwrap(result: Any) -> Any:
    """Return an attempt's result, raising the error of a `Failed` one."""
    if isinstance(result, Failed):
        raise result.error
    return result


def _balancer(config: MeshConfig, clock: Clock, rng: random.Random) -> LoadBalancer:
    kind = config.traffic_policy.load_balancer
    inner: LoadBalancer
    if kind is LoadBalancerKind.ROUND_ROBIN:
        inner = RoundRobin(rng=rng)
    elif kind is LoadBalancerKind.RANDOM:
        inner = RandomBalancer(rng=rng)
    elif kind is LoadBalancerKind.RING_HASH:
        inner = HashRing()
    elif kind is LoadBalancerKind.MAGLEV:
        inner = Maglev()
    else:
        inner = LeastRequest(rng=rng, clock=clock)
    outlier = config.traffic_policy.outlier
    return inner if outlier is None else OutlierDetector(inner, outlier, clock=clock)


@attrs.define(eq=False)
class Connection:
    """One endpoint's channel, its breaker and its calls in flight."""

    endpoint: Endpoint
    channel: Any
    breaker: CircuitBreaker | None = None
    active: int = 0
    draining: bool = False
    callables: dict[tuple[str, str], Any] = attrs.field(factory=dict)

    def callable(self, kind: str, method: str, serializer: Any, deserializer: Any) -> Any:
        """Return (and keep) the channel's multi-callable for a method."""
        found = self.callables.get((kind, method))
        if found is None:
            factory = getattr(self.channel, kind)
            found = factory(
                method, request_serializer=serializer, response_deserializer=deserializer
            )
            self.callables[kind, method] = found
        return found


@final
class MeshCore:
    """The decisions of a mesh channel (see the module docstring)."""

    def __init__(
        self,
        config: MeshConfig,
        policy: ClientPolicy,
        breaker: Callable[[], CircuitBreaker] | None,
        clock: Clock,
        rng: random.Random | None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = random.Random() if rng is None else rng  # noqa: S311 - not cryptography
        self._breaker = breaker
        self.balancers = {
            name: _balancer(config, clock, self.rng)
            for name in (None, *(s.name for s in config.subsets))
        }
        self._routes = {
            id(r): attrs.evolve(policy, timeout=r.timeout or None, retries=r.retries, breaker=None)
            for r in config.routes
        }
        self._default_policy = attrs.evolve(policy, breaker=None)
        limit = config.traffic_policy.max_requests
        pending = config.traffic_policy.max_pending
        self.bulkhead = (
            None
            if limit is None
            else Bulkhead(max_concurrent=limit, max_queued=pending, clock=clock)
        )
        self.connections: dict[str, Connection] = {}
        self._lock = threading.Lock()

    def apply(
        self, endpoints: Sequence[Endpoint], connect: Callable[[Endpoint], Any]
    ) -> list[Connection]:
        """Swap in an endpoint set; return the connections to close now (drained).

        New endpoints get a channel from `connect`; removed ones stop being picked and are
        closed once their calls in flight have ended.
        """
        endpoints = tuple(endpoints)
        for name, balancer in self.balancers.items():
            subset = self.config.subset(name)
            balancer.update(e for e in endpoints if subset is None or subset.selects(e))
        current = {e.address for e in endpoints}
        with self._lock:
            for endpoint in endpoints:
                known = self.connections.get(endpoint.address)
                if known is not None:
                    known.draining = False  # back before it drained: keep its channel
                else:
                    breaker = None if self._breaker is None else self._breaker()
                    channel = connect(endpoint)
                    self.connections[endpoint.address] = Connection(endpoint, channel, breaker)
            closing = []
            for address, connection in list(self.connections.items()):
                if address not in current:
                    connection.draining = True
                    if connection.active == 0:
                        closing.append(self.connections.pop(address))
        return closing

    def close_all(self) -> list[Connection]:
        """Forget every connection; return them, to be closed."""
        with self._lock:
            connections = list(self.connections.values())
            self.connections.clear()
        return connections

    def plan(
        self, method: str, timeout: float | None, metadata: Any, *, replayable: bool, kind: str
    ) -> tuple[CallPlan, HttpRoute, dict[str, str]]:
        """Return a call's plan, route and text headers."""
        pairs = tuple(metadata or ())
        headers = {k.lower(): v for k, v in pairs if isinstance(k, str) and isinstance(v, str)}
        route = self.config.route(headers)
        policy = self._routes.get(id(route), self._default_policy)
        plan = policy.plan(method, timeout, pairs, replayable=replayable, kind=kind)
        return plan, route, headers

    def fault(self, route: HttpRoute, method: str) -> float:
        """Decide the route's fault for one attempt: return the delay to wait first.

        Raises:
            RpcStatusError: If the attempt is aborted (or `DeadlineExceededError` for an
                injected DEADLINE_EXCEEDED).
        """
        if route.fault is None:
            return 0.0
        delay, abort = route.fault.decide(self.rng.random(), self.rng.random())
        if abort is not None:
            raise error_for(abort, "fault injected", method)
        return delay

    def pick(
        self, route: HttpRoute, headers: dict[str, str]
    ) -> tuple[Endpoint, Connection, LoadBalancer, float]:
        """Pick an endpoint for one attempt and count the call in flight.

        Raises:
            NoAvailableEndpointError: If the subset has no endpoint to pick.
        """
        destination = route.destination(self.rng.random())
        balancer = self.balancers[destination.subset]
        header = self.config.traffic_policy.hash_header
        endpoint = balancer.pick(None if header is None else headers.get(header.lower()))
        with self._lock:
            connection = self.connections[endpoint.address]
            connection.active += 1
        return endpoint, connection, balancer, self.clock.now()

    def finish(
        self,
        picked: tuple[Endpoint, Connection, LoadBalancer, float],
        error: BaseException | None,
    ) -> Connection | None:
        """Report how an attempt ended; return its connection if it is now drained."""
        endpoint, connection, balancer, start = picked
        balancer.report(endpoint, outcome_of(error), max(self.clock.now() - start, 0.0))
        with self._lock:
            connection.active -= 1
            drained = connection.draining and connection.active == 0
            if drained and self.connections.get(endpoint.address) is connection:
                del self.connections[endpoint.address]
                return connection
        return None

    def in_flight(self, endpoint: Endpoint) -> int:
        """Return the calls in flight on `endpoint` (0 once its channel is closed)."""
        connection = self.connections.get(endpoint.address)
        return 0 if connection is None else connection.active
