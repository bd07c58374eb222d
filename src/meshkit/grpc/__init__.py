"""gRPC without sidecars: interceptors, the mesh channel, Istio-style configuration.

grpcio is an optional dependency (`pip install 'meshkit[grpc]'`), imported only when an
interceptor or channel is built; `import meshkit.grpc` needs only anyio and attrs. grpc.aio
runs on asyncio only.
"""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.grpc._authz import Action, AuthorizationPolicy, Operation, Rule, Source
from meshkit.grpc._channel import EndpointWatch, MeshChannel
from meshkit.grpc._client import ClientPolicy, RetryPolicy, is_mutating
from meshkit.grpc._codes import Code
from meshkit.grpc._idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    PostgresIdempotencyStore,
    SQLiteIdempotencyStore,
)
from meshkit.grpc._istio import IstioConfig, load_istio
from meshkit.grpc._metrics import CallObserver, OpenTelemetryObserver, PrometheusObserver
from meshkit.grpc._propagation import TraceContext, current_correlation_id, current_trace
from meshkit.grpc._routing import (
    Destination,
    Fault,
    HeaderMatch,
    HttpRoute,
    LoadBalancerKind,
    MeshConfig,
    RouteMatch,
    Subset,
    TrafficPolicy,
)
from meshkit.grpc._server import ServerPolicy
from meshkit.grpc._standard import add_standard_services, add_standard_services_aio
from meshkit.grpc._sync_channel import SyncMeshChannel
from meshkit.grpc._tls import WorkloadIdentity

__all__ = [
    "Action",
    "AuthorizationPolicy",
    "CallObserver",
    "ClientPolicy",
    "Code",
    "Destination",
    "EndpointWatch",
    "Fault",
    "HeaderMatch",
    "HttpRoute",
    "IdempotencyStore",
    "IstioConfig",
    "LoadBalancerKind",
    "MemoryIdempotencyStore",
    "MeshChannel",
    "MeshConfig",
    "OpenTelemetryObserver",
    "Operation",
    "PostgresIdempotencyStore",
    "PrometheusObserver",
    "RetryPolicy",
    "RouteMatch",
    "Rule",
    "SQLiteIdempotencyStore",
    "ServerPolicy",
    "Source",
    "Subset",
    "SyncMeshChannel",
    "TraceContext",
    "TrafficPolicy",
    "WorkloadIdentity",
    "add_standard_services",
    "add_standard_services_aio",
    "current_correlation_id",
    "current_trace",
    "is_mutating",
    "load_istio",
]

_publish(__name__, globals())
