"""Helpers of the gRPC tests: an Echo service (sync and aio) on loopback, and call helpers.

The Echo servicer's behaviour is a few pure functions (`reply`, `should_fail`, `failure`)
driven by a sync and an aio servicer, so both servers behave the same for the matrix tests.
(A module of its own rather than conftest.py: mypy checks one `conftest` module only.)
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep the C core quiet; before grpc loads

import contextlib
import threading
from collections import Counter
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

import echo_pb2
import echo_pb2_grpc
from meshkit import (
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    RpcStatusError,
    VersionConflictError,
)
from meshkit.grpc import ServerPolicy, current_correlation_id, current_trace
from meshkit.resilience import time_remaining

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

KINDS = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
METHODS = {
    "unary_unary": "Unary",
    "unary_stream": "ServerStream",
    "stream_unary": "ClientStream",
    "stream_stream": "Bidi",
}

ERRORS: dict[str, Callable[[], Exception]] = {
    "conflict": lambda: VersionConflictError("order-1", 1, 2),
    "config": lambda: ConfigurationError("quantity", -1, "must be >= 0"),
    "circuit": lambda: CircuitOpenError("inventory", 1.0),
    "deadline": lambda: DeadlineExceededError(1.0),
    "secret": lambda: RuntimeError("password=hunter2"),
    "unavailable": lambda: RpcStatusError("UNAVAILABLE", "try again"),
    "notfound": lambda: RpcStatusError("NOT_FOUND", "no such order"),
    "ok": lambda: RpcStatusError("OK", "not a failure status"),
}


class Attempts:
    """Counts attempts per request text, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def next(self, text: str) -> int:
        with self._lock:
            self.counts[text] += 1
            return self.counts[text]


def reply(
    request: echo_pb2.EchoRequest, index: int, attempt: int, metadata: Any
) -> echo_pb2.EchoReply:
    """Return the reply carrying what the server saw (deadline, ids, trace)."""
    remaining = time_remaining()
    trace = current_trace()
    keys = [v for k, v in metadata if k == "idempotency-key"]
    return echo_pb2.EchoReply(
        text=request.text,
        index=index,
        remaining=-1.0 if remaining is None else remaining,
        correlation_id=current_correlation_id() or "",
        traceparent="" if trace is None else trace.header(),
        idempotency_key=str(keys[0]) if keys else "",
        attempt=attempt,
    )


def should_fail(request: echo_pb2.EchoRequest, attempt: int, sent: int, streams: bool) -> bool:
    """Return whether the handler raises now: unary fails its first `count` attempts (0: all)."""
    if not request.fail:
        return False
    if streams:
        return sent >= request.fail_after
    return request.count == 0 or attempt <= request.count


def failure(request: echo_pb2.EchoRequest) -> Exception:
    """Return the error the request asks for."""
    return ERRORS[request.fail]()


def _messages(request: echo_pb2.EchoRequest) -> int:
    """Return how many messages a stream sends: `count`, at least 1 unless text is "empty"."""
    return 0 if request.text == "empty" else max(request.count, 1)


class SyncEcho(echo_pb2_grpc.EchoServicer):
    """The Echo service for sync grpcio servers."""

    def __init__(self, attempts: Attempts) -> None:
        self.attempts = attempts

    def _one(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        attempt = self.attempts.next(request.text)
        if request.fail == "abort":
            context.abort(grpc.StatusCode.NOT_FOUND, "aborted by handler")
        if should_fail(request, attempt, 0, streams=False):
            raise failure(request)
        if request.sleep:
            threading.Event().wait(request.sleep)
        return reply(request, 0, attempt, context.invocation_metadata())

    def _many(self, request: echo_pb2.EchoRequest, context: Any) -> Iterator[echo_pb2.EchoReply]:
        attempt = self.attempts.next(request.text)
        for index in range(_messages(request)):
            if should_fail(request, attempt, index, streams=True):
                if request.fail == "abort":
                    context.abort(grpc.StatusCode.NOT_FOUND, "aborted by handler")
                raise failure(request)
            if request.sleep:
                threading.Event().wait(request.sleep)
            yield reply(request, index, attempt, context.invocation_metadata())

    def Unary(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._one(request, context)

    def ServerStream(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._many(request, context)

    def ClientStream(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        return self._one(next(request_iterator), context)

    def Bidi(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        return self._many(next(request_iterator), context)


class AioEcho(echo_pb2_grpc.EchoServicer):
    """The Echo service for grpc.aio servers."""

    def __init__(self, attempts: Attempts) -> None:
        self.attempts = attempts

    async def _one(self, request: echo_pb2.EchoRequest, context: Any) -> echo_pb2.EchoReply:
        import anyio  # noqa: PLC0415

        attempt = self.attempts.next(request.text)
        if request.fail == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "aborted by handler")
        if should_fail(request, attempt, 0, streams=False):
            raise failure(request)
        if request.sleep:
            await anyio.sleep(request.sleep)
        return reply(request, 0, attempt, context.invocation_metadata())

    async def _many(
        self, request: echo_pb2.EchoRequest, context: Any
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        import anyio  # noqa: PLC0415

        attempt = self.attempts.next(request.text)
        for index in range(_messages(request)):
            if should_fail(request, attempt, index, streams=True):
                if request.fail == "abort":
                    await context.abort(grpc.StatusCode.NOT_FOUND, "aborted by handler")
                raise failure(request)
            if request.sleep:
                await anyio.sleep(request.sleep)
            yield reply(request, index, attempt, context.invocation_metadata())

    async def Unary(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._one(request, context)

    def ServerStream(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._many(request, context)

    async def ClientStream(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        return await self._one(await anext(aiter(request_iterator)), context)

    async def Bidi(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        first = await anext(aiter(request_iterator))
        async for item in self._many(first, context):
            yield item


@contextlib.contextmanager
def sync_server(
    interceptors: list[Any] | None = None,
    servicer: Any = None,
    credentials: grpc.ServerCredentials | None = None,
) -> Iterator[tuple[str, Attempts]]:
    """Run a sync Echo server on loopback; yield its address and attempt counter.

    Without `interceptors`, the server enforces a default `ServerPolicy`.
    """
    attempts = Attempts()
    if interceptors is None:
        interceptors = [ServerPolicy().interceptor()]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
    echo_pb2_grpc.add_EchoServicer_to_server(servicer or SyncEcho(attempts), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}", attempts
    finally:
        server.stop(None).wait()


@contextlib.asynccontextmanager
async def aio_server(
    interceptors: list[Any] | None = None,
    servicer: Any = None,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[tuple[str, Attempts]]:
    """Run a grpc.aio Echo server on loopback; yield its address and attempt counter.

    Without `interceptors`, the server enforces a default `ServerPolicy`.
    """
    attempts = Attempts()
    if interceptors is None:
        interceptors = [ServerPolicy().aio_interceptor()]
    server = grpc.aio.server(interceptors=interceptors)
    echo_pb2_grpc.add_EchoServicer_to_server(servicer or AioEcho(attempts), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", attempts
    finally:
        await server.stop(None)


def call_sync(
    stub: Any, kind: str, request: echo_pb2.EchoRequest, **kwargs: Any
) -> list[echo_pb2.EchoReply]:
    """Make one call of `kind` on a sync stub; return the replies."""
    method = getattr(stub, METHODS[kind])
    argument = request if kind.startswith("unary") else iter([request])
    if kind.endswith("_unary"):
        return [method(argument, **kwargs)]
    return list(method(argument, **kwargs))


async def call_aio(
    stub: Any, kind: str, request: echo_pb2.EchoRequest, **kwargs: Any
) -> list[echo_pb2.EchoReply]:
    """Make one call of `kind` on a grpc.aio stub; return the replies."""
    method = getattr(stub, METHODS[kind])
    argument = request if kind.startswith("unary") else [request]
    if kind.endswith("_unary"):
        return [await method(argument, **kwargs)]
    return [item async for item in method(argument, **kwargs)]
