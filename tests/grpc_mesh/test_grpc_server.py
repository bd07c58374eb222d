"""Server interceptors, sync and aio, all four call kinds, against real loopback servers."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import KINDS, aio_server, call_aio, call_sync, sync_server
from meshkit.grpc import Action, AuthorizationPolicy, Operation, Rule, ServerPolicy
from meshkit.resilience import RateLimiter
from meshkit.testing import FakeClock

# What each error raised by a handler is answered with.
EXPECTED = {
    "conflict": grpc.StatusCode.ABORTED,
    "config": grpc.StatusCode.INVALID_ARGUMENT,
    "circuit": grpc.StatusCode.UNAVAILABLE,
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    "secret": grpc.StatusCode.INTERNAL,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "notfound": grpc.StatusCode.NOT_FOUND,
    "abort": grpc.StatusCode.NOT_FOUND,
    "ok": grpc.StatusCode.UNKNOWN,  # an error claiming OK: grpc.aio hung on abort(OK)
}

DENY_ECHO = AuthorizationPolicy(
    name="deny-unary",
    action=Action.DENY,
    rules=(Rule(operations=(Operation(paths=("/meshkit.test.v1.Echo/*",), methods=("POST",)),)),),
)


def _code(exc: BaseException) -> grpc.StatusCode:
    assert isinstance(exc, grpc.RpcError)
    code: grpc.StatusCode = exc.code()
    return code


class TestSyncServer:
    """ServerPolicy on a sync grpcio server."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_deadline_ids_and_errors(self, kind: str) -> None:
        """The handler sees the caller's deadline and ids; errors map to codes before/mid-stream."""
        with (
            sync_server([ServerPolicy().interceptor()]) as (address, _),
            grpc.insecure_channel(address) as channel,
        ):
            stub = echo_pb2_grpc.EchoStub(channel)
            meta = (("x-correlation-id", "corr-1"),)
            (first, *_) = call_sync(
                stub, kind, echo_pb2.EchoRequest(text="a"), timeout=5, metadata=meta
            )
            assert 0 < first.remaining <= 5.1  # grpc reads its deadline on another clock
            assert first.correlation_id == "corr-1"
            assert first.traceparent.startswith("00-")
            (first, *_) = call_sync(stub, kind, echo_pb2.EchoRequest(text="b"))
            assert first.remaining == -1
            for fail, code in EXPECTED.items():
                request = echo_pb2.EchoRequest(text=fail, fail=fail, count=3, fail_after=1)
                with pytest.raises(grpc.RpcError) as caught:
                    call_sync(stub, kind, request, timeout=5)
                assert _code(caught.value) == code, fail
                if fail == "secret":
                    assert "hunter2" not in (caught.value.details() or "")

    @pytest.mark.parametrize("kind", KINDS)
    def test_authorization_and_rate_limit(self, kind: str) -> None:
        """A DENY policy answers PERMISSION_DENIED; an empty limiter RESOURCE_EXHAUSTED."""
        clock = FakeClock()
        limiter = RateLimiter(rate=1, burst=1, clock=clock)
        with (
            sync_server([ServerPolicy(authorization=(DENY_ECHO,)).interceptor()]) as (denied, _),
            sync_server([ServerPolicy(rate_limiter=limiter).interceptor()]) as (limited, _),
            grpc.insecure_channel(denied) as channel,
            grpc.insecure_channel(limited) as channel2,
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call_sync(echo_pb2_grpc.EchoStub(channel), kind, echo_pb2.EchoRequest())
            assert _code(caught.value) == grpc.StatusCode.PERMISSION_DENIED
            stub = echo_pb2_grpc.EchoStub(channel2)
            call_sync(stub, kind, echo_pb2.EchoRequest())
            with pytest.raises(grpc.RpcError) as caught:
                call_sync(stub, kind, echo_pb2.EchoRequest())
            assert _code(caught.value) == grpc.StatusCode.RESOURCE_EXHAUSTED

    def test_bad_idempotency_key_and_logging(self, caplog: pytest.LogCaptureFixture) -> None:
        """A malformed idempotency key is INVALID_ARGUMENT; an unexpected error is logged."""
        with (
            sync_server([ServerPolicy().interceptor()]) as (address, _),
            grpc.insecure_channel(address) as channel,
            caplog.at_level(logging.INFO, logger="meshkit.grpc"),
        ):
            stub = echo_pb2_grpc.EchoStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Unary(echo_pb2.EchoRequest(), metadata=(("idempotency-key", "a b" * 100),))
            assert _code(caught.value) == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError):
                stub.Unary(echo_pb2.EchoRequest(fail="secret"))
        failed = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert failed
        assert failed[0].grpc_code == "INTERNAL"  # type: ignore[attr-defined]

    def test_unknown_method_is_left_to_grpc(self) -> None:
        """A method with no handler still gets UNIMPLEMENTED."""
        with (
            sync_server([ServerPolicy().interceptor()]) as (address, _),
            grpc.insecure_channel(address) as channel,
        ):
            missing = channel.unary_unary(
                "/meshkit.test.v1.Echo/Missing", request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.RpcError) as caught:
                missing(b"")
            assert _code(caught.value) == grpc.StatusCode.UNIMPLEMENTED


class TestAioServer:
    """ServerPolicy on a grpc.aio server."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_deadline_ids_and_errors(self, kind: str) -> None:
        """The handler sees the caller's deadline and ids; errors map to codes before/mid-stream."""
        async with (
            aio_server([ServerPolicy().aio_interceptor()]) as (address, _),
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(channel)
            meta = (("x-correlation-id", "corr-1"),)
            request = echo_pb2.EchoRequest(text="a")
            (first, *_) = await call_aio(stub, kind, request, timeout=5, metadata=meta)
            assert 0 < first.remaining <= 5.1  # grpc reads its deadline on another clock
            assert first.correlation_id == "corr-1"
            (first, *_) = await call_aio(stub, kind, echo_pb2.EchoRequest(text="b"))
            assert first.remaining == -1
            for fail, code in EXPECTED.items():
                request = echo_pb2.EchoRequest(text=fail, fail=fail, count=3, fail_after=1)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call_aio(stub, kind, request, timeout=5)
                assert caught.value.code() == code, fail
                if fail == "secret":
                    assert "hunter2" not in (caught.value.details() or "")

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_authorization_and_rate_limit(self, kind: str) -> None:
        """A DENY policy answers PERMISSION_DENIED; an empty limiter RESOURCE_EXHAUSTED."""
        limiter = RateLimiter(rate=1, burst=1, clock=FakeClock())
        denied_policy = ServerPolicy(authorization=(DENY_ECHO,))
        async with (
            aio_server([denied_policy.aio_interceptor()]) as (denied, _),
            aio_server([ServerPolicy(rate_limiter=limiter).aio_interceptor()]) as (limited, _),
            grpc.aio.insecure_channel(denied) as channel,
            grpc.aio.insecure_channel(limited) as channel2,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_aio(echo_pb2_grpc.EchoStub(channel), kind, echo_pb2.EchoRequest())
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            stub: Any = echo_pb2_grpc.EchoStub(channel2)
            await call_aio(stub, kind, echo_pb2.EchoRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_aio(stub, kind, echo_pb2.EchoRequest())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    @pytest.mark.anyio
    async def test_handler_deadline_is_enforced(self) -> None:
        """A handler outliving the caller's deadline is cancelled by meshkit's Timeout."""
        async with (
            aio_server([ServerPolicy().aio_interceptor()]) as (address, _),
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Unary(echo_pb2.EchoRequest(sleep=5), timeout=0.2)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class TestBadInput:
    """Malformed or oversized metadata gets a status, never a crash or a hang."""

    def test_oversized_and_odd_metadata(self) -> None:
        """A huge header, binary headers and junk trace/correlation values."""
        with (
            sync_server() as (address, _),
            grpc.insecure_channel(address) as channel,
        ):
            stub = echo_pb2_grpc.EchoStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Unary(echo_pb2.EchoRequest(), metadata=(("x-big", "x" * 100_000),), timeout=5)
            assert _code(caught.value) in {
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNAVAILABLE,
            }
            odd = (
                ("traceparent", "00-zz-yy-01"),
                ("x-correlation-id", "a b"),
                ("idempotency-key-bin", b"\x00\xff"),
            )
            reply = stub.Unary(echo_pb2.EchoRequest(text="ok"), metadata=odd, timeout=5)
            assert reply.text == "ok"
            assert reply.correlation_id != "a b"
            assert reply.traceparent.startswith("00-")


class TestHandlerCache:
    """The wrapped handler is built once per method, and again for a new handler."""

    def test_same_handler_reuses_the_wrapper(self) -> None:
        """The same grpc handler gives the same wrapper; another handler a new one."""
        from meshkit.grpc._sync_server import cached_handler  # noqa: PLC0415 - private

        built: list[str] = []

        def wrap(method: str, kind: str, behavior: Any, serialize: Any) -> Any:
            built.append(kind)
            return behavior

        cache: dict[str, tuple[Any, Any]] = {}
        first = grpc.unary_unary_rpc_method_handler(lambda r, c: r)
        second = grpc.unary_stream_rpc_method_handler(lambda r, c: iter([r]))
        a = cached_handler(cache, first, wrap, "/s.S/M")
        assert cached_handler(cache, first, wrap, "/s.S/M") is a
        b = cached_handler(cache, second, wrap, "/s.S/M")
        assert b is not a
        assert built == ["unary_unary", "unary_stream"]
