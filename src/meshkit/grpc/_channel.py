"""`MeshChannel`: one grpc.aio channel-like object per logical service, balanced per call.

It follows a registry's watch for the service's endpoints, keeps one grpc.aio channel per
endpoint, and for every call: picks the route (VirtualService match, weighted subset), applies
the route's fault, timeout and retries (`ClientPolicy` / `CallPlan`, the one definition the
interceptors use too), bounds concurrency with the connection pool's bulkhead, picks an
endpoint with the subset's balancer (least-request by default, ring hash or Maglev on a
metadata key), and reports the outcome to it, which feeds outlier ejection. Each retry picks
again. An endpoint that leaves the registry stops being picked at once; its channel is closed
when its last call in flight ends (draining).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import (
    CircuitOpenError,
    DeadlineExceededError,
    RpcStatusError,
)
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
    from types import TracebackType

    from meshkit.grpc._client import CallPlan

__all__ = ["EndpointWatch", "MeshChannel"]


@runtime_checkable
class EndpointWatch(Protocol):
    """What `MeshChannel` needs from a registry: snapshots of a service's endpoints.

    `meshkit.discovery`'s `Registry` (and its `StaticRegistry`) provide `watch(service)`; any
    object with this one method works.
    """

    def watch(self, service: str) -> AsyncIterator[Sequence[Endpoint]]:
        """Yield the service's endpoints now, then again after every change."""
        ...


_GATEWAY = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED})
_END = object()


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


def _unwrap(result: Any) -> Any:
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
class _Connection:
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
class MeshChannel:
    """A channel to a logical service: routes, balances and retries per call.

    Use it as an async context manager (it owns the task following the registry), then make
    stubs on it as on a `grpc.aio.Channel`. grpc.aio runs on asyncio only.

    Args:
        config: The service's `MeshConfig` (or just its name, for defaults).
        registry: Where endpoints come from (`watch(service)`).
        policy: The client policy per endpoint (deadline margin, propagation, idempotency
            keys); its `retries`/`timeout` are replaced by the route's.
        breaker: Makes the circuit breaker of each endpoint (None: no breakers).
        credentials: `grpc.ChannelCredentials` for the endpoint channels (None: insecure).
        options: grpc channel options for the endpoint channels.
        clock: The clock of deadlines, faults and ejection.
        rng: The random source of weighted routing and faults.
    """

    def __init__(
        self,
        config: MeshConfig | str,
        registry: EndpointWatch,
        *,
        policy: ClientPolicy | None = None,
        breaker: Callable[[], CircuitBreaker] | None = None,
        credentials: Any = None,
        options: Sequence[tuple[str, Any]] = (),
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.config = MeshConfig(host=config) if isinstance(config, str) else config
        self._registry = registry
        self._policy = ClientPolicy(clock=clock) if policy is None else policy
        self._breaker = breaker
        self._credentials = credentials
        self._options = tuple(options)
        self._clock = clock
        self._rng = random.Random() if rng is None else rng  # noqa: S311 - not cryptography
        self._balancers = {
            name: _balancer(self.config, clock, self._rng)
            for name in (None, *(s.name for s in self.config.subsets))
        }
        self._routes = {id(r): self._route_policy(r) for r in self.config.routes}
        self._default_policy = attrs.evolve(self._policy, breaker=None)
        limit = self.config.traffic_policy.max_requests
        pending = self.config.traffic_policy.max_pending
        self._bulkhead = (
            None
            if limit is None
            else Bulkhead(max_concurrent=limit, max_queued=pending, clock=clock)
        )
        self._connections: dict[str, _Connection] = {}
        self._ready = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None

    def _route_policy(self, route: HttpRoute) -> ClientPolicy:
        return attrs.evolve(
            self._policy, timeout=route.timeout or None, retries=route.retries, breaker=None
        )

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MeshChannel:
        """Start following the registry; return when the first snapshot has arrived.

        Raises:
            BaseExceptionGroup: If the registry's watch fails before its first snapshot
                (its error inside), or whatever cancelled the wait.
        """
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._follow)
        try:
            await self._ready.wait()
        except BaseException as exc:
            # The watch failed (its error cancelled this wait) or we were cancelled: leave the
            # task group now, so that its error surfaces here and nothing is left running.
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop following the registry and close every endpoint channel."""
        group, self._group = self._group, None
        assert group is not None  # noqa: S101 - entered before exited
        group.cancel_scope.cancel()
        try:
            return await group.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                for connection in list(self._connections.values()):
                    await connection.channel.close()
                self._connections.clear()

    async def _follow(self) -> None:
        async for snapshot in self._registry.watch(self.config.host):
            await self.update(snapshot)
            self._ready.set()

    async def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Swap in a new endpoint set: new endpoints get channels, removed ones drain."""
        endpoints = tuple(endpoints)
        for name, balancer in self._balancers.items():
            subset = self.config.subset(name)
            balancer.update(e for e in endpoints if subset is None or subset.selects(e))
        current = {e.address for e in endpoints}
        for endpoint in endpoints:
            if endpoint.address not in self._connections:
                self._connections[endpoint.address] = self._connect(endpoint)
        for address, connection in list(self._connections.items()):
            if address not in current:
                connection.draining = True
                await self._maybe_close(address, connection)

    def _connect(self, endpoint: Endpoint) -> _Connection:
        import grpc  # noqa: PLC0415 - optional dependency

        # Plain channels: the mesh runs the policy itself (one plan per call, the breaker of
        # the endpoint picked), which saves grpc.aio's interceptor task and a second plan.
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(endpoint.address, options=self._options)
        else:
            channel = grpc.aio.secure_channel(
                endpoint.address, self._credentials, options=self._options
            )
        breaker = None if self._breaker is None else self._breaker()
        return _Connection(endpoint, channel, breaker)

    async def _maybe_close(self, address: str, connection: _Connection) -> None:
        if (
            connection.draining
            and connection.active == 0
            and self._connections.get(address) is connection
        ):
            del self._connections[address]
            with anyio.CancelScope(shield=True):
                await connection.channel.close()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints with an open channel (including those draining)."""
        return tuple(c.endpoint for c in self._connections.values())

    def in_flight(self, endpoint: Endpoint) -> int:
        """Return the calls in flight on `endpoint` (0 once its channel is closed)."""
        connection = self._connections.get(endpoint.address)
        return 0 if connection is None else connection.active

    def balancer(self, subset: str | None = None) -> LoadBalancer:
        """Return the balancer of a subset (None: all endpoints)."""
        return self._balancers[subset]

    # ------------------------------------------------------------ calls

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> Any:
        """Return a callable making unary calls (what generated stubs use)."""
        return _MeshCallable(self, method, "unary_unary", request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> Any:
        """Return a callable making server-streaming calls."""
        return _MeshCallable(
            self, method, "unary_stream", request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> Any:
        """Return a callable making client-streaming calls."""
        return _MeshCallable(
            self, method, "stream_unary", request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> Any:
        """Return a callable making bidirectional-streaming calls."""
        return _MeshCallable(
            self, method, "stream_stream", request_serializer, response_deserializer
        )

    def _plan(
        self, method: str, timeout: float | None, metadata: Any, request: Any
    ) -> tuple[CallPlan, HttpRoute, dict[str, str]]:
        from meshkit.grpc._sync_client import replayable  # noqa: PLC0415 - imports grpc

        pairs = tuple(metadata or ())
        headers = {k.lower(): v for k, v in pairs if isinstance(k, str) and isinstance(v, str)}
        route = self.config.route(headers)
        policy = self._routes.get(id(route), self._default_policy)
        plan = policy.plan(method, timeout, pairs, replayable=replayable(request))
        return plan, route, headers

    async def _fault(self, route: HttpRoute, method: str) -> None:
        if route.fault is None:
            return
        delay, abort = route.fault.decide(self._rng.random(), self._rng.random())
        if delay:
            await self._clock.sleep(delay)
        if abort is not None:
            raise error_for(abort, "fault injected", method)

    def _pick(
        self, route: HttpRoute, headers: dict[str, str]
    ) -> tuple[Endpoint, _Connection, LoadBalancer]:
        destination = route.destination(self._rng.random())
        balancer = self._balancers[destination.subset]
        header = self.config.traffic_policy.hash_header
        endpoint = balancer.pick(None if header is None else headers.get(header.lower()))
        connection = self._connections[endpoint.address]
        return endpoint, connection, balancer

    async def _finish(
        self,
        endpoint: Endpoint,
        connection: _Connection,
        balancer: LoadBalancer,
        start: float,
        error: BaseException | None,
    ) -> None:
        connection.active -= 1
        balancer.report(endpoint, outcome_of(error), max(self._clock.now() - start, 0.0))
        await self._maybe_close(endpoint.address, connection)


@final
class _MeshCallable:
    """A multi-callable of `MeshChannel`: each call is routed, balanced and retried."""

    def __init__(
        self, mesh: MeshChannel, method: str, kind: str, serializer: Any, deserializer: Any
    ) -> None:
        self._mesh = mesh
        self._method = method
        self._kind = kind
        self._serializer = serializer
        self._deserializer = deserializer

    def _callable(self, connection: _Connection) -> Any:
        return connection.callable(self._kind, self._method, self._serializer, self._deserializer)

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        """Start a call: an awaitable for unary responses, an async iterator for streams."""
        if self._kind.endswith("_unary"):
            return self._unary(request, timeout, metadata)
        return self._stream(request, timeout, metadata)

    async def _bounded(self, work: Callable[[], Any]) -> Any:
        bulkhead = self._mesh._bulkhead  # noqa: SLF001 - the channel's own helper
        return await (work() if bulkhead is None else bulkhead.call(work))

    async def _unary(self, request: Any, seconds: float | None, metadata: Any) -> Any:
        import grpc  # noqa: PLC0415 - optional dependency, loaded by now

        from meshkit.grpc import _aio_client as aio  # noqa: PLC0415 - imports grpc
        from meshkit.grpc._sync_client import code_of, fresh  # noqa: PLC0415 - imports grpc

        mesh = self._mesh
        plan, route, headers = mesh._plan(self._method, seconds, metadata, request)  # noqa: SLF001

        async def wait(connection: _Connection, limit: float | None) -> Any:
            call = self._callable(connection)(fresh(request), timeout=limit, metadata=plan.metadata)
            try:
                return await aio.shielded(call, call)
            except grpc.aio.AioRpcError as exc:
                return plan.failure(code_of(exc), exc.details() or "", limit)

        async def once(limit: float | None) -> Any:
            await mesh._fault(route, self._method)  # noqa: SLF001
            endpoint, connection, balancer = mesh._pick(route, headers)  # noqa: SLF001
            connection.active += 1
            start = mesh._clock.now()  # noqa: SLF001
            error: BaseException | None = None
            try:
                breaker = connection.breaker
                if breaker is None:
                    return _unwrap(await wait(connection, limit))
                return _unwrap(await breaker.call(wait, connection, limit))
            except BaseException as exc:
                error = exc
                raise
            finally:
                await mesh._finish(endpoint, connection, balancer, start, error)  # noqa: SLF001

        return await self._bounded(lambda: plan.run(once))

    async def _stream(
        self, request: Any, seconds: float | None, metadata: Any
    ) -> AsyncIterator[Any]:
        # Attempts end at the first response (each retry picks again); after it, a failure is
        # raised, never retried. A stream is not gated by the endpoint's breaker, which
        # judges unary calls.
        import grpc  # noqa: PLC0415 - optional dependency, loaded by now

        from meshkit.grpc import _aio_client as aio  # noqa: PLC0415 - imports grpc
        from meshkit.grpc._sync_client import code_of, fresh  # noqa: PLC0415 - imports grpc

        mesh = self._mesh
        plan, route, headers = mesh._plan(self._method, seconds, metadata, request)  # noqa: SLF001

        async def once(limit: float | None) -> Any:
            await mesh._fault(route, self._method)  # noqa: SLF001
            endpoint, connection, balancer = mesh._pick(route, headers)  # noqa: SLF001
            connection.active += 1
            start = mesh._clock.now()  # noqa: SLF001
            call = self._callable(connection)(fresh(request), timeout=limit, metadata=plan.metadata)
            responses = aiter(call)
            try:
                first = await aio.shielded(call, anext(responses))
            except StopAsyncIteration:
                first = _END
            except grpc.aio.AioRpcError as exc:
                code, details = code_of(exc), exc.details() or ""
                error = error_for(code, details, self._method)
                await mesh._finish(endpoint, connection, balancer, start, error)  # noqa: SLF001
                return plan.failure(code, details, limit)
            except BaseException as exc:
                await mesh._finish(endpoint, connection, balancer, start, exc)  # noqa: SLF001
                raise
            return endpoint, connection, balancer, start, call, responses, first

        endpoint, connection, balancer, start, call, responses, first = await plan.run(once)
        error: BaseException | None = None
        try:
            if first is _END:
                return
            yield first
            while True:
                try:
                    response = await aio.shielded(call, anext(responses))
                except StopAsyncIteration:
                    return
                yield response
        except grpc.aio.AioRpcError as exc:
            error = error_for(code_of(exc), exc.details() or "", self._method)
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            await mesh._finish(endpoint, connection, balancer, start, error)  # noqa: SLF001
