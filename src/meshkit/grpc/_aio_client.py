"""The `grpc.aio` client adapter of `ClientPolicy`: one interceptor class per call kind.

grpc.aio registers a class that inherits several of its four interceptor bases for its first
kind only (grpc/grpc#31442), so the four classes are generated from one table below; they
share two shapes (a unary response; a response stream), which drive `CallPlan`.

asyncio is imported here, and only here in the client, because grpc.aio forces it. When a
cancel scope (a meshkit `Timeout`, `anyio.fail_after`) fires while a task awaits a grpc.aio
call, grpc catches the scope's `CancelledError` and raises a bare one of its own, which the
scope does not recognise, so it would escape the scope (grpc/grpc#43502). Two remedies,
depending on which task waits:

* `scoped_wait`, for code running in the caller's own task (`MeshChannel`): it catches the
  bare error and, when an anyio scope around the task has been cancelled, waits for anyio to
  deliver the cancellation again (anyio retries on every loop iteration until the task
  leaves the scope), now with its message, which the scope recognises. Nothing extra on
  the success path.
* `shielded`, for these interceptors, which grpc.aio runs in a task of its own where the
  caller's scopes are invisible: every wait on grpc happens in a helper task behind
  `asyncio.shield`, so the cancellation of grpc's interceptor task reaches this adapter with
  its message intact; the adapter cancels the grpc call and re-raises it.

Either way the scope turns the cancellation into `DeadlineExceededError` / `TimeoutError` as
it should. On top of that, each attempt's grpc `timeout` is the meshkit deadline minus the
margin, so grpc's own DEADLINE_EXCEEDED usually comes first.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import anyio
import grpc

from meshkit.grpc._codes import error_for
from meshkit.grpc._metrics import GRPC_TYPES
from meshkit.grpc._sync_client import code_of, fresh, method_of, replayable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator

    from meshkit.grpc._client import CallPlan, ClientPolicy, Failed

__all__ = ["aio_client_interceptors", "scoped_wait", "shielded"]

_END = object()
_UNREAD = object()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def shielded(call: Any, awaitable: Any) -> Any:
    """Await `awaitable` (a wait on `call`) in a helper task, so a cancellation keeps its message.

    For code in a task other than the caller's (grpc.aio's interceptor task).
    """
    waiter = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        call.cancel()
        waiter.add_done_callback(_consume)
        raise


async def scoped_wait(call: Any, awaitable: Any) -> Any:
    """Await `awaitable` (a wait on `call`) so that a scope's cancellation keeps its message.

    For code in the caller's own task; no helper task.

    Raises:
        CancelledError: The cancelling scope's own, when grpc replaced it by a bare one.
    """
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        call.cancel()
        if not exc.args and anyio.current_effective_deadline() == -math.inf:
            # grpc/grpc#43502: grpc swallowed the scope's cancellation and raised a bare one.
            # anyio delivers it again, with its message, at our next wait: wait for it.
            await anyio.sleep_forever()
        raise


def _plan(policy: ClientPolicy, details: Any, request: object, kind: str) -> CallPlan:
    return policy.plan(
        method_of(details),
        details.timeout,
        tuple(details.metadata or ()),
        replayable=replayable(request),
        kind=kind,
    )


def _details(details: Any, timeout: float | None, plan: CallPlan) -> Any:
    return grpc.aio.ClientCallDetails(
        details.method,
        timeout,
        grpc.aio.Metadata(*plan.metadata),
        details.credentials,
        details.wait_for_ready,
    )


async def _unary(
    policy: ClientPolicy, continuation: Callable[..., Any], details: Any, request: Any, kind: str
) -> Any:
    plan = _plan(policy, details, request, kind)
    if plan.retry is None and not replayable(request):
        # A one-shot request stream (a generator, or grpc's proxy of `call.write()`, which
        # waits for this interceptor to return): start the call and let the caller wait.
        return _UnaryResponse(await _start(plan, continuation, details, request), _UNREAD, plan)

    async def once(limit: float | None) -> tuple[Any, Any] | Failed:
        call = await continuation(_details(details, limit, plan), fresh(request))
        try:
            return call, await shielded(call, call)
        except grpc.aio.AioRpcError as exc:
            return plan.failure(code_of(exc), exc.details() or "", limit)

    call, response = await plan.run(once)
    return _UnaryResponse(call, response, plan)


async def _start(
    plan: CallPlan, continuation: Callable[..., Any], details: Any, request: Any
) -> Any:
    """Start one attempt through the breaker, without waiting for any response."""

    async def start(limit: float | None) -> Any:
        return await continuation(_details(details, limit, plan), request)

    return await plan.run(start)


class _Delegate:
    """The `grpc.aio.Call` methods, answered by the call the attempt loop settled on."""

    _call: Any

    @property
    def _done_writing_flag(self) -> bool:
        # grpc.aio's `call.write()` proxy reads this private flag on the interceptor's call.
        return bool(getattr(self._call, "_done_writing_flag", False))

    # grpc.aio's own wrapper answers write(), done_writing() and time_remaining() itself;
    # they are here because the call types declare them abstract.

    async def write(self, request: Any) -> None:  # pragma: no cover - see above
        """Send one more request (request-streaming calls)."""
        await self._call.write(request)

    async def done_writing(self) -> None:  # pragma: no cover - see above
        """Close the request side (request-streaming calls)."""
        await self._call.done_writing()

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def time_remaining(self) -> float | None:  # pragma: no cover - see above
        return self._call.time_remaining()  # type: ignore[no-any-return]

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def add_done_callback(self, callback: Any) -> None:
        self._call.add_done_callback(lambda _call: callback(self))

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return await self._call.code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await self._call.details()  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


class _UnaryResponse(_Delegate, grpc.aio.UnaryUnaryCall, grpc.aio.StreamUnaryCall):  # type: ignore[type-arg]
    """The answer of a unary-response call, with the call that produced it."""

    def __init__(self, call: Any, response: Any, plan: CallPlan) -> None:
        self._call = call
        self._response = response
        self._plan = plan

    async def _wait(self) -> Any:
        try:
            self._response = await shielded(self._call, self._call)
        except grpc.aio.AioRpcError as exc:
            raise error_for(code_of(exc), exc.details() or "", self._plan.method) from exc
        return self._response

    def __await__(self) -> Generator[Any, None, Any]:
        if self._response is _UNREAD:
            return (yield from self._wait().__await__())
        yield from ()  # a generator, as __await__ must be, that never suspends
        return self._response


class _ResponseStream(_Delegate, grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):  # type: ignore[type-arg]
    """The call a streaming-response attempt loop settled on, its first message held back.

    grpc.aio takes it as the call itself (it is one of its call types), so its own wrapper,
    which would point at the first attempt's call, is not used. Reads go through `shielded`
    and failures become meshkit errors; nothing after the first message is retried.
    """

    def __init__(self, plan: CallPlan, call: Any, first: Any) -> None:
        self._plan = plan
        self._call = call
        self._first = first
        self._responses = call.__aiter__()
        self._iterator = self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            if self._first is not _UNREAD:
                first, self._first = self._first, _UNREAD
                if first is _END:
                    return
                yield first
            while True:
                try:
                    response = await shielded(self._call, anext(self._responses))
                except StopAsyncIteration:
                    return
                yield response
        except grpc.aio.AioRpcError as exc:
            raise error_for(code_of(exc), exc.details() or "", self._plan.method) from exc

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def read(self) -> Any:  # pragma: no cover - grpc.aio's wrapper reads via __aiter__
        """Return the next response, or `grpc.aio.EOF`."""
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            return grpc.aio.EOF  # type: ignore[attr-defined]


async def _stream(
    policy: ClientPolicy, continuation: Callable[..., Any], details: Any, request: Any, kind: str
) -> Any:
    plan = _plan(policy, details, request, kind)
    if plan.retry is None and not replayable(request):
        # A one-shot request stream (see `_unary`): nothing to resend, and the caller may
        # have to write before the first response comes.
        return _ResponseStream(plan, await _start(plan, continuation, details, request), _UNREAD)

    async def once(limit: float | None) -> tuple[Any, Any] | Failed:
        call = await continuation(_details(details, limit, plan), fresh(request))
        try:
            return call, await shielded(call, anext(aiter(call)))
        except StopAsyncIteration:
            return call, _END
        except grpc.aio.AioRpcError as exc:
            return plan.failure(code_of(exc), exc.details() or "", limit)

    call, first = await plan.run(once)
    return _ResponseStream(plan, call, first)


class _AioInterceptor:
    """What the four generated classes share: the policy."""

    def __init__(self, policy: ClientPolicy) -> None:
        self.policy = policy


def _adapter(kind: str, base: type, shape: Callable[..., Any]) -> type:
    async def intercept(
        self: _AioInterceptor, continuation: Any, details: Any, request: Any
    ) -> Any:
        return await shape(self.policy, continuation, details, request, GRPC_TYPES[kind])

    name = "".join(part.title() for part in kind.split("_"))
    return type(f"Aio{name}Interceptor", (_AioInterceptor, base), {f"intercept_{kind}": intercept})


_ADAPTERS = tuple(
    _adapter(kind, base, shape)
    for kind, base, shape in (
        ("unary_unary", grpc.aio.UnaryUnaryClientInterceptor, _unary),
        ("unary_stream", grpc.aio.UnaryStreamClientInterceptor, _stream),
        ("stream_unary", grpc.aio.StreamUnaryClientInterceptor, _unary),
        ("stream_stream", grpc.aio.StreamStreamClientInterceptor, _stream),
    )
)


def aio_client_interceptors(policy: ClientPolicy) -> list[Any]:
    """Return the four interceptors applying `policy` to a grpc.aio channel's calls."""
    return [adapter(policy) for adapter in _ADAPTERS]
