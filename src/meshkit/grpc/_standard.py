"""The standard services a meshkit server offers: `grpc.health.v1` and server reflection.

Consul's gRPC check and Kubernetes' gRPC probes call `grpc.health.v1.Health/Check`;
grpcurl-style clients discover services through reflection. `ServerPolicy` lets both through
without authorization or rate limiting (its `exempt` prefixes), as Istio exempts probes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["add_standard_services", "add_standard_services_aio"]


def _names(service_names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from grpc_health.v1 import health_pb2  # noqa: PLC0415 - optional dependency
    from grpc_reflection.v1alpha import reflection  # noqa: PLC0415 - optional dependency

    services = tuple(service_names)
    health = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    return services, (*services, health, reflection.SERVICE_NAME)


def add_standard_services(server: Any, service_names: Iterable[str]) -> Any:  # noqa: ANN401
    """Add health (every named service SERVING, and the server as a whole) and reflection.

    For a sync `grpc.server`; returns the `HealthServicer` (call `set()` to change a status,
    `enter_graceful_shutdown()` when stopping).
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: PLC0415
    from grpc_reflection.v1alpha import reflection  # noqa: PLC0415

    services, reflected = _names(service_names)
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(reflected, server)
    for name in ("", *services):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def add_standard_services_aio(server: Any, service_names: Iterable[str]) -> Any:  # noqa: ANN401
    """Add health and reflection to a `grpc.aio.server`; return the aio `HealthServicer`."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: PLC0415
    from grpc_reflection.v1alpha import reflection  # noqa: PLC0415

    services, reflected = _names(service_names)
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(reflected, server)
    for name in ("", *services):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer
