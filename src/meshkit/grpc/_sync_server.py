"""The grpcio (sync, thread-pool) server adapter of `ServerPolicy`.

One wrapper per response shape (a value, or an iterator of values); the request shape does
not matter to the policy, so the four call kinds share these two wrappers. The handler runs
in a `contextvars.Context` holding the caller's deadline, correlation id and trace, and so
does each step of a streaming handler, since a generator runs in its caller's context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, final

import attrs
import grpc

from meshkit.grpc._codes import Code
from meshkit.grpc._metrics import GRPC_TYPES
from meshkit.grpc._server import IncomingCall, Memo, ServerPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from meshkit.grpc._metrics import CallObserver

__all__ = [
    "HandlerFace",
    "SyncServerInterceptor",
    "cached_handler",
    "incoming_call",
    "policy_handler",
    "status_of",
    "wrapped_handler",
]


def incoming_call(context: Any, method: str) -> IncomingCall:
    """Read what the policy needs from a sync or aio servicer context."""
    spiffe = context.auth_context().get("peer_spiffe_id")
    return IncomingCall(
        method=method,
        metadata=tuple(context.invocation_metadata() or ()),
        spiffe_id=spiffe[0].decode("utf-8", "replace") if spiffe else None,
        time_remaining=context.time_remaining(),
    )


def _aborted(context: grpc.ServicerContext) -> bool:
    """Return whether the handler already chose a status (`context.abort()` raised)."""
    code = context.code()  # type: ignore[attr-defined]
    return code is not None and code != grpc.StatusCode.OK


def _abort(
    policy: ServerPolicy, method: str, context: grpc.ServicerContext, exc: Exception
) -> NoReturn:
    code, details = policy.failed(method, exc)
    context.abort(grpc.StatusCode[code.name], details)
    raise AssertionError  # pragma: no cover - abort() always raises


def _remembered(memo: Memo, run: Callable[[], Any], serialize: Callable[[Any], bytes]) -> Any:
    stored = memo.begin()
    if stored is not None:
        return stored  # bytes: the handler's serializer passes them through
    try:
        response = run()
    except BaseException:
        memo.abandon()
        raise
    memo.complete(serialize(response))
    return response


def _unary_response(
    policy: ServerPolicy,
    method: str,
    behavior: Callable[..., Any],
    serialize: Callable[[Any], bytes],
) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            admission = policy.admit(incoming_call(context, method))
            run = admission.context().run
            memo = policy.memo(admission, request)
            if memo is None:
                return run(behavior, request, context)
            return _remembered(memo, lambda: run(behavior, request, context), serialize)
        except Exception as exc:
            if _aborted(context):
                raise
            _abort(policy, method, context, exc)

    return handle


def _stream_response(
    policy: ServerPolicy, method: str, behavior: Callable[..., Iterator[Any]], serialize: Any
) -> Callable[..., Iterator[Any]]:
    del serialize  # streamed answers are not remembered

    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            run = policy.admit(incoming_call(context, method)).context().run
            responses = run(behavior, request, context)
            while True:
                try:
                    item = run(next, responses)
                except StopIteration:
                    return
                yield item
        except Exception as exc:
            if _aborted(context):
                raise
            _abort(policy, method, context, exc)

    return handle


def status_of(context: Any) -> Code:
    """Return the status a handler ended with (OK unless it was aborted)."""
    code = context.code()
    return Code.OK if code is None else Code(code.value[0])


def _observed_unary(observer: CallObserver, kind: str, method: str, handle: Any) -> Any:
    def observed(request: Any, context: Any) -> Any:
        token = observer.started("server", kind, method)
        try:
            return handle(request, context)
        finally:
            observer.handled(token, status_of(context))

    return observed


def _observed_stream(observer: CallObserver, kind: str, method: str, handle: Any) -> Any:
    def observed(request: Any, context: Any) -> Iterator[Any]:
        token = observer.started("server", kind, method)
        try:
            yield from handle(request, context)
        finally:
            observer.handled(token, status_of(context))

    return observed


def _serializer(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    def passthrough(response: Any) -> bytes:
        # A stored (already serialized) answer is sent as it is.
        if isinstance(response, bytes) or serialize is None:
            return response  # type: ignore[no-any-return]
        return serialize(response)

    return passthrough


def wrapped_handler(handler: Any, wrap: Callable[..., Any], method: str) -> Any:
    """Return `handler` with its behaviour replaced by `wrap(method, streams, behaviour, ser)`.

    Shared by the sync and aio servers: the kind is read from the handler's two flags.
    """
    request = "stream" if handler.request_streaming else "unary"
    response = "stream" if handler.response_streaming else "unary"
    kind = f"{request}_{response}"
    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    serialize = _serializer(handler.response_serializer)
    behavior = wrap(method, kind, getattr(handler, kind), serialize)
    return factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=serialize,
    )


@attrs.frozen
class HandlerFace:
    """One server face's handler wrappers (grpc.aio's or grpcio's)."""

    unary_response: Callable[..., Any]
    stream_response: Callable[..., Any]
    observed_unary: Callable[..., Any]
    observed_stream: Callable[..., Any]


def policy_handler(  # noqa: PLR0917 - one face's wrapping of one method
    policy: ServerPolicy,
    face: HandlerFace,
    method: str,
    kind: str,
    behavior: Any,
    serialize: Any,
) -> Any:
    """Return a method's behaviour wrapped in `policy` (and its observer) by `face`."""
    streams = kind.endswith("_stream")
    wrap = face.stream_response if streams else face.unary_response
    handle = wrap(policy, method, behavior, serialize)
    observer = policy.observer
    if observer is None:
        return handle
    observe = face.observed_stream if streams else face.observed_unary
    return observe(observer, GRPC_TYPES[kind], method, handle)


def cached_handler(
    cache: dict[str, tuple[Any, Any]], handler: Any, wrap: Callable[..., Any], method: str
) -> Any:
    """Return `wrapped_handler(handler, wrap, method)`, built once per method and handler.

    grpc's generic handlers hand out the same handler object for a method on every call, so
    the wrapped one (four closures and grpc's handler tuple) is kept instead of rebuilt per
    call; a different handler object (another interceptor's) replaces the entry. Only
    methods the server knows get here, so the cache is bounded by the server's methods.
    """
    found = cache.get(method)
    if found is not None and found[0] is handler:
        return found[1]
    wrapped = wrapped_handler(handler, wrap, method)
    cache[method] = (handler, wrapped)
    return wrapped


_FACE = HandlerFace(_unary_response, _stream_response, _observed_unary, _observed_stream)
"""This module's handlers, for `policy_handler`."""


@final
class SyncServerInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Enforce a `ServerPolicy` on a sync grpcio server, for all four call kinds."""

    def __init__(self, policy: ServerPolicy) -> None:
        self._policy = policy
        self._handlers: dict[str, tuple[Any, Any]] = {}

    def _wrap(self, method: str, kind: str, behavior: Any, serialize: Any) -> Any:
        return policy_handler(self._policy, _FACE, method, kind, behavior, serialize)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Wrap the handler grpcio found for the call (None: unknown method, left alone)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return cached_handler(self._handlers, handler, self._wrap, handler_call_details.method)
