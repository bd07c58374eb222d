"""grpc.health.v1 and reflection on meshkit servers, past a deny-all authorization policy."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshkit.grpc import (
    AuthorizationPolicy,
    ServerPolicy,
    add_standard_services,
    add_standard_services_aio,
)

DENY_ALL = ServerPolicy(authorization=(AuthorizationPolicy(),))  # ALLOW with no rules
SERVICE = "meshkit.test.v1.Echo"


class TestStandardServices:
    """Health and reflection."""

    def test_sync_health_and_reflection(self) -> None:
        """Check answers SERVING; reflection lists the services; authorization is bypassed."""
        server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[DENY_ALL.interceptor()])
        health = add_standard_services(server, [SERVICE])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
                reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                (answer,) = list(reflect.ServerReflectionInfo(iter([request])))
                names = {s.name for s in answer.list_services_response.service}
                assert {SERVICE, "grpc.health.v1.Health"} <= names
        finally:
            server.stop(None).wait()

    @pytest.mark.anyio
    async def test_aio_health(self) -> None:
        """The aio server answers Check too."""
        server = grpc.aio.server(interceptors=[DENY_ALL.aio_interceptor()])
        await add_standard_services_aio(server, [SERVICE])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await server.stop(None)
