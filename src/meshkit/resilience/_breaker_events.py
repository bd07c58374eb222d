"""What a circuit breaker tells its listeners: state changes and call outcomes."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, final

import attrs

if TYPE_CHECKING:
    from meshkit.resilience._breaker_core import CircuitState

__all__ = [
    "CircuitBreakerListener",
    "CircuitCallOutcome",
    "CircuitCallRecorded",
    "CircuitStateChange",
]


class CircuitCallOutcome(enum.Enum):
    """How the breaker counted one call."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    """The exception matched `ignore_exceptions`: neither success nor failure."""
    CANCELLED = "cancelled"
    """Cancellation or another `BaseException` that is not an `Exception`: not recorded."""
    REJECTED = "rejected"
    """The breaker did not admit the call."""


@final
@attrs.frozen(kw_only=True)
class CircuitStateChange:
    """A breaker changed state.

    Attributes:
        name: The breaker's name.
        from_state: The state it left.
        to_state: The state it entered.
        at: The clock's time of the change.
    """

    name: str
    from_state: CircuitState
    to_state: CircuitState
    at: float


@final
@attrs.frozen(kw_only=True)
class CircuitCallRecorded:
    """A call went through (or was turned away by) a breaker.

    Attributes:
        name: The breaker's name.
        outcome: How the call was counted.
        duration: Seconds the call took, per the breaker's clock (0 for a rejection).
        slow: Whether it counted as a slow call.
        exception: What the call raised (the `CircuitOpenError` for a rejection), if anything.
    """

    name: str
    outcome: CircuitCallOutcome
    duration: float
    slow: bool
    exception: BaseException | None


class CircuitBreakerListener(Protocol):
    """Receives a breaker's state changes and call outcomes (called outside its lock).

    An exception raised by a listener is logged on the `meshkit.resilience` logger and
    otherwise ignored, so observing a breaker can never break the calls it protects.
    """

    def on_state_change(self, event: CircuitStateChange) -> None:
        """Handle a state change."""
        ...

    def on_call(self, event: CircuitCallRecorded) -> None:
        """Handle a call's outcome."""
        ...
