"""The `EventStore` protocol every backend (memory, SQLite, PostgreSQL, a user's) implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.eventsourcing._event import Event, Snapshot

__all__ = ["NO_STREAM", "CheckpointStore", "EventStore"]

NO_STREAM = 0
"""`expected_version` for a stream that must not exist yet."""


@runtime_checkable
class EventStore(Protocol):
    """An append-only store of event streams with one global, ordered log.

    All methods are async (anyio: asyncio and trio). The shared conformance suite in
    `meshkit.testing` pins down the behaviour every implementation must have.
    """

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append `events` to `stream_id` atomically, if the stream is at `expected_version`.

        `events` must belong to `stream_id` and carry versions `expected_version + 1, ...`
        in order. Appending events whose ids are already stored at those very versions is a
        no-op (idempotent retry). Either all events are written or none.

        Returns:
            The stream's version after the append.

        Raises:
            VersionConflictError: If the stream is not at `expected_version`.
            ConfigurationError: If `expected_version < 0`, `events` is empty, or an event's
                stream id or version does not fit.
        """
        ...

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Return the events of `stream_id` with `version >= from_version`, in order.

        An unknown stream reads as empty.
        """
        ...

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Return events of the global log with `position > after_position`, in order.

        Positions are increasing; a reader that resumes after the last position it saw never
        misses an event, even one whose transaction committed late.
        """
        ...

    async def stream_version(self, stream_id: str) -> int:
        """Return the current version of `stream_id` (`NO_STREAM`, 0, when it has none)."""
        ...

    async def wait_for_new(self, after_position: int) -> None:
        """Return once the log may hold events past `after_position` (may return early).

        Subscriptions call it between catch-up reads to follow the log live; cancel the
        caller to stop waiting.
        """
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot`, replacing an older one of the same stream."""
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or `None`."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources."""
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Where a subscription remembers the last global position it has fully handled.

    Backends that hold the projection's own tables (SQLite, PostgreSQL) also offer a way to
    save the checkpoint in the same transaction as the projection's writes.
    """

    async def load_checkpoint(self, name: str) -> int:
        """Return the saved position of subscription `name` (0 when it has none)."""
        ...

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save `position` for subscription `name`; positions only move forward."""
        ...
