"""A `Consumer` on Redis Streams consumer groups (XREADGROUP, XACK, XAUTOCLAIM).

Like `RedisStreamPublisher`, it drives redis-py's synchronous client in worker threads
(`anyio.to_thread`), so it runs on asyncio and trio alike; `redis` is imported on first use.

On its first fetch a consumer re-reads its own pending entries (those it had fetched and not
acknowledged before a crash, under the same `consumer_id`) before any new one, so a restarted
consumer keeps each key's order. Entries left pending by a consumer that died for good are
taken over with XAUTOCLAIM once idle for `claim_idle` seconds.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, final

import anyio.to_thread
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import BusUnavailableError
from meshkit._validate import finite, gt, instance_of, le
from meshkit.eventsourcing import JSONSerializer, Serializer
from meshkit.messaging._codec import decode, event_from_meta
from meshkit.messaging._consumer import Delivery
from meshkit.messaging._inbox import check_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import redis

__all__ = ["RedisStreamConsumer"]

Entry = tuple[bytes, dict[bytes, bytes] | None]
_WEEK = 7 * 24 * 3600.0


def _text(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    check_text(attribute.name, value)


def _translated(operation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:  # noqa: ANN401 - forwarded
            import redis  # noqa: PLC0415 - optional dependency, imported on first use

            try:
                return function(*args)
            except redis.RedisError as exc:
                raise BusUnavailableError("redis", operation, str(exc)) from exc

        return run

    return wrap


@final
@attrs.define(eq=False, kw_only=True)
class RedisStreamConsumer:
    """Consume a Redis stream as member `consumer_id` of consumer group `group`.

    Attributes:
        stream: The stream key (as written by `RedisStreamPublisher`).
        group: The consumer group: the durable name, and the inbox's consumer name.
        consumer_id: This member's name in the group; keep it across restarts of the same
            worker, so it resumes its own pending entries first.
        url: The Redis URL.
        dead_letter_stream: Where dead-lettered entries are added, with the reason
            (default: `"<stream>:dead-letters"`).
        claim_idle: Seconds an entry stays pending with a silent member before another
            member takes it over; longer than the slowest handling (retries included), at
            most a week.
        serializer: Decodes the `data` field.
        clock: Paces the reclaim checks.
    """

    stream: str = attrs.field(validator=_text)
    group: str = attrs.field(validator=_text)
    consumer_id: str = attrs.field(validator=_text)
    url: str = attrs.field(default="redis://127.0.0.1:6379/0", validator=instance_of(str))
    dead_letter_stream: str = attrs.field(validator=_text)
    # At most a week: XAUTOCLAIM takes it as integer milliseconds, and a pending entry
    # idle that long belongs to a member that is gone.
    claim_idle: float = attrs.field(default=60.0, validator=[finite, gt(0), le(_WEEK)])
    serializer: Serializer = attrs.field(factory=JSONSerializer, validator=instance_of(Serializer))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _client: redis.Redis | None = attrs.field(init=False, default=None)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _backlog_from: str | None = attrs.field(init=False, default="0")
    _claim_from: bytes | str = attrs.field(init=False, default="0-0")
    _next_claim: float = attrs.field(init=False, default=0.0)

    @dead_letter_stream.default
    def _dead_letter_default(self) -> str:
        return f"{self.stream}:dead-letters"

    @property
    def name(self) -> str:
        """The group name (messages are recorded in the inbox under it)."""
        return self.group

    async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
        """Return own pending entries first, then reclaimed ones, then new ones.

        Raises:
            BusUnavailableError: If Redis fails.
        """
        claim = self.clock.now() >= self._next_claim
        if claim:
            self._next_claim = self.clock.now() + self.claim_idle / 2
        block_ms = max(1, int(max_wait * 1000))
        entries = await anyio.to_thread.run_sync(self._fetch_sync, max_messages, block_ms, claim)
        return [self._delivery(entry_id, fields, count) for entry_id, fields, count in entries]

    async def ack(self, delivery: Delivery) -> None:
        """XACK the entry.

        Raises:
            BusUnavailableError: If Redis fails.
        """
        await anyio.to_thread.run_sync(self._ack_sync, delivery.handle)

    async def touch(self, delivery: Delivery) -> None:
        """Reset the entry's idle time (XCLAIM JUSTID), so no other member takes it over.

        Raises:
            BusUnavailableError: If Redis fails.
        """
        await anyio.to_thread.run_sync(self._touch_sync, delivery.handle)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """XADD the entry's fields plus the reason to the dead-letter stream, and XACK it.

        Raises:
            BusUnavailableError: If Redis fails.
        """
        await anyio.to_thread.run_sync(self._dead_letter_sync, delivery.handle, reason)

    async def aclose(self) -> None:
        """Close the connection pool; unacknowledged entries stay pending for this member."""
        client, self._client = self._client, None
        self._backlog_from = "0"
        if client is not None:
            await anyio.to_thread.run_sync(client.close)

    # ------------------------------------------------------------------ worker threads

    def _connect(self) -> redis.Redis:
        import redis  # noqa: PLC0415 - optional dependency, imported on first use

        with self._lock:  # calls racing on a fresh consumer share one client
            if self._client is None:
                client = redis.Redis.from_url(self.url)
                try:
                    client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        client.close()
                        raise
                self._client = client
            return self._client

    @_translated("fetch")
    def _fetch_sync(
        self,
        count: int,
        block_ms: int,
        claim: bool,  # noqa: FBT001
    ) -> list[tuple[bytes, dict[bytes, bytes] | None, int]]:
        client = self._connect()
        if self._backlog_from is not None:
            # Our own pending entries, walked once from the start: XREADGROUP with an id
            # returns pending entries above it, including those our lanes still handle.
            entries = self._read(client, self._backlog_from, count, None)
            if entries:
                self._backlog_from = entries[-1][0].decode()
                return self._counted(client, entries)
            self._backlog_from = None
        if claim:
            idle_ms = int(self.claim_idle * 1000)
            reply: Any = client.xautoclaim(
                self.stream, self.group, self.consumer_id, idle_ms, self._claim_from, count=count
            )
            self._claim_from = reply[0]
            # Redis 7 drops deleted entries from the pending list and reports them apart;
            # Redis 6.2 returns each as a nil, without its id: nothing to hand out or ack.
            claimed = [entry for entry in reply[1] if entry[0] is not None]
            if claimed:
                return self._counted(client, claimed)
        return [
            (entry_id, fields, 1) for entry_id, fields in self._read(client, ">", count, block_ms)
        ]

    def _read(self, client: redis.Redis, start: str, count: int, block: int | None) -> list[Entry]:
        reply: Any = client.xreadgroup(
            self.group, self.consumer_id, {self.stream: start}, count=count, block=block
        )
        return list(reply[0][1]) if reply else []

    def _counted(
        self, client: redis.Redis, entries: list[Entry]
    ) -> list[tuple[bytes, dict[bytes, bytes] | None, int]]:
        """Attach each re-read entry's delivery count (XPENDING, one per entry).

        One range over all of them would also list the other pending entries in between
        (those our lanes still hold), however many, and a cut-off range loses counts.
        """
        with client.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            replies: list[Any] = pipe.execute()
        counts = {
            row["message_id"]: int(row["times_delivered"]) for rows in replies for row in rows
        }
        return [(entry_id, fields, counts.get(entry_id, 1)) for entry_id, fields in entries]

    @_translated("ack")
    def _ack_sync(self, entry_id: bytes) -> None:
        self._connect().xack(self.stream, self.group, entry_id)

    @_translated("touch")
    def _touch_sync(self, entry_id: bytes) -> None:
        self._connect().xclaim(
            self.stream, self.group, self.consumer_id, 0, [entry_id], justid=True
        )

    @_translated("dead_letter")
    def _dead_letter_sync(self, entry_id: bytes, reason: str) -> None:
        client = self._connect()
        found: Any = client.xrange(self.stream, entry_id, entry_id)
        fields: dict[Any, Any] = dict(found[0][1]) if found else {}
        fields.update(
            {
                "meshkit_reason": reason.encode("utf-8", "backslashreplace"),
                "meshkit_source_id": entry_id,
                "meshkit_group": self.group,
            }
        )
        with client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, fields)
            pipe.xack(self.stream, self.group, entry_id)
            pipe.execute()

    def _delivery(
        self, entry_id: bytes, fields: dict[bytes, bytes] | None, delivered: int
    ) -> Delivery:
        event, error = decode(_event_of, fields, self.serializer)
        if event is not None:
            return Delivery.of(event, delivered=delivered, handle=entry_id)
        return Delivery(
            message_id=entry_id.decode(),
            key="",
            delivered=delivered,
            decode_error=error,
            handle=entry_id,
        )


def _event_of(fields: dict[bytes, bytes] | None, serializer: Serializer) -> Any:  # noqa: ANN401
    if not fields:  # Redis returns no fields (None, or {} since 7) for a deleted entry
        msg = "the entry was deleted from the stream"
        raise ValueError(msg)
    meta = dict(_decoded(fields))
    return event_from_meta(meta, fields[b"data"], serializer)


def _decoded(fields: dict[bytes, bytes]) -> Iterator[tuple[str, str]]:
    for key, value in fields.items():
        if key != b"data":
            yield key.decode(), value.decode()
