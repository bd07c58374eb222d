"""Two hops, client -> A -> B: the deadline, correlation id and trace travel end to end."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import AioEcho, Attempts, aio_server
from meshkit import DeadlineExceededError
from meshkit.grpc import ClientPolicy, ServerPolicy

MARGIN = 0.05


class Relay(AioEcho):
    """Service A: answers Unary by calling B's Unary through a meshkit client."""

    def __init__(self, stub: Any) -> None:
        super().__init__(Attempts())
        self.stub = stub

    async def Unary(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self.stub.Unary(request)


class TestTwoHops:
    """client -> A -> B."""

    @pytest.mark.anyio
    async def test_deadline_and_ids_reach_b(self) -> None:
        """B sees the client's deadline minus A's margin, the same correlation id and trace."""
        policy = ClientPolicy(deadline_margin=MARGIN)
        async with (
            aio_server() as (b_address, _),
            grpc.aio.insecure_channel(b_address, interceptors=policy.aio_interceptors()) as to_b,
        ):
            relay = Relay(echo_pb2_grpc.EchoStub(to_b))
            async with (
                aio_server([ServerPolicy().aio_interceptor()], servicer=relay) as (a_address, _),
                grpc.aio.insecure_channel(a_address) as to_a,
            ):
                stub: Any = echo_pb2_grpc.EchoStub(to_a)
                trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                metadata = (("x-correlation-id", "order-42"), ("traceparent", trace))
                reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=2, metadata=metadata)
                assert 0 < reply.remaining <= 2 - MARGIN + 0.1  # grpc's clock vs monotonic
                assert reply.correlation_id == "order-42"
                assert reply.traceparent.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Unary(echo_pb2.EchoRequest(sleep=5), timeout=0.3)
                assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    @pytest.mark.anyio
    async def test_deadline_exceeded_end_to_end_with_meshkit_client(self) -> None:
        """A meshkit client calling A (which calls a slow B) gets DeadlineExceededError."""
        policy = ClientPolicy()
        async with (
            aio_server() as (b_address, b_attempts),
            grpc.aio.insecure_channel(b_address, interceptors=policy.aio_interceptors()) as to_b,
        ):
            relay = Relay(echo_pb2_grpc.EchoStub(to_b))
            async with (
                aio_server(servicer=relay) as (a_address, _),
                grpc.aio.insecure_channel(a_address, interceptors=policy.aio_interceptors()) as ch,
            ):
                stub: Any = echo_pb2_grpc.EchoStub(ch)
                with pytest.raises(DeadlineExceededError):
                    await stub.Unary(echo_pb2.EchoRequest(text="slow", sleep=5), timeout=0.3)
                assert b_attempts.counts["slow"] == 1
