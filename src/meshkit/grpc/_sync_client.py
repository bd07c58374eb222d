"""The grpcio (sync) client adapter of `ClientPolicy`: one class for the four call kinds.

`grpc.intercept_channel` honours an interceptor that implements several kinds, so one class
with two shapes (a unary response; a response stream) is enough here. A response stream is
returned as a lazy `ResponseStream`: its first `next()` runs the attempts (so a bidi caller
can still feed requests), and later failures are raised as meshkit errors, never retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, final

import grpc

from meshkit.grpc._codes import Code, error_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from meshkit.grpc._client import CallPlan, ClientPolicy, Failed

__all__ = [
    "ResponseStream",
    "SyncClientInterceptor",
    "code_of",
    "fresh",
    "method_of",
    "replayable",
]

_END = object()


class _Fields(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _Details(_Fields, grpc.ClientCallDetails):
    """The call details of one attempt."""


def method_of(details: Any) -> str:
    """Return the full method name of a call's details (aio gives bytes)."""
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def code_of(error: Any) -> Code:
    """Return meshkit's `Code` for a grpcio error."""
    code = error.code()
    return Code(code.value[0]) if code is not None else Code.UNKNOWN


def replayable(request: object) -> bool:
    """Return whether a request can be sent again: a message, or a list/tuple of messages."""
    return isinstance(request, list | tuple) or (
        not hasattr(request, "__next__") and not hasattr(request, "__anext__")
    )


def fresh(request: Any) -> Any:
    """Return the request to send in one attempt: a new iterator over a list/tuple of them."""
    return iter(request) if isinstance(request, list | tuple) else request


@final
class ResponseStream:
    """A response stream that starts on its first `next()`; also a `grpc.Call`."""

    def __init__(self, plan: CallPlan, start: Callable[[], tuple[Any, Any]]) -> None:
        self._plan = plan
        self._start: Callable[[], tuple[Any, Any]] | None = start
        self._call: Any = None
        self._first: Any = _END

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._start is not None:
            start, self._start = self._start, None
            self._call, self._first = start()
        if self._first is not _END:
            first, self._first = self._first, _END
            return first
        if self._call is None:  # cancelled before it started
            raise error_for(Code.CANCELLED, "cancelled before it started", self._plan.method)
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            raise error_for(code_of(exc), exc.details() or "", self._plan.method) from exc

    def cancel(self) -> bool:
        """Cancel the call (before it started: it never starts)."""
        if self._call is None:
            self._start = None
            return True
        return bool(self._call.cancel())

    def is_active(self) -> bool:
        """Return whether the call is still running."""
        return self._call is not None and bool(self._call.is_active())

    def code(self) -> grpc.StatusCode | None:
        """Return the call's status code (None before it ended)."""
        return None if self._call is None else self._call.code()

    def details(self) -> str | None:
        """Return the call's status details."""
        return None if self._call is None else self._call.details()

    def initial_metadata(self) -> Any:
        """Return the server's initial metadata (None before the call started)."""
        return None if self._call is None else self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        """Return the server's trailing metadata (None before the call started)."""
        return None if self._call is None else self._call.trailing_metadata()


def _details(details: Any, timeout: float | None, plan: CallPlan) -> _Details:
    return _Details(
        details.method,
        timeout,
        plan.metadata,
        details.credentials,
        details.wait_for_ready,
        getattr(details, "compression", None),
    )


@final
class SyncClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Apply a `ClientPolicy` to the calls of a sync channel, of all four kinds."""

    def __init__(self, policy: ClientPolicy) -> None:
        self._policy = policy

    def _plan(self, details: Any, request: object, kind: str) -> CallPlan:
        return self._policy.plan(
            method_of(details),
            details.timeout,
            details.metadata,
            replayable=replayable(request),
            kind=kind,
        )

    def _unary(
        self, continuation: Callable[..., Any], details: Any, request: Any, kind: str
    ) -> Any:
        plan = self._plan(details, request, kind)

        def once(limit: float | None) -> Any:
            outcome = continuation(_details(details, limit, plan), fresh(request))
            try:
                outcome.result()
            except grpc.RpcError as exc:
                return plan.failure(code_of(exc), outcome.details() or "", limit)
            return outcome

        return plan.run_sync(once)

    def _stream(
        self, continuation: Callable[..., Any], details: Any, request: Any, kind: str
    ) -> Any:
        plan = self._plan(details, request, kind)

        def once(limit: float | None) -> tuple[Any, Any] | Failed:
            call = continuation(_details(details, limit, plan), fresh(request))
            try:
                return call, next(call)
            except StopIteration:
                return call, _END
            except grpc.RpcError as exc:
                return plan.failure(code_of(exc), exc.details() or "", limit)

        return ResponseStream(plan, lambda: plan.run_sync(once))

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._unary(continuation, client_call_details, request, "unary")

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._unary(continuation, client_call_details, request_iterator, "client_stream")

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._stream(continuation, client_call_details, request, "server_stream")

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._stream(continuation, client_call_details, request_iterator, "bidi_stream")
