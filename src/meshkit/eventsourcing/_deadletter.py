"""Dead letters: events a subscription's handler kept failing on, parked so it can go on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import anyio.lowlevel
import attrs

from meshkit._validate import count, instance_of
from meshkit.eventsourcing._event import Event, utc_now

if TYPE_CHECKING:
    import datetime as dt

__all__ = ["DeadLetter", "DeadLetterStore", "MemoryDeadLetterStore"]


@attrs.frozen(kw_only=True)
class DeadLetter:
    """An event a subscription gave up on after its handler failed `attempts` times.

    Attributes:
        subscription: The subscription's name.
        event: The event that could not be handled.
        error: `repr()` of the handler's last exception.
        attempts: How many times the handler was called for it.
        parked_at: When it was parked (aware UTC).
    """

    subscription: str = attrs.field(validator=instance_of(str))
    event: Event = attrs.field(validator=instance_of(Event))
    error: str = attrs.field(validator=instance_of(str))
    attempts: int = attrs.field(validator=count(1))
    parked_at: dt.datetime = attrs.field(factory=utc_now)


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where parked events are kept for an operator to inspect and replay."""

    async def park(self, letter: DeadLetter) -> None:
        """Keep `letter`."""
        ...

    async def dead_letters(self, subscription: str) -> list[DeadLetter]:
        """Return the letters parked by `subscription`, oldest first."""
        ...


@final
@attrs.define(eq=False)
class MemoryDeadLetterStore:
    """A `DeadLetterStore` that keeps letters in a list (the subscription default)."""

    _letters: list[DeadLetter] = attrs.field(init=False, factory=list)

    async def park(self, letter: DeadLetter) -> None:
        """Append `letter` to the list."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._letters.append(letter)

    async def dead_letters(self, subscription: str) -> list[DeadLetter]:
        """Return the letters of `subscription`, oldest first."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        return [letter for letter in self._letters if letter.subscription == subscription]
