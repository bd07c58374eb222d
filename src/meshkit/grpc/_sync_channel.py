"""`SyncMeshChannel`: the mesh channel for sync grpcio, driven by the same `MeshCore`.

Sync code has no registry watch of its own: call `update(endpoints)` from whatever follows
the registry (a thread, a callback); in-flight calls on a removed endpoint finish, then its
channel closes. Everything else (routes, faults, retries picking again, the bulkhead,
balancers, breakers, ejection) is decided by `MeshCore`, as for `MeshChannel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit.grpc._mesh import END, Connection, unwrap
from meshkit.grpc._mesh_face import MeshCallableBase, MeshFace

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterator, Sequence
    from types import TracebackType

    from meshkit.balancing import Endpoint
    from meshkit.grpc._client import ClientPolicy
    from meshkit.grpc._routing import MeshConfig
    from meshkit.resilience import CircuitBreaker

__all__ = ["SyncMeshChannel"]


@final
class SyncMeshChannel(MeshFace):
    """A sync grpcio channel to a logical service: routes, balances and retries per call.

    Use it as a context manager (closing every endpoint channel on exit) and make stubs on
    it as on a `grpc.Channel`. Safe to share between threads.

    Args:
        config: The service's `MeshConfig` (or just its name, for defaults).
        endpoints: The first endpoint set (more with `update()`).
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
        endpoints: Sequence[Endpoint] = (),
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
        self.update(endpoints)

    def __enter__(self) -> SyncMeshChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close every endpoint channel."""
        self.close()

    def close(self) -> None:
        """Close every endpoint channel."""
        for connection in self._core.close_all():
            connection.channel.close()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Swap in a new endpoint set: new endpoints get channels, removed ones drain."""
        for connection in self._core.apply(endpoints, self._connect):
            connection.channel.close()

    def _channels(self) -> Any:
        import grpc  # noqa: PLC0415 - optional dependency

        return grpc

    def _multi_callable(self, kind: str, method: str, serializer: Any, deserializer: Any) -> Any:
        return _SyncMeshCallable(self._core, method, kind, serializer, deserializer)


def _close_drained(drained: Connection | None) -> None:
    if drained is not None:
        drained.channel.close()


@final
class _SyncMeshCallable(MeshCallableBase):
    """A multi-callable of `SyncMeshChannel`."""

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        """Make a call: the response for unary responses, an iterator for streams."""
        plan, route, headers = self._plan(request, timeout, metadata)
        if self._unary_response:
            return self._unary(plan, route, headers, request)
        return self._stream(plan, route, headers, request)

    def _start(self, route: Any, headers: dict[str, str]) -> Any:
        delay = self._core.fault(route, self._method)
        if delay:
            self._core.clock.sleep_sync(delay)
        return self._core.pick(route, headers)

    def _unary(self, plan: Any, route: Any, headers: dict[str, str], request: Any) -> Any:
        import grpc  # noqa: PLC0415 - optional dependency, loaded by now

        from meshkit.grpc._sync_client import code_of, fresh  # noqa: PLC0415

        def wait(connection: Connection, limit: float | None) -> Any:
            try:
                return self._callable(connection)(
                    fresh(request), timeout=limit, metadata=plan.metadata
                )
            except grpc.RpcError as exc:
                return plan.failure(code_of(exc), exc.details() or "", limit)

        def once(limit: float | None) -> Any:
            picked = self._start(route, headers)
            connection = picked[1]
            error: BaseException | None = None
            try:
                if connection.breaker is None:
                    return unwrap(wait(connection, limit))
                return unwrap(connection.breaker.call_sync(wait, connection, limit))
            except BaseException as exc:
                error = exc
                raise
            finally:
                _close_drained(self._core.finish(picked, error))

        bulkhead = self._core.bulkhead
        return plan.run_sync(once) if bulkhead is None else bulkhead.call_sync(plan.run_sync, once)

    def _stream(
        self, plan: Any, route: Any, headers: dict[str, str], request: Any
    ) -> Iterator[Any]:
        import grpc  # noqa: PLC0415 - optional dependency, loaded by now

        from meshkit.grpc._sync_client import code_of, fresh  # noqa: PLC0415

        def once(limit: float | None) -> Any:
            picked = self._start(route, headers)
            call = self._callable(picked[1])(fresh(request), timeout=limit, metadata=plan.metadata)
            try:
                first = next(call)
            except StopIteration:
                first = END
            except grpc.RpcError as exc:
                code, details = code_of(exc), exc.details() or ""
                _close_drained(self._core.finish(picked, self._error(code, details)))
                return plan.failure(code, details, limit)
            except BaseException as exc:
                _close_drained(self._core.finish(picked, exc))
                raise
            return picked, call, first

        # Attempts end at the first response; later failures are raised, never retried.
        picked, call, first = plan.run_sync(once)
        error: BaseException | None = None
        try:
            if first is END:
                return
            yield first
            yield from call
        except grpc.RpcError as exc:
            error = self._error(code_of(exc), exc.details() or "")
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            _close_drained(self._core.finish(picked, error))
