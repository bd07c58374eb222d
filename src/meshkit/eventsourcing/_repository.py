"""The `Repository`: load an aggregate (from a snapshot when there is one) and save it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generic, TypeVar, final

import attrs

from meshkit._errors import ConfigurationError, StreamNotFoundError, UnhandledEventError
from meshkit._validate import count, instance_of, optional
from meshkit.eventsourcing._aggregate import Aggregate
from meshkit.eventsourcing._event import Snapshot
from meshkit.eventsourcing._registry import EventRegistry
from meshkit.eventsourcing._store import EventStore

if TYPE_CHECKING:
    import uuid

__all__ = ["Repository"]

_A = TypeVar("_A", bound=Aggregate)
_LOG = logging.getLogger("meshkit.eventsourcing")


@final
@attrs.define(eq=False, kw_only=True)
class Repository(Generic[_A]):
    """Loads and saves aggregates of one type with optimistic concurrency.

    Attributes:
        store: The event store holding the aggregates' streams.
        aggregate_type: The `Aggregate` subclass this repository builds.
        registry: Converts domain events to stored envelopes and back.
        snapshot_every: Take a snapshot whenever a save crosses a multiple of this many
            events (`None`: never automatically; `snapshot()` still works).
    """

    store: EventStore = attrs.field(validator=instance_of(EventStore))
    aggregate_type: type[_A]
    registry: EventRegistry = attrs.field(validator=instance_of(EventRegistry))
    snapshot_every: int | None = attrs.field(default=None, validator=optional(count(1)))

    async def load(self, stream_id: str) -> _A:
        """Return the aggregate of `stream_id`, from its snapshot plus later events.

        A snapshot of another aggregate type or an older `snapshot_schema` is ignored.

        Raises:
            StreamNotFoundError: If the stream has no events.
            EventDecodeError: If a stored event cannot be decoded (its subclass
                `UnknownEventTypeError` for an unregistered type).
            UnhandledEventError: If the aggregate has no `@applies` for a stored event (a
                note on it names that event's stream, version and type).
            EventStoreUnavailableError: If the store fails.
        """
        aggregate = await self.get(stream_id)
        if aggregate is None:
            raise StreamNotFoundError(stream_id)
        return aggregate

    async def get(self, stream_id: str) -> _A | None:
        """Return the aggregate of `stream_id`, or `None` when the stream has no events.

        Raises:
            EventDecodeError: As `load` does.
            UnhandledEventError: As `load` does.
            EventStoreUnavailableError: If the store fails.
        """
        aggregate = self.aggregate_type(stream_id)
        snapshot = await self.store.load_snapshot(stream_id)
        if snapshot is not None and self._usable(snapshot):
            aggregate.restore_state(dict(snapshot.state))
            aggregate.version = snapshot.version
        events = await self.store.read(stream_id, aggregate.version + 1)
        decode = self.registry.decode
        apply = aggregate.apply
        for event in events:
            try:
                apply(decode(event))
            except UnhandledEventError as exc:
                where = f"{event.type!r} at {event.stream_id!r} version {event.version}"
                exc.add_note(f"while loading event {where}")
                raise
        return aggregate if aggregate.version > 0 else None

    async def save(
        self,
        aggregate: _A,
        *,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
    ) -> int:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        On success the pending events are cleared; on a conflict they are kept, and the
        caller should reload the aggregate and run its command again. The pending events
        keep their event ids across attempts, so saving again after an error that left it
        unknown whether the append was stored (a lost reply, a cancellation) is safe: if it
        was, the store treats the retry as a no-op.

        A snapshot due after the save (`snapshot_every`) that fails is logged (logger
        `meshkit.eventsourcing`), not raised: the events are stored by then.

        Returns:
            The stream's new version.

        Raises:
            VersionConflictError: If another writer appended to the stream meanwhile.
            ConfigurationError: If a pending event's class is not registered, or the store
                refuses the events.
            EventStoreUnavailableError: If the store fails (saving again is then safe).
        """
        pending = aggregate._pending  # noqa: SLF001 - the repository is the aggregate's partner
        if not pending:
            return aggregate.version
        expected = aggregate.version - len(pending)
        to_event = self.registry.to_event
        ids = aggregate._pending_event_ids()  # noqa: SLF001 - the aggregate's partner
        envelopes = [
            to_event(
                event,
                stream_id=aggregate.stream_id,
                version=expected + offset,
                correlation_id=correlation_id,
                causation_id=causation_id,
                event_id=event_id,
            )
            for offset, (event, event_id) in enumerate(zip(pending, ids, strict=True), start=1)
        ]
        version = await self.store.append(aggregate.stream_id, envelopes, expected)
        aggregate._mark_saved()  # noqa: SLF001 - the repository is the aggregate's partner
        every = self.snapshot_every
        if every is not None and version // every > expected // every:
            await self._snapshot_after_save(aggregate)
        return version

    async def _snapshot_after_save(self, aggregate: _A) -> None:
        # The events are stored: raising now would make the caller believe the save failed
        # (and run the command again). A snapshot is only a shortcut: log and carry on.
        try:
            await self.snapshot(aggregate)
        except Exception:  # noqa: BLE001 - logged: the save itself succeeded
            _LOG.exception(
                "snapshot of %r at version %d failed", aggregate.stream_id, aggregate.version
            )

    async def snapshot(self, aggregate: _A) -> None:
        """Store a snapshot of `aggregate`'s saved state.

        Raises:
            ConfigurationError: If the aggregate has unsaved events or no events at all.
            EventStoreUnavailableError: If the store fails.
        """
        if aggregate.pending_events or aggregate.version < 1:
            raise ConfigurationError(
                "aggregate", aggregate.stream_id, "must be saved and non-empty to snapshot"
            )
        await self.store.save_snapshot(
            Snapshot(
                stream_id=aggregate.stream_id,
                version=aggregate.version,
                type=self.aggregate_type.type_name,
                state=aggregate.snapshot_state(),
                schema_version=self.aggregate_type.snapshot_schema,
            )
        )

    def _usable(self, snapshot: Snapshot) -> bool:
        cls = self.aggregate_type
        return snapshot.type == cls.type_name and snapshot.schema_version == cls.snapshot_schema
