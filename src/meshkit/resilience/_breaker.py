"""The circuit breaker: a thin, thread-safe async/sync shell around `BreakerCore`.

The shell reads the clock, takes a short lock around the core's bookkeeping and calls
listeners outside it. No lock is ever held across the protected call. While the breaker is
CLOSED and configured for consecutive failures only, with nobody listening, a successful call
takes no lock and reads no clock at all (see `BreakerCore.fast_permit`); a call rejected while
OPEN takes no lock either (see `BreakerCore.reject_until`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import CircuitOpenError
from meshkit._validate import instance_of, non_empty_str
from meshkit.resilience._breaker_config import CircuitBreakerConfig
from meshkit.resilience._breaker_core import (
    BreakerCore,
    CircuitBreakerStatistics,
    CircuitState,
    Permit,
)
from meshkit.resilience._breaker_events import (
    CircuitBreakerListener,
    CircuitCallOutcome,
    CircuitCallRecorded,
    CircuitStateChange,
)
from meshkit.resilience._common import Decorates

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["CircuitBreaker"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_LOG = logging.getLogger("meshkit.resilience")

# (breaker, permit, outer frame): the calls entered with `with breaker:` in this thread or
# task, innermost first. A context variable, because one breaker is entered by many threads
# and tasks at once.
_Frame = tuple["CircuitBreaker", Permit, Any]
# Builds `CircuitOpenError(...)` with the C constructor, skipping its Python `__init__`:
# 1.3-1.5x faster rejections (benchmarks/README.md, "Speed tricks").
_new_error = BaseException.__new__
_ACTIVE: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar(
    "meshkit_breaker_active", default=None
)


@final
@attrs.define(eq=False)
class CircuitBreaker(Decorates):
    """Stop calling a failing dependency for a while, then probe it with a few trial calls.

    Use it as `await breaker.call(fn, ...)` / `breaker.call_sync(fn, ...)`, as a decorator on
    async or sync functions, or as `async with breaker:` / `with breaker:`. It is safe to share
    between tasks (asyncio or trio) and threads.

    An exception raised by the call is classified by the config: ignored (neither success nor
    failure), a failure, or (when not in `record_exceptions`) a success. Cancellation and
    other `BaseException`s that are not `Exception`s (`KeyboardInterrupt`, `SystemExit`) pass
    straight through without being recorded; a HALF_OPEN trial ended that way gives its slot
    back.

    Example:
        ```python
        from meshkit.resilience import CircuitBreaker, CircuitState

        breaker = CircuitBreaker(name="inventory")
        assert breaker.call_sync(lambda: 42) == 42
        assert breaker.state is CircuitState.CLOSED
        ```

    Attributes:
        config: The policy; `CircuitBreakerConfig()` by default.
        name: A name for errors, events and statistics (keyword-only).
        clock: The source of time (keyword-only); the system clock by default.
    """

    config: CircuitBreakerConfig = attrs.field(
        factory=CircuitBreakerConfig, validator=instance_of(CircuitBreakerConfig)
    )
    name: str = attrs.field(default="circuit-breaker", kw_only=True, validator=non_empty_str)
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True, validator=instance_of(Clock))
    _core: BreakerCore = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _listeners: tuple[CircuitBreakerListener, ...] = attrs.field(init=False, default=())
    _classify: Callable[[Exception], bool | None] = attrs.field(init=False)
    _slow_after: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._core = BreakerCore(self.config, self.name)
        self._classify = self.config.classify()
        slow = self.config.slow_call_duration
        self._slow_after = float("inf") if slow is None else slow

    # ------------------------------------------------------------ calling
    #
    # Both faces run the same steps: `_admit` (or the shared lock-free permit), the call,
    # then `_on_exception` or the success bookkeeping. The success step is written inline
    # in each face, not in a helper: a method call would be most of its cost.

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Await `fn(*args, **kwargs)` through the breaker and return its result.

        Raises:
            CircuitOpenError: If the breaker does not admit the call.
            ConfigurationError: If a custom `open_duration` returns a duration that is not
                a finite number >= 0 when the breaker opens.
        """
        core = self._core
        permit = core.fast_permit or self._admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._on_exception(permit, exc)
            raise
        next(core.successes) if permit is core.fast_permit else self._on_result(permit, result)
        return result

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call `fn(*args, **kwargs)` through the breaker, from sync code; return its result.

        Raises:
            CircuitOpenError: If the breaker does not admit the call.
            ConfigurationError: As `call`, for a custom `open_duration`.
        """
        core = self._core
        permit = core.fast_permit or self._admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_exception(permit, exc)
            raise
        next(core.successes) if permit is core.fast_permit else self._on_result(permit, result)
        return result

    def _admit(self) -> Permit:
        """Admit a call off the lock-free path, or raise `CircuitOpenError`."""
        now = self.clock.now()
        reject_until = self._core.reject_until
        if now < reject_until:
            # Lock-free rejection: a breaker seen OPEN with its deadline still ahead was OPEN
            # at that instant, and the read of `reject_until` is atomic.
            next(self._core.rejections)
            raise _new_error(CircuitOpenError, self.name, reject_until - now)
        return Permit(self._acquire(now), now)

    def __enter__(self) -> Self:
        """Admit the block as one call.

        Raises:
            CircuitOpenError: If the breaker does not admit the call.
        """
        _ACTIVE.set((self, self._admit(), _ACTIVE.get()))
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        """Record how the block ended (it never suppresses the exception)."""
        frame = _ACTIVE.get()
        if frame is None or frame[0] is not self:
            msg = f"circuit breaker {self.name!r} exited without a matching enter"
            raise RuntimeError(msg)
        _, permit, outer = frame
        _ACTIVE.set(outer)
        if exc is None:
            self._record(permit, failed=False)
        else:
            self._on_exception(permit, exc)

    async def __aenter__(self) -> Self:
        """Admit the block as one call (`async with breaker:`).

        Raises:
            CircuitOpenError: If the breaker does not admit the call.
        """
        return self.__enter__()

    async def __aexit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        """Record how the block ended (it never suppresses the exception)."""
        self.__exit__(_type, exc, _tb)

    # ------------------------------------------------------------ state and control

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN breaker whose open duration is over is HALF_OPEN)."""
        return self._locked(self._core.poll)

    def statistics(self) -> CircuitBreakerStatistics:
        """Return a frozen snapshot of the state, counts and rates."""
        return self._locked(self._core.statistics)

    def force_open(self) -> None:
        """Enter FORCED_OPEN: reject every call until `reset()` or `disable()`."""
        self._locked(self._core.force_open)

    def disable(self) -> None:
        """Enter DISABLED: admit every call and record nothing until `reset()`."""
        self._locked(self._core.disable)

    def reset(self) -> None:
        """Return to CLOSED with empty counts, from any state."""
        self._locked(self._core.reset)

    def add_listener(self, listener: CircuitBreakerListener) -> None:
        """Start sending state changes and call outcomes to `listener`."""
        with self._lock:
            self._listeners = (*self._listeners, listener)
            self._core.set_listening(listening=True)

    def remove_listener(self, listener: CircuitBreakerListener) -> None:
        """Stop sending events to `listener` (a listener not added is ignored)."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)
            self._core.set_listening(listening=bool(self._listeners))

    # ------------------------------------------------------------ bookkeeping

    def _locked(self, method: Callable[[float], _T]) -> _T:
        now = self.clock.now()
        with self._lock:
            result = method(now)
            transitions = self._core.take_transitions() if self._core.transitions else []
        if transitions:
            self._emit(transitions, None)
        return result

    def _acquire(self, now: float) -> int:
        core = self._core
        rejected: CircuitOpenError | None = None
        with self._lock:
            try:
                permit = core.acquire(now)
            except CircuitOpenError as exc:
                rejected = exc
            transitions = core.take_transitions() if core.transitions else []
        if self._listeners:
            event = None
            if rejected is not None:
                event = CircuitCallRecorded(
                    name=self.name,
                    outcome=CircuitCallOutcome.REJECTED,
                    duration=0.0,
                    slow=False,
                    exception=rejected,
                )
            self._emit(transitions, event)
        if rejected is not None:
            raise rejected
        return permit

    def _on_result(self, permit: Permit, result: object) -> None:
        predicate = self.config.record_result
        failed = False
        if predicate is not None:
            try:
                failed = bool(predicate(result))  # the core counts with it: a real bool
            except BaseException as exc:
                self._finish(permit, CircuitCallOutcome.CANCELLED, exc)
                raise
        self._record(permit, failed=failed)

    def _on_exception(self, permit: Permit, exc: BaseException) -> None:
        if not isinstance(exc, Exception):  # cancellation and its kin: not an outcome
            self._finish(permit, CircuitCallOutcome.CANCELLED, exc)
            return
        try:
            verdict = self._classify(exc)
        except BaseException as error:
            # A user predicate failed: give the permit back (a HALF_OPEN trial slot would
            # otherwise stay taken for good) and let its error propagate.
            self._finish(permit, CircuitCallOutcome.CANCELLED, error)
            raise
        if verdict is None:
            self._finish(permit, CircuitCallOutcome.IGNORED, exc)
        else:
            self._record(permit, failed=verdict, exc=exc)

    def _finish(self, permit: Permit, outcome: CircuitCallOutcome, exc: BaseException) -> None:
        now = self.clock.now()
        core = self._core
        with self._lock:
            core.release(permit.epoch, now, ignored=outcome is CircuitCallOutcome.IGNORED)
            transitions = core.take_transitions() if core.transitions else []
        if self._listeners:
            duration = now - permit.start
            event = CircuitCallRecorded(
                name=self.name, outcome=outcome, duration=duration, slow=False, exception=exc
            )
            self._emit(transitions, event)

    def _record(self, permit: Permit, *, failed: bool, exc: Exception | None = None) -> None:
        now = self.clock.now()
        duration = now - permit.start
        slow = duration > self._slow_after
        core = self._core
        with self._lock:
            core.record(permit.epoch, now, failed=failed, slow=slow)
            transitions = core.take_transitions() if core.transitions else []
        if self._listeners:
            outcome = CircuitCallOutcome.FAILURE if failed else CircuitCallOutcome.SUCCESS
            event = CircuitCallRecorded(
                name=self.name, outcome=outcome, duration=duration, slow=slow, exception=exc
            )
            self._emit(transitions, event)

    def _emit(
        self,
        transitions: list[tuple[CircuitState, CircuitState, float]],
        event: CircuitCallRecorded | None,
    ) -> None:
        changes = [
            CircuitStateChange(name=self.name, from_state=old, to_state=new, at=at)
            for old, new, at in transitions
        ]
        for listener in self._listeners:
            try:
                for change in changes:
                    listener.on_state_change(change)
                if event is not None:
                    listener.on_call(event)
            except Exception:  # noqa: BLE001 - a listener must not break the call
                _LOG.exception("circuit breaker %r: listener %r failed", self.name, listener)
