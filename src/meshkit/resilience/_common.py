"""Small helpers shared by the resilience policies (no policy logic lives here)."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

__all__ = ["Decorates", "Outcome", "TokenCalls", "decorate", "default_burst"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def decorate(
    call: Callable[..., Awaitable[Any]], call_sync: Callable[..., Any], fn: Callable[_P, Any]
) -> Callable[_P, Any]:
    """Wrap `fn` with `call` when it is a coroutine function, with `call_sync` otherwise."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:  # noqa: ANN401
            return await call(fn, *args, **kwargs)

        return async_wrapper

    @functools.wraps(fn)
    def sync_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:  # noqa: ANN401
        return call_sync(fn, *args, **kwargs)

    return sync_wrapper


class Decorates:
    """Mixin: `@policy` on an async or a sync function sends every call through the policy.

    The policy's own `call` / `call_sync` do the work (see `decorate`), so a decorated function
    behaves exactly like an explicit call.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        call: Callable[..., Awaitable[Any]]
        call_sync: Callable[..., Any]

    @overload
    def __call__(
        self, fn: Callable[_P, Coroutine[Any, Any, _T]]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    @overload
    def __call__(self, fn: Callable[_P, _T]) -> Callable[_P, _T]: ...

    def __call__(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        """Decorate `fn` (a coroutine function or a plain one) to run through this policy."""
        return decorate(self.call, self.call_sync, fn)


class TokenCalls(Decorates):
    """Mixin for rate limiters: `call` / `call_sync` take one token, then make the call."""

    __slots__ = ()

    if TYPE_CHECKING:
        acquire: Callable[[], Awaitable[None]]
        acquire_sync: Callable[[], None]

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Take one token (see `acquire()`), then run `await fn(*args, **kwargs)`.

        Returns:
            What `fn` returns.

        Raises:
            RateLimitExceededError: If the token would take longer than `max_wait`.
            RateLimiterUnavailableError: If a `RedisRateLimiter` cannot reach Redis and
                does not fail open.
        """
        await self.acquire()
        return await fn(*args, **kwargs)

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Take one token from a thread (see `acquire_sync()`), then run `fn(*args, **kwargs)`.

        Returns:
            What `fn` returns.

        Raises:
            RateLimitExceededError: As `call`.
            RateLimiterUnavailableError: As `call`.
        """
        self.acquire_sync()
        return fn(*args, **kwargs)


class Outcome(Generic[_T]):
    """Mixin for the frozen outcome of one call: its `value`, or the `error` it ended with."""

    __slots__ = ()

    if TYPE_CHECKING:
        value: _T | None
        error: Exception | None

    @property
    def succeeded(self) -> bool:
        """Whether the call returned a value."""
        return self.error is None

    def unwrap(self) -> _T:
        """Return the value, or raise the final exception unchanged."""
        if self.error is not None:
            raise self.error
        return cast("_T", self.value)


def default_burst(limiter: object) -> float:
    """Return a token bucket's default capacity: one second of its `rate`, at least 1."""
    rate = getattr(limiter, "rate", None)  # not validated yet: its own validator reports it
    return max(1.0, rate) if isinstance(rate, int | float) else 1.0
