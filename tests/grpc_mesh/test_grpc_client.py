"""Client interceptors, sync and aio, all four call kinds, against real loopback servers."""

from __future__ import annotations

from typing import Any

import anyio
import grpc
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import KINDS, aio_server, call_aio, call_sync, sync_server
from meshkit import CircuitOpenError, ConfigurationError, DeadlineExceededError, RpcStatusError
from meshkit.grpc import ClientPolicy, RetryPolicy, ServerPolicy
from meshkit.resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    ExponentialBackoff,
    RetryBudget,
    Timeout,
)

FAST = ExponentialBackoff(base=0.001, cap=0.002)
RETRIES = RetryPolicy(attempts=2, retry_on=["unavailable"], backoff=FAST)


def _breaker() -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerConfig(failure_threshold=2, open_duration=60.0))


class TestSyncClient:
    """ClientPolicy on a sync channel (grpc.intercept_channel)."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_propagation(self, kind: str) -> None:
        """The deadline (minus the margin), correlation id, trace and key reach the server."""
        policy = ClientPolicy(deadline_margin=0.5)
        with (
            sync_server([ServerPolicy().interceptor()]) as (address, _),
            grpc.insecure_channel(address) as raw,
        ):
            stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(raw, policy.interceptor()))
            request = echo_pb2.EchoRequest(text="p")
            (first, *_) = Timeout(3).call_sync(call_sync, stub, kind, request)
            assert 0 < first.remaining <= 2.6
            assert first.correlation_id
            assert first.traceparent.startswith("00-")
            assert first.idempotency_key  # the Echo methods are not read verbs
            (first, *_) = call_sync(stub, kind, request)
            assert first.remaining == -1

    @pytest.mark.parametrize("kind", KINDS)
    def test_retries_errors_and_streams(self, kind: str) -> None:
        """UNAVAILABLE is retried; ABORTED is not; a stream failing after a message is not."""
        policy = ClientPolicy(retries=RETRIES)
        with (
            sync_server() as (address, attempts),
            grpc.insecure_channel(address) as raw,
        ):
            stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(raw, policy.interceptor()))
            retried = echo_pb2.EchoRequest(text="r", fail="unavailable", count=2, fail_after=0)
            if kind == "unary_unary":
                assert stub.Unary(retried).attempt == 3
            if kind == "stream_unary":  # a list can be sent again; a generator cannot
                assert stub.ClientStream([retried]).attempt == 3  # type: ignore[arg-type]
                once = echo_pb2.EchoRequest(text="g", fail="unavailable", count=2)
                with pytest.raises(RpcStatusError):
                    stub.ClientStream(iter([once]))
                assert attempts.counts["g"] == 1
            with pytest.raises(RpcStatusError) as caught:
                call_sync(stub, kind, echo_pb2.EchoRequest(text="c", fail="conflict"))
            assert caught.value.code == "ABORTED"
            assert attempts.counts["c"] == 1
            if kind.endswith("_stream"):
                late = echo_pb2.EchoRequest(text="s", fail="unavailable", count=3, fail_after=1)
                replies: list[Any] = []
                response = getattr(stub, "ServerStream" if kind == "unary_stream" else "Bidi")
                argument = late if kind == "unary_stream" else iter([late])
                with pytest.raises(RpcStatusError):
                    replies.extend(response(argument))
                assert len(replies) == 1
                assert attempts.counts["s"] == 1

    @pytest.mark.parametrize("kind", KINDS)
    def test_deadline_and_breaker(self, kind: str) -> None:
        """A slow call raises DeadlineExceededError; failures open the breaker."""
        policy = ClientPolicy(breaker=_breaker())
        with (
            sync_server() as (address, attempts),
            grpc.insecure_channel(address) as raw,
        ):
            stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(raw, policy.interceptor()))
            with pytest.raises(DeadlineExceededError):
                Timeout(0.2).call_sync(call_sync, stub, kind, echo_pb2.EchoRequest(sleep=2))
            failing = echo_pb2.EchoRequest(text="f", fail="unavailable")
            with pytest.raises(RpcStatusError):
                call_sync(stub, kind, failing)
            with pytest.raises(CircuitOpenError):
                call_sync(stub, kind, failing)
            assert attempts.counts["f"] == 1


class TestAioClient:
    """ClientPolicy on a grpc.aio channel."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_propagation(self, kind: str) -> None:
        """The deadline (minus the margin), correlation id, trace and key reach the server."""
        policy = ClientPolicy(deadline_margin=0.5)
        async with (
            aio_server([ServerPolicy().aio_interceptor()]) as (address, _),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            request = echo_pb2.EchoRequest(text="p")
            async with Timeout(3):
                (first, *_) = await call_aio(stub, kind, request)
            assert 0 < first.remaining <= 2.6
            assert first.correlation_id
            assert first.idempotency_key

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_retries_errors_and_streams(self, kind: str) -> None:
        """UNAVAILABLE is retried; ABORTED is not; a stream failing after a message is not."""
        policy = ClientPolicy(retries=RETRIES, budget=RetryBudget(min_retries_per_second=100))
        async with (
            aio_server() as (address, attempts),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            retried = echo_pb2.EchoRequest(text="r", fail="unavailable", count=2)
            if kind.endswith("_unary"):
                (reply,) = await call_aio(stub, kind, retried)
                assert reply.attempt == 3
            with pytest.raises(RpcStatusError) as caught:
                await call_aio(stub, kind, echo_pb2.EchoRequest(text="c", fail="conflict"))
            assert caught.value.code == "ABORTED"
            assert attempts.counts["c"] == 1
            if kind.endswith("_stream"):
                late = echo_pb2.EchoRequest(text="s", fail="unavailable", count=3, fail_after=1)
                replies: list[Any] = []
                method = stub.ServerStream if kind == "unary_stream" else stub.Bidi
                argument = late if kind == "unary_stream" else [late]
                with pytest.raises(RpcStatusError):  # noqa: PT012 - the error comes mid-loop
                    async for item in method(argument):
                        replies.append(item)  # noqa: PERF401 - keep what came before the error
                assert len(replies) == 1
                assert attempts.counts["s"] == 1

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("margin", [0.0, 0.005])
    async def test_deadline_is_deadline_exceeded(self, kind: str, margin: float) -> None:
        """A meshkit Timeout or an anyio scope expiring mid-call gives DeadlineExceededError."""
        policy = ClientPolicy(deadline_margin=margin)
        async with (
            aio_server() as (address, _),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            slow = echo_pb2.EchoRequest(sleep=5)
            for _ in range(3):
                with pytest.raises(DeadlineExceededError):
                    async with Timeout(0.1):
                        await call_aio(stub, kind, slow)
                with pytest.raises(TimeoutError):
                    with anyio.fail_after(0.1):
                        await call_aio(stub, kind, slow)

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_breaker(self, kind: str) -> None:
        """Server failures open the breaker; the next call does not reach the server."""
        policy = ClientPolicy(breaker=_breaker())
        async with (
            aio_server() as (address, attempts),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            failing = echo_pb2.EchoRequest(text="f", fail="unavailable")
            for _ in range(2):
                with pytest.raises(RpcStatusError):
                    await call_aio(stub, kind, failing)
            with pytest.raises(CircuitOpenError):
                await call_aio(stub, kind, failing)
            assert attempts.counts["f"] == 2


BAD_METADATA = [
    (("x-note", "h\u00e9llo"),),
    (("x-s", "\ud800"),),
    (("x-n", "a\x00b"),),
    (("X-Upper", "v"),),
    (("bad key", "v"),),
    (("x-data-bin", "text, not bytes"),),
    (("x-text", b"\xff"),),
    ((b"x-bytes-key", "v"),),
]


class TestBadOutgoingMetadata:
    """Metadata grpc would refuse is a ConfigurationError, never a raw grpc/Unicode error."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("metadata", BAD_METADATA)
    async def test_aio_interceptor(self, metadata: Any) -> None:
        """The aio interceptors refuse it before grpc sees it."""
        policy = ClientPolicy()
        async with (
            aio_server() as (address, attempts),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            with pytest.raises(ConfigurationError):
                await stub.Unary(echo_pb2.EchoRequest(text="m"), metadata=metadata)
            assert attempts.counts["m"] == 0

    @pytest.mark.parametrize("metadata", BAD_METADATA)
    def test_sync_interceptor(self, metadata: Any) -> None:
        """The sync interceptor refuses it before grpc sees it."""
        with (
            sync_server() as (address, attempts),
            grpc.insecure_channel(address) as channel,
        ):
            stub = echo_pb2_grpc.EchoStub(
                grpc.intercept_channel(channel, ClientPolicy().interceptor())
            )
            with pytest.raises(ConfigurationError):
                stub.Unary(echo_pb2.EchoRequest(text="m"), metadata=metadata)
            assert attempts.counts["m"] == 0


class TestHugeTimeouts:
    """A timeout of centuries is sent as one grpc can represent, not an instant failure."""

    @pytest.mark.anyio
    async def test_policy_and_call_timeouts(self) -> None:
        """grpc fails a timeout past ~292 years from the epoch at once: it is capped."""
        policy = ClientPolicy(timeout=1e12)
        async with (
            aio_server() as (address, _),
            grpc.aio.insecure_channel(address, interceptors=policy.aio_interceptors()) as ch,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(ch)
            reply = await stub.Unary(echo_pb2.EchoRequest(text="long"))
            assert reply.text == "long"
            reply = await stub.Unary(echo_pb2.EchoRequest(text="long"), timeout=1e300)
            assert reply.remaining > 0
