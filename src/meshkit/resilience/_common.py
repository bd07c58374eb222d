"""Small helpers shared by the resilience policies (no policy logic lives here)."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, ParamSpec

from meshkit._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import attrs

__all__ = ["decorate", "default_burst", "exception_predicate", "valid_name"]

_P = ParamSpec("_P")


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


def exception_predicate(
    matcher: type[BaseException] | tuple[type[BaseException], ...] | Callable[[Exception], bool],
) -> Callable[[Exception], bool]:
    """Compile exception types (one or a tuple, matched with `isinstance`) into a predicate.

    A predicate is returned as it is.
    """
    if isinstance(matcher, type | tuple):
        types = matcher

        def matches(exc: Exception) -> bool:
            return isinstance(exc, types)

        return matches
    return matcher


def default_burst(limiter: object) -> float:
    """Return a token bucket's default capacity: one second of its `rate`, at least 1."""
    rate = getattr(limiter, "rate", None)  # not validated yet: its own validator reports it
    return max(1.0, rate) if isinstance(rate, int | float) else 1.0


def valid_name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Validate a policy's name: a non-empty string (it shows in errors and statistics)."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(attribute.name, value, "must be a non-empty str")
