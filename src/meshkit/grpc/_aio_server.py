"""The `grpc.aio` server adapter of `ServerPolicy`.

Two wrappers, one per response shape, shared by the four call kinds (as in `_sync_server`).
The handler runs under a meshkit `Timeout` for the caller's deadline; a streaming handler gets
a fresh `Timeout` for the time left at each step, so that no cancel scope stays open across a
`yield` (grpcio, not this generator, runs between two responses). A handler in grpc.aio's
reader/writer style (a coroutine calling `context.write()`) is awaited the same way.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, final

import anyio
import grpc

from meshkit.grpc._server import Admission, Memo, ServerPolicy
from meshkit.grpc._sync_server import (
    HandlerFace,
    cached_handler,
    incoming_call,
    policy_handler,
    status_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from meshkit.grpc._metrics import CallObserver

__all__ = ["AioServerInterceptor"]


async def _bounded(admission: Admission, step: Awaitable[Any]) -> Any:
    timeout = admission.timeout()
    if timeout is None:
        return await step
    async with timeout:
        return await step


async def _abort(policy: ServerPolicy, method: str, context: Any, exc: Exception) -> None:
    code, details = policy.failed(method, exc)
    await context.abort(grpc.StatusCode[code.name], details)


async def _io(memo: Memo, fn: Callable[..., Any], *args: Any) -> Any:
    if memo.store.blocking:
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)


async def _remembered(
    admission: Admission, memo: Memo, run: Callable[[], Awaitable[Any]], serialize: Any
) -> Any:
    stored = await _io(memo, memo.begin)
    if stored is not None:
        return stored  # bytes: the handler's serializer passes them through
    try:
        response = await _bounded(admission, run())
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _io(memo, memo.abandon)
        raise
    await _io(memo, memo.complete, serialize(response))
    return response


def _unary_response(
    policy: ServerPolicy, method: str, behavior: Callable[..., Awaitable[Any]], serialize: Any
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        try:
            admission = policy.admit(incoming_call(context, method))
            tokens = admission.enter()
            try:
                memo = policy.memo(admission, request)
                if memo is None:
                    return await _bounded(admission, behavior(request, context))
                return await _remembered(
                    admission, memo, lambda: behavior(request, context), serialize
                )
            finally:
                Admission.leave(tokens)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(policy, method, context, exc)

    return handle


def _stream_response(
    policy: ServerPolicy, method: str, behavior: Callable[..., Any], serialize: Any
) -> Callable[..., AsyncIterator[Any]]:
    del serialize  # streamed answers are not remembered

    async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            admission = policy.admit(incoming_call(context, method))
            tokens = admission.enter()
            try:
                responses = behavior(request, context)
                if inspect.isawaitable(responses):  # reader/writer style: it writes itself
                    await _bounded(admission, responses)
                    return
                iterator = aiter(responses)
                while True:
                    try:
                        item = await _bounded(admission, anext(iterator))
                    except StopAsyncIteration:
                        return
                    yield item
            finally:
                Admission.leave(tokens)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _abort(policy, method, context, exc)

    return handle


def _observed_unary(observer: CallObserver, kind: str, method: str, handle: Any) -> Any:
    async def observed(request: Any, context: Any) -> Any:
        token = observer.started("server", kind, method)
        try:
            return await handle(request, context)
        finally:
            observer.handled(token, status_of(context))

    return observed


def _observed_stream(observer: CallObserver, kind: str, method: str, handle: Any) -> Any:
    async def observed(request: Any, context: Any) -> AsyncIterator[Any]:
        token = observer.started("server", kind, method)
        try:
            async for item in handle(request, context):
                yield item
        finally:
            observer.handled(token, status_of(context))

    return observed


_FACE = HandlerFace(_unary_response, _stream_response, _observed_unary, _observed_stream)
"""This module's handlers, for `policy_handler`."""


@final
class AioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Enforce a `ServerPolicy` on a `grpc.aio` server, for all four call kinds."""

    def __init__(self, policy: ServerPolicy) -> None:
        self._policy = policy
        self._handlers: dict[str, tuple[Any, Any]] = {}

    def _wrap(self, method: str, kind: str, behavior: Any, serialize: Any) -> Any:
        return policy_handler(self._policy, _FACE, method, kind, behavior, serialize)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Wrap the handler grpc.aio found for the call (None: unknown method, left alone)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return cached_handler(self._handlers, handler, self._wrap, handler_call_details.method)
