"""Deadlines carried in a context variable, and the `Timeout` policy that sets them.

A [`Deadline`][meshkit.resilience.Deadline] is an absolute expiry on a clock. The innermost
active deadline lives in a `contextvars.ContextVar`, so any code running inside a `Timeout`
(a nested call, a retry loop deciding whether to back off, a gRPC client interceptor setting the
outgoing timeout) can ask [`time_remaining()`][meshkit.resilience.time_remaining]. A nested
`Timeout` is clamped to the enclosing deadline: a callee never outlives its caller.
"""

from __future__ import annotations

import contextvars
import math
from typing import TYPE_CHECKING, ParamSpec, TypeVar, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import DeadlineExceededError
from meshkit._validate import check, finite, in_range, instance_of, non_empty_str, positive_seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    import anyio

__all__ = ["Deadline", "Timeout", "current_deadline", "time_remaining"]

_P = ParamSpec("_P")
_IS_CLOCK = instance_of(Clock)
_T = TypeVar("_T")


@final
@attrs.frozen(kw_only=True)
class Deadline:
    """An absolute point in time, on a clock, by which work must be done.

    Attributes:
        expires_at: The expiry, in the units and on the scale of `clock.now()`.
        clock: The clock `expires_at` is read against.
    """

    expires_at: float = attrs.field(validator=in_range(-math.inf, math.inf))  # not NaN
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, eq=False, validator=instance_of(Clock))

    @classmethod
    def after(cls, seconds: float, *, clock: Clock = SYSTEM_CLOCK) -> Deadline:
        """Return the deadline `seconds` from now on `clock`.

        Raises:
            ConfigurationError: If `seconds` is not a finite number (as `Timeout` requires),
                or `clock` not a `Clock`.
        """
        check("seconds", seconds, finite)
        check("clock", clock, _IS_CLOCK)
        return cls(expires_at=clock.now() + seconds, clock=clock)

    def remaining(self) -> float:
        """Return the seconds left before expiry (0 once expired, never negative)."""
        return max(self.expires_at - self.clock.now(), 0.0)

    def expired(self) -> bool:
        """Return whether the deadline has been reached."""
        return self.clock.now() >= self.expires_at


def _trusted_deadline(expires_at: float, clock: Clock) -> Deadline:
    """Build a `Deadline` from values already validated, skipping attrs' validators.

    `Timeout` creates one per call on the hot path; its inputs are a validated `seconds` and
    a clock's `now()`. Skipping the validators (an `isinstance` against the `Clock`
    protocol) makes `Timeout.call_sync` 7-8x faster (benchmarks/README.md, "Speed tricks").
    """
    deadline = object.__new__(Deadline)
    object.__setattr__(deadline, "expires_at", expires_at)
    object.__setattr__(deadline, "clock", clock)
    return deadline


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "meshkit_deadline", default=None
)


def current_deadline() -> Deadline | None:
    """Return the innermost deadline set by an enclosing `Timeout`, or `None`."""
    return _CURRENT.get()


def time_remaining() -> float | None:
    """Return the seconds left before the current deadline, or `None` when there is none.

    `None` means "no deadline", which is also what gRPC's `timeout=` argument expects then.
    """
    deadline = _CURRENT.get()
    return None if deadline is None else deadline.remaining()


@attrs.frozen
class _Frame:
    """What one `async with timeout:` needs to undo on exit (kept per task, in a contextvar)."""

    scope: anyio.CancelScope
    token: contextvars.Token[Deadline | None]
    budget: float


_FRAMES: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar(
    "meshkit_timeout_frames", default=()
)


@final
@attrs.frozen
class Timeout:
    """Bound a call by `seconds`, and by every enclosing deadline.

    The effective deadline is the earlier of `now + seconds` and the enclosing deadline (see
    [`current_deadline()`][meshkit.resilience.current_deadline]); it is published in the
    context for the duration of the call. Expiry raises `DeadlineExceededError` (a
    `TimeoutError`). If the enclosing deadline is the one that fires, the enclosing scope
    reports it; a cancellation from outside (the caller's task group, an outer `Timeout`) is
    never swallowed nor turned into a timeout here. If the effective budget is already spent on
    entry, `DeadlineExceededError` is raised at once and the call is not started.

    A `Timeout` is an immutable value: one instance may be shared by many tasks and threads.

    Example:
        ```python
        import anyio
        from meshkit import DeadlineExceededError
        from meshkit.resilience import Timeout, time_remaining
        from meshkit.testing import FakeClock


        async def main() -> None:
            clock = FakeClock()

            async def slow() -> None:
                assert time_remaining() == 2.0
                await clock.sleep(10)

            async with anyio.create_task_group() as tg:
                tg.start_soon(clock.advance_stepwise, 5)
                try:
                    await Timeout(2, clock=clock).call(slow)
                except DeadlineExceededError as exc:
                    assert exc.timeout == 2.0


        anyio.run(main)
        ```

    Attributes:
        seconds: The time budget of one call, > 0 and finite.
        clock: The clock deadlines are measured on.
        what: How the call is named in the `DeadlineExceededError` message.
    """

    seconds: float = attrs.field(validator=positive_seconds)
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True, validator=instance_of(Clock))
    what: str = attrs.field(default="call", kw_only=True, validator=non_empty_str)

    def effective_deadline(self) -> Deadline:
        """Return the deadline a call starting now would get: clamped by the enclosing one.

        Useful to pass a budget on without entering a scope (an outgoing RPC's timeout).
        """
        return self._effective()[0]

    def _effective(self) -> tuple[Deadline, float]:
        now = self.clock.now()
        own = now + self.seconds
        outer = _CURRENT.get()
        if outer is None:
            return _trusted_deadline(own, self.clock), self.seconds
        if outer.clock is self.clock:
            expires = min(own, outer.expires_at)
        else:
            expires = min(own, now + outer.remaining())
        return _trusted_deadline(expires, self.clock), max(expires - now, 0.0)

    def _start(self) -> tuple[Deadline, float]:
        deadline, budget = self._effective()
        if budget <= 0:
            raise DeadlineExceededError(budget, self.what)
        return deadline, budget

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Await `fn(*args, **kwargs)` within the deadline and return its result.

        Raises:
            DeadlineExceededError: If the effective deadline passed before `fn` finished (or had
                already passed on entry).
        """
        deadline, budget = self._start()
        token = _CURRENT.set(deadline)
        try:
            with self.clock.deadline_scope(deadline.expires_at):
                return await fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)
        # Reached only when the scope swallowed its own deadline's cancellation.
        raise DeadlineExceededError(budget, self.what)

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call `fn(*args, **kwargs)` from sync code with the deadline set in its context.

        A blocking call cannot be interrupted: `fn` runs to completion, reading the deadline
        with [`time_remaining()`][meshkit.resilience.time_remaining] if it wants to stop early
        (and to pass it on). If `fn` returns after the deadline its result is discarded and
        `DeadlineExceededError` is raised; an exception from `fn` propagates unchanged.

        Raises:
            DeadlineExceededError: If the deadline had passed on entry, or when `fn` returned.
        """
        deadline, budget = self._start()
        token = _CURRENT.set(deadline)
        try:
            result = fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)
        if self.clock.now() >= deadline.expires_at:
            raise DeadlineExceededError(budget, self.what)
        return result

    async def __aenter__(self) -> Deadline:
        """Enter a deadline scope; return the effective deadline.

        Raises:
            DeadlineExceededError: If the effective deadline has already passed.
        """
        deadline, budget = self._start()
        scope = self.clock.deadline_scope(deadline.expires_at)
        scope.__enter__()
        token = _CURRENT.set(deadline)
        _FRAMES.set((*_FRAMES.get(), _Frame(scope, token, budget)))
        return deadline

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Leave the scope, turning its own expiry into `DeadlineExceededError`.

        Raises:
            DeadlineExceededError: If this scope's deadline cancelled the body.
        """
        frames = _FRAMES.get()
        frame = frames[-1]
        _FRAMES.set(frames[:-1])
        _CURRENT.reset(frame.token)
        swallowed = frame.scope.__exit__(exc_type, exc, tb)
        if exc is not None and swallowed:  # only our own deadline's cancellation is swallowed
            raise DeadlineExceededError(frame.budget, self.what) from None
        return False
