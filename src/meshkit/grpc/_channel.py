"""`MeshChannel`: one grpc.aio channel-like object per logical service, balanced per call.

It follows a registry's watch for the service's endpoints, keeps one grpc.aio channel per
endpoint, and for every call: picks the route (VirtualService match, weighted subset), applies
the route's fault, timeout and retries (`ClientPolicy` / `CallPlan`, the one definition the
interceptors use too), bounds concurrency with the connection pool's bulkhead, picks an
endpoint with the subset's balancer (least-request by default, ring hash or Maglev on a
metadata key), and reports the outcome to it, which feeds outlier ejection. Each retry picks
again. An endpoint that leaves the registry stops being picked at once; its channel is closed
when its last call in flight ends (draining). The decisions are `MeshCore`'s (shared with
`SyncMeshChannel`); this shell only waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import anyio

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit.grpc._mesh import END, Connection, EndpointWatch, unwrap
from meshkit.grpc._mesh_face import MeshCallableBase, MeshFace

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Callable, Sequence
    from types import TracebackType

    from meshkit.balancing import Endpoint
    from meshkit.grpc._client import ClientPolicy
    from meshkit.grpc._routing import MeshConfig
    from meshkit.resilience import CircuitBreaker

__all__ = ["EndpointWatch", "MeshChannel"]


@final
class MeshChannel(MeshFace):
    """A channel to a logical service: routes, balances and retries per call.

    Use it as an async context manager (it owns the task following the registry), then make
    stubs on it as on a `grpc.aio.Channel`. grpc.aio runs on asyncio only.

    Args:
        config: The service's `MeshConfig` (or just its name, for defaults).
        registry: Where endpoints come from (`watch(service)`).
        policy: The client policy (deadline margin, propagation, idempotency keys, metrics);
            its `retries`/`timeout` are replaced by the route's.
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
        self._setup(
            config,
            policy=policy,
            breaker=breaker,
            credentials=credentials,
            options=options,
            clock=clock,
            rng=rng,
        )
        self._registry = registry
        self._ready = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None

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
            await _close(self._core.close_all())

    async def _follow(self) -> None:
        async for snapshot in self._registry.watch(self.config.host):
            await self.update(snapshot)
            self._ready.set()

    async def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Swap in a new endpoint set: new endpoints get channels, removed ones drain."""
        await _close(self._core.apply(endpoints, self._connect))

    def _channels(self) -> Any:
        import grpc  # noqa: PLC0415 - optional dependency

        return grpc.aio

    def _multi_callable(self, kind: str, method: str, serializer: Any, deserializer: Any) -> Any:
        return _MeshCallable(self._core, method, kind, serializer, deserializer)


async def _close(connections: list[Connection]) -> None:
    with anyio.CancelScope(shield=True):
        for connection in connections:
            await connection.channel.close()


@final
class _MeshCallable(MeshCallableBase):
    """A multi-callable of `MeshChannel`: each call is routed, balanced and retried."""

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        """Start a call: an awaitable for unary responses, an async iterator for streams."""
        if self._unary_response:
            return self._unary(request, timeout, metadata)
        return self._stream(request, timeout, metadata)

    async def _attempt_start(self, route: Any, headers: dict[str, str]) -> Any:
        delay = self._core.fault(route, self._method)
        if delay:
            await self._core.clock.sleep(delay)
        return self._core.pick(route, headers)

    async def _finish(self, picked: Any, error: BaseException | None) -> None:
        drained = self._core.finish(picked, error)
        if drained is not None:
            await _close([drained])

    async def _unary(self, request: Any, seconds: float | None, metadata: Any) -> Any:
        import grpc  # noqa: PLC0415 - optional dependency, loaded by now

        from meshkit.grpc import _aio_client as aio  # noqa: PLC0415 - imports grpc
        from meshkit.grpc._sync_client import code_of, fresh  # noqa: PLC0415

        plan, route, headers = self._plan(request, seconds, metadata)

        async def wait(connection: Connection, limit: float | None) -> Any:
            call = self._callable(connection)(fresh(request), timeout=limit, metadata=plan.metadata)
            try:
                return await aio.scoped_wait(call, call)
            except grpc.aio.AioRpcError as exc:
                return plan.failure(code_of(exc), exc.details() or "", limit)

        async def once(limit: float | None) -> Any:
            picked = await self._attempt_start(route, headers)
            connection = picked[1]
            error: BaseException | None = None
            try:
                if connection.breaker is None:
                    return unwrap(await wait(connection, limit))
                return unwrap(await connection.breaker.call(wait, connection, limit))
            except BaseException as exc:
                error = exc
                raise
            finally:
                await self._finish(picked, error)

        bulkhead = self._core.bulkhead
        if bulkhead is None:
            return await plan.run(once)
        return await bulkhead.call(plan.run, once)

    async def _stream(
        self, request: Any, seconds: float | None, metadata: Any
    ) -> AsyncIterator[Any]:
        # Attempts end at the first response (each retry picks again); after it, a failure is
        # raised, never retried. A stream is not gated by the endpoint's breaker, which
        # judges unary calls.
        import grpc  # noqa: PLC0415 - optional dependency, loaded by now

        from meshkit.grpc import _aio_client as aio  # noqa: PLC0415 - imports grpc
        from meshkit.grpc._sync_client import code_of, fresh  # noqa: PLC0415

        plan, route, headers = self._plan(request, seconds, metadata)

        async def once(limit: float | None) -> Any:
            picked = await self._attempt_start(route, headers)
            call = self._callable(picked[1])(fresh(request), timeout=limit, metadata=plan.metadata)
            responses = aiter(call)
            try:
                first = await aio.scoped_wait(call, anext(responses))
            except StopAsyncIteration:
                first = END
            except grpc.aio.AioRpcError as exc:
                code, details = code_of(exc), exc.details() or ""
                await self._finish(picked, self._error(code, details))
                return plan.failure(code, details, limit)
            except BaseException as exc:
                await self._finish(picked, exc)
                raise
            return picked, call, responses, first

        picked, call, responses, first = await plan.run(once)
        error: BaseException | None = None
        try:
            if first is END:
                return
            yield first
            while True:
                try:
                    response = await aio.scoped_wait(call, anext(responses))
                except StopAsyncIteration:
                    return
                yield response
        except grpc.aio.AioRpcError as exc:
            error = self._error(code_of(exc), exc.details() or "")
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._finish(picked, error)
