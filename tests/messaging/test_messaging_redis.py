"""Redis Streams consumer groups: conformance, reclaim of a dead member, errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import anyio
import pytest
import redis

from meshkit import BusUnavailableError, ConfigurationError
from meshkit.eventsourcing import Event, JSONSerializer, RedisStreamPublisher
from meshkit.eventsourcing._redis_publisher import event_fields
from meshkit.messaging import Dispatcher, MemoryInbox, RedisStreamConsumer
from meshkit.testing import BusConformance
from meshkit.testing._bus_conformance import make_bus_events, record_effect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence


pytestmark = pytest.mark.redis


class TestRedisConformance(BusConformance):
    @pytest.fixture(autouse=True)
    async def _redis(self, redis_url: str, redis_prefix: str) -> AsyncIterator[None]:
        self.url = redis_url
        self.stream = f"{redis_prefix}events"
        self.publisher = RedisStreamPublisher(url=redis_url, stream_key=self.stream)
        self.client = redis.Redis.from_url(redis_url)
        yield
        await self.publisher.aclose()
        self.client.close()

    async def make_consumer(self, name: str) -> RedisStreamConsumer:
        return RedisStreamConsumer(url=self.url, stream=self.stream, group=name, consumer_id="w1")

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.publisher.publish(event)

    async def publish_undecodable(self) -> str:
        entry_id: Any = self.client.xadd(self.stream, {"not": "an event"})
        return str(entry_id.decode())

    async def dead_lettered(self, name: str) -> list[tuple[str, str]]:
        entries: Any = self.client.xrange(f"{self.stream}:dead-letters")
        return [
            (
                (fields.get(b"event_id") or fields[b"meshkit_source_id"]).decode(),
                fields[b"meshkit_reason"].decode(),
            )
            for _, fields in entries
            if fields[b"meshkit_group"].decode() == name
        ]


@pytest.mark.anyio
class TestRedisStreamConsumer:
    async def test_reclaims_pending_entries_of_a_dead_member(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """Entries a dead member fetched are taken over by another after `claim_idle`."""
        stream = f"{redis_prefix}events"
        events = make_bus_events(keys=2, per_key=3)
        publisher = RedisStreamPublisher(url=redis_url, stream_key=stream)
        for event in events:
            await publisher.publish(event)
        await publisher.aclose()
        dead = RedisStreamConsumer(url=redis_url, stream=stream, group="g", consumer_id="dead")
        taken = await dead.fetch(4, 1.0)
        await dead.aclose()  # never acknowledges, never comes back
        inbox = MemoryInbox()
        alive = RedisStreamConsumer(
            url=redis_url, stream=stream, group="g", consumer_id="alive", claim_idle=0.2
        )
        async with Dispatcher(
            consumer=alive, handler=record_effect, inbox=inbox, fetch_timeout=0.1
        ) as d:
            with anyio.fail_after(30):
                await d.wait_for(lambda s: s.handled >= len(events))
        await alive.aclose()
        assert len(taken) == 4
        assert sorted(inbox.processed("g")) == sorted(str(e.event_id) for e in events)
        client = redis.Redis.from_url(redis_url)
        try:
            summary: Any = client.xpending(stream, "g")
        finally:
            client.close()
        assert summary["pending"] == 0

    async def test_redelivery_count_comes_from_the_pending_list(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """A member re-reading its own pending entries sees how often they were delivered."""
        stream = f"{redis_prefix}events"
        publisher = RedisStreamPublisher(url=redis_url, stream_key=stream)
        await publisher.publish(Event(stream_id="s", version=1, type="T"))
        await publisher.aclose()
        first = RedisStreamConsumer(url=redis_url, stream=stream, group="g", consumer_id="w")
        (delivery,) = await first.fetch(1, 1.0)
        await first.touch(delivery)
        await first.aclose()
        again = RedisStreamConsumer(url=redis_url, stream=stream, group="g", consumer_id="w")
        (redelivery,) = await again.fetch(1, 1.0)
        await again.ack(redelivery)
        await again.aclose()
        assert (delivery.delivered, redelivery.delivered) == (1, 2)
        assert redelivery.message_id == delivery.message_id

    async def test_reclaimed_counts_hold_past_many_own_pending_entries(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """Reclaimed entries get their own counts, however many of ours lie between them."""
        stream, inner = f"{redis_prefix}events", 150
        client = redis.Redis.from_url(redis_url)
        client.xgroup_create(stream, "g", id="0", mkstream=True)
        ids: list[Any] = [client.xadd(stream, {"x": "1"}) for _ in range(inner + 2)]
        client.xreadgroup("g", "dead", {stream: ">"}, count=1)
        client.xreadgroup("g", "alive", {stream: ">"}, count=inner)
        client.xreadgroup("g", "dead", {stream: ">"}, count=1)
        # The dead member's two entries idle for an hour (no sleeping); ours are fresh.
        client.xclaim(stream, "g", "dead", 0, [ids[0], ids[-1]], idle=3_600_000, justid=True)
        alive = RedisStreamConsumer(url=redis_url, stream=stream, group="g", consumer_id="alive")
        alive._backlog_from = None  # past the walk of its own pending entries
        reclaimed = await alive.fetch(16, 0.1)
        await alive.aclose()
        client.close()
        assert [d.handle for d in reclaimed] == [ids[0], ids[-1]]
        assert [d.delivered for d in reclaimed] == [2, 2]

    async def test_unreachable_redis_is_bus_unavailable(self) -> None:
        """A Redis that cannot be reached raises BusUnavailableError from fetch."""
        consumer = RedisStreamConsumer(
            url="redis://127.0.0.1:1/0", stream="s", group="g", consumer_id="w"
        )
        with pytest.raises(BusUnavailableError, match="redis fetch"):
            await consumer.fetch(1, 0.1)
        await consumer.aclose()


class TestRedisConfiguration:
    @pytest.mark.parametrize(
        ("field", "options"),
        [
            ("stream", {"stream": ""}),
            ("group", {"group": "bad\0name"}),
            ("consumer_id", {"consumer_id": "\ud800"}),
            ("claim_idle", {"claim_idle": 0}),
            ("claim_idle", {"claim_idle": float("nan")}),
            ("claim_idle", {"claim_idle": 1e300}),
        ],
    )
    def test_bad_configuration_names_the_field(self, field: str, options: dict[str, Any]) -> None:
        """Bad knobs raise ConfigurationError naming the field."""
        base: dict[str, Any] = {"stream": "s", "group": "g", "consumer_id": "w"}
        with pytest.raises(ConfigurationError) as caught:
            RedisStreamConsumer(**(base | options))
        assert caught.value.field == field


@pytest.mark.anyio
class TestRedisOddities:
    async def test_key_that_is_not_a_stream_is_bus_unavailable(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """A key holding something else than a stream raises BusUnavailableError."""
        client = redis.Redis.from_url(redis_url)
        client.set(f"{redis_prefix}plain", "x")
        client.close()
        consumer = RedisStreamConsumer(
            url=redis_url, stream=f"{redis_prefix}plain", group="g", consumer_id="w"
        )
        with pytest.raises(BusUnavailableError, match="WRONGTYPE"):
            await consumer.fetch(1, 0.1)
        await consumer.aclose()

    async def test_deleted_pending_entry_is_dead_lettered(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """An entry deleted while pending comes back as undecodable and is dead-lettered."""
        stream = f"{redis_prefix}events"
        publisher = RedisStreamPublisher(url=redis_url, stream_key=stream)
        await publisher.publish(Event(stream_id="s", version=1, type="T"))
        await publisher.aclose()
        first = RedisStreamConsumer(url=redis_url, stream=stream, group="g", consumer_id="w")
        (delivery,) = await first.fetch(1, 1.0)
        await first.aclose()
        client = redis.Redis.from_url(redis_url)
        client.xdel(stream, delivery.handle)  # type: ignore[arg-type]
        again = RedisStreamConsumer(url=redis_url, stream=stream, group="g", consumer_id="w")
        async with Dispatcher(
            consumer=again, handler=record_effect, inbox=MemoryInbox(), fetch_timeout=0.1
        ) as dispatcher:
            with anyio.fail_after(30):
                await dispatcher.wait_for(lambda s: s.dead_lettered == 1)
        await again.aclose()
        letters: Any = client.xrange(f"{stream}:dead-letters")
        client.close()
        assert b"deleted" in letters[0][1][b"meshkit_reason"]


class ReplyOfRedis62:
    """A client answering XAUTOCLAIM as Redis 6.2 does: a deleted entry is a nil."""

    def xautoclaim(self, *args: Any, **kwargs: Any) -> Any:
        event = Event(stream_id="s", version=1, type="T")
        written = event_fields(event, JSONSerializer())
        fields = {
            k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in written.items()
        }
        return [b"0-0", [(None, None), (b"5-0", fields)]]

    def pipeline(self, **kwargs: Any) -> Self:
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def xpending_range(self, *args: Any, **kwargs: Any) -> None:
        return None  # queued; `execute` answers

    def execute(self) -> Any:
        return [[{"message_id": b"5-0", "times_delivered": 3}]]


@pytest.mark.anyio
class TestOldRedisReplies:
    async def test_nil_entry_of_xautoclaim_is_skipped(self) -> None:
        """A deleted entry that XAUTOCLAIM returns as nil (Redis 6.2) is skipped, not a crash."""
        consumer = RedisStreamConsumer(stream="s", group="g", consumer_id="w")
        consumer._client = ReplyOfRedis62()  # type: ignore[assignment]
        consumer._backlog_from = None  # past the walk of its own pending entries
        (delivery,) = await consumer.fetch(10, 0.1)
        assert delivery.handle == b"5-0"
        assert delivery.delivered == 3
        assert delivery.decode_error is None
