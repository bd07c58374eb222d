"""What `MeshChannel` (grpc.aio) and `SyncMeshChannel` (grpcio) share above `MeshCore`.

`MeshFace` is the channel-like surface both faces expose (construction of the core, the
endpoint channels' factory, the accessors and the four multi-callable factories);
`MeshCallableBase` is a multi-callable's per-method state, its per-call plan and the error of
a non-OK status. A face subclasses both and only adds its own I/O and waiting; the decisions
themselves stay in `MeshCore`.
"""

from __future__ import annotations

import abc
from functools import partialmethod
from typing import TYPE_CHECKING, Any

from meshkit.grpc._client import ClientPolicy
from meshkit.grpc._codes import Code, error_for
from meshkit.grpc._mesh import Connection, MeshCore
from meshkit.grpc._metrics import GRPC_TYPES
from meshkit.grpc._routing import MeshConfig

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from meshkit._clock import Clock
    from meshkit.balancing import Endpoint, LoadBalancer
    from meshkit.grpc._client import CallPlan
    from meshkit.grpc._routing import HttpRoute
    from meshkit.resilience import CircuitBreaker

__all__ = ["MeshCallableBase", "MeshFace"]


class MeshFace(abc.ABC):
    """The surface of a mesh channel; a face sets `_channels` and `_multi_callable`."""

    config: MeshConfig
    _core: MeshCore
    _credentials: Any
    _options: tuple[tuple[str, Any], ...]

    def _setup(
        self,
        config: MeshConfig | str,
        *,
        policy: ClientPolicy | None,
        breaker: Callable[[], CircuitBreaker] | None,
        credentials: Any,
        options: Sequence[tuple[str, Any]],
        clock: Clock,
        rng: random.Random | None,
    ) -> None:
        self.config = MeshConfig(host=config) if isinstance(config, str) else config
        policy = ClientPolicy(clock=clock) if policy is None else policy
        self._core = MeshCore(self.config, policy, breaker, clock, rng)
        self._credentials = credentials
        self._options = tuple(options)

    @abc.abstractmethod
    def _channels(self) -> Any:
        """Return the module making this face's channels (`grpc.aio` or `grpc`)."""

    @abc.abstractmethod
    def _multi_callable(self, kind: str, method: str, serializer: Any, deserializer: Any) -> Any:
        """Return this face's callable for one method of one call kind."""

    def _connect(self, endpoint: Endpoint) -> Any:
        # Plain channels: the mesh runs the policy itself (one plan per call, the breaker of
        # the endpoint picked), which saves an interceptor and a second plan.
        channels = self._channels()
        if self._credentials is None:
            return channels.insecure_channel(endpoint.address, options=self._options)
        return channels.secure_channel(endpoint.address, self._credentials, options=self._options)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints with an open channel (including those draining)."""
        return tuple(c.endpoint for c in self._core.connections.values())

    def in_flight(self, endpoint: Endpoint) -> int:
        """Return the calls in flight on `endpoint` (0 once its channel is closed)."""
        return self._core.in_flight(endpoint)

    def balancer(self, subset: str | None = None) -> LoadBalancer:
        """Return the balancer of a subset (None: all endpoints)."""
        return self._core.balancers[subset]

    def _make(
        self,
        kind: str,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> Any:
        return self._multi_callable(kind, method, request_serializer, response_deserializer)

    # What generated stubs call, as on a grpc channel: `(method, request_serializer=...,
    # response_deserializer=...)` returns the multi-callable of that call kind.
    unary_unary = partialmethod(_make, "unary_unary")
    unary_stream = partialmethod(_make, "unary_stream")
    stream_unary = partialmethod(_make, "stream_unary")
    stream_stream = partialmethod(_make, "stream_stream")


class MeshCallableBase:
    """A mesh multi-callable's method, its plan per call and its attempts' bookkeeping."""

    def __init__(
        self, core: MeshCore, method: str, kind: str, serializer: Any, deserializer: Any
    ) -> None:
        self._core = core
        self._method = method
        self._kind = kind
        self._unary_response = kind.endswith("_unary")
        self._serializer = serializer
        self._deserializer = deserializer
        self._grpc_type = GRPC_TYPES[kind]

    def _callable(self, connection: Connection) -> Any:
        return connection.callable(self._kind, self._method, self._serializer, self._deserializer)

    def _plan(
        self, request: Any, timeout: float | None, metadata: Any
    ) -> tuple[CallPlan, HttpRoute, dict[str, str]]:
        from meshkit.grpc._sync_client import replayable  # noqa: PLC0415 - imports grpc

        return self._core.plan(
            self._method, timeout, metadata, replayable=replayable(request), kind=self._grpc_type
        )

    def _error(self, code: Code, details: str) -> BaseException:
        """Return the meshkit error of a call of this method that ended with a status."""
        return error_for(code, details, self._method)
