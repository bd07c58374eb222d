"""Small helpers shared by the resilience policies (no policy logic lives here)."""

from __future__ import annotations

import functools
import inspect
import types
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from meshkit._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

__all__ = [
    "MAX_BUCKETS",
    "MAX_WINDOW_SIZE",
    "MIN_BUCKET_SECONDS",
    "Decorates",
    "Outcome",
    "TokenCalls",
    "decorate",
    "default_burst",
    "draw_unit",
]

MAX_BUCKETS = 10_000
"""The most slices a sliding window may be cut into: finer gains nothing, and memory is per
slice (a budget or breaker window with a billion slices would exhaust memory when built)."""

MIN_BUCKET_SECONDS = 1e-6
"""The thinnest slice of a sliding window: a microsecond. `now / width` must stay a finite
float, and no clock meshkit reads resolves finer."""


MAX_WINDOW_SIZE = 100_000
"""The most calls a `CountWindow` may hold: a ring of that many outcomes is built up front."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Decorated(functools.partial[Any]):
    """`partial(face, fn)` that also binds as a method does (`obj.fn(x)` passes `obj`)."""

    def __get__(self, obj: object, objtype: type | None = None) -> Callable[..., Any]:
        return self if obj is None else types.MethodType(self, obj)


def decorate(
    call: Callable[..., Awaitable[Any]], call_sync: Callable[..., Any], fn: Callable[_P, Any]
) -> Callable[_P, Any]:
    """Wrap `fn` with `call` when it is a coroutine function, with `call_sync` otherwise.

    The wrapper is a `functools.partial`, called from C: no wrapper frame of its own, which
    makes a decorated success 1.8x faster than a `def` wrapper (benchmarks/README.md, "Speed
    tricks"). It keeps `fn`'s name, docstring and `__wrapped__`, and `inspect` sees an
    async `fn`'s wrapper as a coroutine function.
    """
    face = call if inspect.iscoroutinefunction(fn) else call_sync
    return functools.update_wrapper(_Decorated(face, fn), fn)


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


def draw_unit(random: Callable[[], float]) -> float:
    """Call an injected random source and return its draw, clamped into `[0, 1]`.

    A source is a callable, so it can only be checked when it is used: a draw that is not a
    number, or is NaN, is refused (a NaN wait is one a `FakeClock` would sleep on forever);
    a number out of range is clamped, so a faulty source cannot push a wait out of bounds.

    Raises:
        ConfigurationError: Naming the field `random`, if the draw is NaN or not a number.
    """
    value: object = random()
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:  # noqa: PLR0124 - NaN is the only x != x
        return min(max(value, 0.0), 1.0)
    raise ConfigurationError("random", value, "must return a number in [0, 1), not NaN")


def default_burst(limiter: object) -> float:
    """Return a token bucket's default capacity: one second of its `rate`, at least 1."""
    rate = getattr(limiter, "rate", None)  # not validated yet: its own validator reports it
    return max(1.0, rate) if isinstance(rate, int | float) else 1.0
