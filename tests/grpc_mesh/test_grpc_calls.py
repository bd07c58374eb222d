"""The call objects the client interceptors return, per-try timeouts, and odd handlers."""

from __future__ import annotations

from typing import Any

import anyio
import grpc
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import AioEcho, Attempts, aio_server, sync_server
from meshkit import DeadlineExceededError, RpcStatusError
from meshkit.grpc import ClientPolicy, RetryPolicy, ServerPolicy
from meshkit.resilience import ExponentialBackoff

PER_TRY = RetryPolicy(
    attempts=1, per_try_timeout=0.1, backoff=ExponentialBackoff(base=0.001, cap=0.002)
)


class WriterEcho(AioEcho):
    """A grpc.aio servicer in reader/writer style (context.write, no generator)."""

    async def ServerStream(self, request: Any, context: Any) -> None:  # type: ignore[override] # noqa: N802
        for index in range(2):
            await context.write(echo_pb2.EchoReply(text=request.text, index=index))


class TestSyncCalls:
    """The sync ResponseStream and unary outcome."""

    def test_response_stream_is_a_call(self) -> None:
        """Before and after starting, the stream answers the grpc.Call questions."""
        policy = ClientPolicy()
        with sync_server() as (address, attempts), grpc.insecure_channel(address) as raw:
            stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(raw, policy.interceptor()))
            stream: Any = stub.ServerStream(echo_pb2.EchoRequest(text="s", count=2))
            assert stream.code() is None
            assert stream.details() is None
            assert stream.initial_metadata() is None
            assert stream.trailing_metadata() is None
            assert not stream.is_active()
            assert [r.index for r in stream] == [0, 1]
            assert stream.code() == grpc.StatusCode.OK
            assert stream.details() is not None or stream.details() is None
            assert stream.trailing_metadata() is not None
            assert stream.initial_metadata() is not None
            assert not stream.cancel()  # already finished
            unstarted: Any = stub.ServerStream(echo_pb2.EchoRequest(text="never"))
            assert unstarted.cancel()
            with pytest.raises(RpcStatusError, match="CANCELLED"):
                list(unstarted)
            assert attempts.counts["never"] == 0
            assert list(stub.ServerStream(echo_pb2.EchoRequest(text="empty"))) == []
            with pytest.raises(RpcStatusError, match="INTERNAL"):  # Echo needs one request
                list(stub.Bidi(iter([])))

    def test_per_try_timeout_is_retried(self) -> None:
        """Each attempt gets the per-try timeout; running out of it is retried."""
        policy = ClientPolicy(retries=PER_TRY)
        with sync_server() as (address, attempts), grpc.insecure_channel(address) as raw:
            stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(raw, policy.interceptor()))
            with pytest.raises(DeadlineExceededError):
                stub.Unary(echo_pb2.EchoRequest(text="slow", sleep=1), timeout=5)
            assert attempts.counts["slow"] == 2


class TestAioCalls:
    """The grpc.aio call objects."""

    @pytest.mark.anyio
    async def test_unary_response_is_a_call(self) -> None:
        """The answer carries the real call's status and metadata."""
        policy = ClientPolicy()
        async with (
            aio_server() as (address, _),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            call = stub.Unary(echo_pb2.EchoRequest(text="u"))
            assert (await call).text == "u"
            assert await call.code() == grpc.StatusCode.OK
            assert await call.details() == ""
            assert await call.initial_metadata() is not None
            assert await call.trailing_metadata() is not None
            assert call.done()
            assert not call.cancelled()

    @pytest.mark.anyio
    async def test_response_stream_is_a_call(self) -> None:
        """read(), write() and the status methods work on a meshkit response stream."""
        policy = ClientPolicy()
        async with (
            aio_server() as (address, _),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            call = stub.ServerStream(echo_pb2.EchoRequest(text="s", count=2))
            assert (await call.read()).index == 0
            assert (await call.read()).index == 1
            assert await call.read() is grpc.aio.EOF  # type: ignore[attr-defined]
            assert await call.code() == grpc.StatusCode.OK
            assert await call.details() == ""
            assert await call.initial_metadata() is not None
            assert await call.trailing_metadata() is not None
            await call.wait_for_connection()
            assert call.done()
            assert not call.cancelled()
            assert not call.cancel()
            done = anyio.Event()
            call.add_done_callback(lambda _c: done.set())
            bidi = stub.Bidi()  # the write API: no request iterator
            await bidi.write(echo_pb2.EchoRequest(text="w", count=1))
            await bidi.done_writing()
            assert [r.text async for r in bidi] == ["w"]
            empty = stub.ServerStream(echo_pb2.EchoRequest(text="empty"))
            assert [r.text async for r in empty] == []

            async def requests(fail: str) -> Any:
                yield echo_pb2.EchoRequest(text="g", fail=fail)

            assert (await stub.ClientStream(requests(""))).text == "g"
            with pytest.raises(RpcStatusError, match="ABORTED"):
                await stub.ClientStream(requests("conflict"))

    @pytest.mark.anyio
    async def test_writer_style_handler_and_unknown_method(self) -> None:
        """A context.write() handler streams through the server policy; unknown methods 404."""
        async with (
            aio_server(servicer=WriterEcho(Attempts())) as (address, _),
            grpc.aio.insecure_channel(address) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            replies = [r.index async for r in stub.ServerStream(echo_pb2.EchoRequest(text="w"))]
            assert replies == [0, 1]
            missing = ch.unary_unary(
                "/meshkit.test.v1.Echo/Missing", request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await missing(b"")
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

    @pytest.mark.anyio
    async def test_per_try_timeout_and_cancellation(self) -> None:
        """Per-try timeouts are retried; an outside cancellation stays a cancellation."""
        policy = ClientPolicy(retries=PER_TRY)
        async with (
            aio_server([ServerPolicy().aio_interceptor()]) as (address, attempts),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            with pytest.raises(DeadlineExceededError):
                await stub.Unary(echo_pb2.EchoRequest(text="slow", sleep=1), timeout=5)
            assert attempts.counts["slow"] == 2
            async with anyio.create_task_group() as tg:

                async def slow_call() -> None:
                    await stub.Unary(echo_pb2.EchoRequest(text="c", sleep=5))

                tg.start_soon(slow_call)
                await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
            assert tg.cancel_scope.cancelled_caught
