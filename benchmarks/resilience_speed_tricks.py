"""Does each resilience speed trick still buy >= 20% on the call it serves? (STYLE.md).

Run: `.venv/bin/python benchmarks/resilience_speed_tricks.py`. Each trick is timed against
the obvious code in the same process, interleaved, taking the fastest of many rounds (the
machine is shared); the last column is how much slower the obvious code is.
"""

from __future__ import annotations

import functools
import threading
import timeit
from typing import TYPE_CHECKING, Any

from meshkit import CircuitOpenError, Clock
from meshkit.resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    Deadline,
    Timeout,
    _breaker,
    _deadline,
)

if TYPE_CHECKING:
    from collections.abc import Callable

N = 20_000
ROUNDS = 5


def best(loop: Callable[[], None]) -> float:
    """Nanoseconds per call of the fastest of 9 rounds of `loop` (N calls each)."""
    return min(timeit.repeat(loop, number=1, repeat=9)) / N * 1e9


def target() -> int:
    """The protected call."""
    return 1


def calls(call: Callable[[Callable[[], int]], object]) -> Callable[[], None]:
    """N successful calls `call(target)`."""

    def loop() -> None:
        for _ in range(N):
            call(target)

    return loop


def rejections(call: Callable[[Callable[[], int]], object]) -> Callable[[], None]:
    """N calls `call(target)` rejected with CircuitOpenError."""

    def loop() -> None:
        for _ in range(N):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                call(target)
            except CircuitOpenError:
                pass

    return loop


def compare(name: str, trick: Callable[[], float], plain: Callable[[], float]) -> None:
    """Print the fastest of ROUNDS interleaved measurements of both variants."""
    with_trick, without = [], []
    for _ in range(ROUNDS):
        with_trick.append(trick())
        without.append(plain())
    a, b = min(with_trick), min(without)
    print(f"{name:42s} trick {a:7.0f} ns  plain {b:7.0f} ns  plain/trick {b / a:.2f}")  # noqa: T201


class LockedCount:
    """`CircuitBreaker.call_sync` with its success counted under a lock instead."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.lock = threading.Lock()
        self.successes = 0

    def call_sync(self, fn: Callable[[], int]) -> int:
        """Call `fn` as `call_sync` does, counting a success under the lock."""
        breaker = self.breaker
        core = breaker._core
        permit = core.fast_permit or breaker._admit()
        try:
            result = fn()
        except BaseException as exc:
            breaker._on_exception(permit, exc)
            raise
        if permit is core.fast_permit:
            with self.lock:
                self.successes += 1
        else:
            breaker._on_result(permit, result)
        return result


def closure_decorate(breaker: CircuitBreaker, fn: Callable[[], int]) -> Callable[[], int]:
    """The obvious sync decorator: a `def` wrapper forwarding to `call_sync`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return breaker.call_sync(fn, *args, **kwargs)

    return wrapper


def decorated(fn: Callable[[], object]) -> Callable[[], None]:
    """N calls of the decorated `fn()`, rejections caught."""

    def loop() -> None:
        for _ in range(N):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                fn()
            except CircuitOpenError:
                pass

    return loop


def open_breaker() -> CircuitBreaker:
    """A breaker opened by five failures, for 60 s."""
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5, open_duration=60))
    for _ in range(5):
        try:
            breaker.call_sync(lambda: 1 // 0)
        except ZeroDivisionError:
            continue
    return breaker


def main() -> None:
    """Measure each trick kept in the resilience package."""
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5, open_duration=60))
    compare(
        "breaker success: lock-free count",
        lambda: best(calls(breaker.call_sync)),
        lambda: best(calls(LockedCount(breaker).call_sync)),
    )

    compare(
        "decorated success: partial wrapper",
        lambda: best(decorated(breaker(target))),
        lambda: best(decorated(closure_decorate(breaker, target))),
    )
    opened = open_breaker()
    compare(
        "decorated rejection: partial wrapper",
        lambda: best(decorated(opened(target))),
        lambda: best(decorated(closure_decorate(opened, target))),
    )

    def rejection_with(new_error: Any) -> float:
        _breaker._new_error = new_error
        return best(rejections(opened.call_sync))

    compare(
        "breaker rejection: C constructor",
        lambda: rejection_with(BaseException.__new__),
        lambda: rejection_with(type.__call__),
    )
    _breaker._new_error = BaseException.__new__

    trusted = _deadline._trusted_deadline

    def validated(expires_at: float, clock: Clock) -> Deadline:
        return Deadline(expires_at=expires_at, clock=clock)

    def timeout_with(build: Callable[[float, Clock], Deadline]) -> float:
        _deadline._trusted_deadline = build  # type: ignore[assignment]
        return best(calls(Timeout(5.0).call_sync))

    compare(
        "Timeout.call_sync: trusted Deadline",
        lambda: timeout_with(trusted),
        lambda: timeout_with(validated),
    )
    _deadline._trusted_deadline = trusted


if __name__ == "__main__":
    main()
