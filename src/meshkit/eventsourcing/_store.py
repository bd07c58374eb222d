"""The `EventStore` protocol every backend (memory, SQLite, PostgreSQL, a user's) implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from meshkit.eventsourcing._event import Event, Snapshot

__all__ = ["NO_STREAM", "CheckpointStore", "EventStore", "StoreContext"]

NO_STREAM = 0
"""`expected_version` for a stream that must not exist yet."""


@runtime_checkable
class EventStore(Protocol):
    """An append-only store of event streams with one global, ordered log.

    All methods are async (anyio: asyncio and trio). The shared conformance suite in
    `meshkit.testing` pins down the behaviour every implementation must have, and this
    protocol documents it once for the memory, SQLite and PostgreSQL stores:

    - Every argument is checked before anything is written, with the same limits on every
      backend (`ConfigurationError` naming the field): versions, positions and limits fit 64
      bits; a `schema_version` is below 2**31; stream ids, event types and checkpoint names
      are text UTF-8 can encode, without NUL, of at most 1,024 UTF-8 bytes; timestamps stay
      in range once normalised to UTC; payloads are strict JSON (no NaN or infinity) nested at
      most 100 containers deep.
    - A store backed by a database raises `EventStoreUnavailableError` when the database
      fails (the driver's error chained; retrying is safe, appends are idempotent), and
      `EventStoreCorruptError` when its file is damaged (no retry can help).
    """

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append `events` to `stream_id` atomically, if the stream is at `expected_version`.

        `events` must belong to `stream_id` and carry versions `expected_version + 1, ...`
        in order. Appending events whose ids are already stored at those very versions is a
        no-op (idempotent retry). Either all events are written or none.

        Returns:
            The stream's version after the append.

        Raises:
            VersionConflictError: If the stream is not at `expected_version` (another writer
                got there first: reload and decide again).
            DuplicateEventIdError: If an event id is already stored, other than by an
                identical earlier append (it names the id and the stream holding it).
            ConfigurationError: If an argument is invalid or out of the limits above: a
                negative `expected_version`, no events, an event of another stream or with
                the wrong version, two events sharing an id, a payload that does not
                serialize.
            EventStoreUnavailableError: If the database fails; nothing of the append is
                written, unless the connection failed while committing (appending the same
                events again is then safe: a no-op if they were stored).
            EventStoreCorruptError: If the database file is damaged.
        """
        ...

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Return the events of `stream_id` with `version >= from_version`, in order.

        An unknown stream reads as empty.

        Raises:
            ConfigurationError: If `stream_id` is not storable text, `from_version` not a
                64-bit int, or `limit` neither `None` nor an int >= 1.
            EventDecodeError: If a stored event is corrupt (naming its stream, version, type).
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
        ...

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Return events of the global log with `position > after_position`, in order.

        Positions are increasing; a reader that resumes after the last position it saw never
        misses an event, even one whose transaction committed late.

        Raises:
            ConfigurationError: If `after_position` is negative or `limit` is not >= 1.
            EventDecodeError: If a stored event is corrupt.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
        ...

    async def stream_version(self, stream_id: str) -> int:
        """Return the current version of `stream_id` (`NO_STREAM`, 0, when it has none).

        Raises:
            ConfigurationError: If `stream_id` is not storable text.
            EventDecodeError: If the stored version is corrupt.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
        ...

    async def wait_for_new(self, after_position: int) -> None:
        """Return once the log may hold events past `after_position` (may return early).

        Subscriptions call it between catch-up reads to follow the log live; cancel the
        caller to stop waiting.

        Raises:
            ConfigurationError: If `after_position` is negative.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot`, replacing an older one of the same stream.

        Raises:
            ConfigurationError: If `snapshot` is not a `Snapshot`, a field is out of the
                limits above, or its state does not serialize.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or `None`.

        Raises:
            ConfigurationError: If `stream_id` is not storable text.
            EventDecodeError: If the stored snapshot is corrupt.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
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
        """Return the saved position of subscription `name` (0 when it has none).

        Raises:
            ConfigurationError: If `name` is not a non-empty, storable name.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged, or the stored position
                is not one.
        """
        ...

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save `position` for subscription `name`; a lower position than saved is ignored.

        Raises:
            ConfigurationError: If `name` is invalid or `position` is not a 64-bit int >= 0.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the database file is damaged.
        """
        ...


class StoreContext:
    """Makes a store an async context manager: `_start()` on entry, `aclose()` on exit.

    Every store meshkit ships is used the same way (`async with Store(...) as store:`);
    a store that needs no opening keeps the default `_start`.
    """

    __slots__ = ()

    async def _start(self) -> None:
        """Open the store (by default there is nothing to open)."""
        await anyio.lowlevel.checkpoint()

    if TYPE_CHECKING:  # each store defines its own; declared here for the exit below

        async def aclose(self) -> None:
            """Release what the store holds."""

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
