"""A `Publisher` that appends events to Redis Streams (XADD), for an outbox relay.

redis-py's asyncio client runs on asyncio only, so this publisher drives the synchronous
client in a worker thread (`anyio.to_thread.run_sync`), which works on asyncio and trio
alike. `redis` is imported only when the first event is published.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, final

import anyio.to_thread
import attrs

from meshkit._errors import PublishError
from meshkit._validate import count, instance_of, optional
from meshkit.eventsourcing._event import Event, JSONSerializer, Serializer

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

__all__ = ["RedisStreamPublisher"]

_DUPLICATE = "equal or smaller than the target stream top item"


def event_fields(event: Event, serializer: Serializer) -> dict[str, str | bytes | int]:
    """Return the Redis stream entry fields of `event` (ids as text, payload serialized)."""
    fields: dict[str, str | bytes | int] = {
        "event_id": str(event.event_id),
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "schema_version": event.schema_version,
        "timestamp": event.timestamp.isoformat(),
        "data": serializer.dumps(event.data),
    }
    if event.position is not None:
        fields["position"] = event.position
    if event.correlation_id is not None:
        fields["correlation_id"] = str(event.correlation_id)
    if event.causation_id is not None:
        fields["causation_id"] = str(event.causation_id)
    return fields


@final
@attrs.define(eq=False, kw_only=True)
class RedisStreamPublisher:
    """Publish each event with XADD to a Redis stream.

    Every entry carries the event's id as the `event_id` field, so consumers can
    deduplicate. With `id_from_position` (the default), the entry id is
    `"<position>-0"`: Redis itself then refuses a re-published event (its id is not above
    the stream's top), which the publisher treats as already done, so a relay restarted
    after a crash does not duplicate entries. The key must then hold this store's events
    only: an event refused because other producers' entries sit above it raises
    `PublishError` rather than being dropped.

    Attributes:
        url: The Redis URL.
        stream_key: The stream key, or a function of the event returning it (e.g. one
            stream per aggregate type).
        maxlen: Trim the stream to about this many entries (`None`: never trim).
        id_from_position: Use the event's global position as the entry id.
        serializer: Encodes the payload into the `data` field.
    """

    url: str = attrs.field(default="redis://127.0.0.1:6379/0", validator=instance_of(str))
    stream_key: str | Callable[[Event], str] = "meshkit:events"
    maxlen: int | None = attrs.field(default=None, validator=optional(count(1)))
    id_from_position: bool = attrs.field(default=True, validator=instance_of(bool))
    serializer: Serializer = attrs.field(factory=JSONSerializer)
    _client: redis.Redis | None = attrs.field(init=False, default=None)
    _client_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    async def publish(self, event: Event) -> None:
        """XADD `event` to its stream.

        Raises:
            PublishError: If Redis fails (the relay retries it).
        """
        key = self.stream_key(event) if callable(self.stream_key) else self.stream_key
        fields = event_fields(event, self.serializer)
        entry_id = "*"
        if self.id_from_position and event.position is not None:
            entry_id = f"{event.position}-0"
        await anyio.to_thread.run_sync(self._xadd, key, fields, entry_id, event.event_id)

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await anyio.to_thread.run_sync(client.close)

    def _xadd(self, key: str, fields: dict[Any, Any], entry_id: str, event_id: object) -> None:
        import redis  # noqa: PLC0415 - optional dependency, imported on first use

        try:
            client = self._connect()
            try:
                client.xadd(key, fields, id=entry_id, maxlen=self.maxlen, approximate=True)
            except redis.ResponseError as exc:
                if _DUPLICATE not in str(exc):
                    raise
                if not _published_before(client, key, entry_id, event_id):
                    reason = f"not published: the stream holds foreign entries above {entry_id}"
                    raise PublishError(key, event_id, reason) from exc
        except redis.RedisError as exc:
            raise PublishError(key, event_id, str(exc)) from exc

    def _connect(self) -> redis.Redis:
        import redis  # noqa: PLC0415 - optional dependency, imported on first use

        with self._client_lock:  # publishes racing on a fresh publisher share one client
            if self._client is None:
                self._client = redis.Redis.from_url(self.url)
            return self._client


def _published_before(client: redis.Redis, key: str, entry_id: str, event_id: object) -> bool:
    """Tell a re-published event (refused by Redis) from a key holding foreign higher ids.

    The event was published before if its entry is there with its `event_id`, or was trimmed
    away below a later entry written by position too (or with everything else).
    """
    same: Any = client.xrange(key, entry_id, entry_id)
    if same:
        return bool(same[0][1].get(b"event_id") == str(event_id).encode())
    newest: Any = client.xrevrange(key, count=1)
    if not newest:  # everything was trimmed away
        return True
    top_id, top_fields = newest[0]
    position = top_fields.get(b"position")
    return position is not None and bool(top_id == position + b"-0")
