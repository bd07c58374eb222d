"""Tests for RedisStreamPublisher against the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import json
import threading
from typing import cast

import anyio
import anyio.to_thread
import pytest
import redis

from meshkit import PublishError
from meshkit.eventsourcing import (
    Event,
    MemoryCheckpointStore,
    MemoryEventStore,
    RedisStreamPublisher,
    outbox_relay,
)
from meshkit.testing._eventstore_conformance import make_events

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def _entries(url: str, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    client = redis.Redis.from_url(url)
    try:
        return cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(key))
    finally:
        client.close()


class TestRedisStreamPublisher:
    async def test_relay_publishes_every_event_once(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """The outbox relay XADDs each event, in order, with its id and payload as fields."""
        store = MemoryEventStore()
        events = make_events("order-1", 1, 3)
        store.append_nowait("order-1", events, 0)
        publisher = RedisStreamPublisher(url=redis_url, stream_key=f"{redis_prefix}events")
        relay = outbox_relay(
            name="outbox", store=store, publisher=publisher, checkpoints=MemoryCheckpointStore()
        )
        async with relay:
            await relay.wait_for_position(3)
        stored = store.read_all_nowait()
        await publisher.publish(stored[1])  # a re-delivery after a crash: deduplicated
        await publisher.aclose()
        entries = _entries(redis_url, f"{redis_prefix}events")
        assert [entry_id for entry_id, _ in entries] == [b"1-0", b"2-0", b"3-0"]
        fields = entries[0][1]
        assert fields[b"event_id"] == str(events[0].event_id).encode()
        assert (fields[b"stream_id"], fields[b"version"], fields[b"type"]) == (
            b"order-1",
            b"1",
            b"Happened",
        )
        assert json.loads(fields[b"data"]) == events[0].data
        assert fields[b"correlation_id"] == str(events[0].correlation_id).encode()
        assert b"causation_id" not in fields
        assert b"causation_id" in entries[1][1]

    async def test_a_foreign_higher_entry_is_not_taken_for_a_duplicate(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """If the key holds someone else's entries above the position id, publishing fails."""
        key = f"{redis_prefix}bus"
        client = redis.Redis.from_url(redis_url)
        client.xadd(key, {"from": "another producer"})  # an auto id: the time in milliseconds
        client.close()
        store = MemoryEventStore()
        store.append_nowait("s", make_events("s", 1, 1), 0)
        publisher = RedisStreamPublisher(url=redis_url, stream_key=key)
        with pytest.raises(PublishError, match="not published"):
            await publisher.publish(store.read_all_nowait()[0])
        await publisher.aclose()
        assert len(_entries(redis_url, key)) == 1

    async def test_republishing_after_trimming_is_a_no_op(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """An event re-published after its entry was trimmed away is still taken as done."""
        key = f"{redis_prefix}trimmed"
        store = MemoryEventStore()
        store.append_nowait("s", make_events("s", 1, 3), 0)
        stored = store.read_all_nowait()
        publisher = RedisStreamPublisher(url=redis_url, stream_key=key)
        for event in stored:
            await publisher.publish(event)
        client = redis.Redis.from_url(redis_url)
        client.xtrim(key, maxlen=1, approximate=False)
        await publisher.publish(stored[0])
        await publisher.publish(stored[2])
        assert [entry_id for entry_id, _ in _entries(redis_url, key)] == [b"3-0"]
        client.xtrim(key, maxlen=0, approximate=False)
        client.close()
        await publisher.publish(stored[1])
        await publisher.aclose()
        assert _entries(redis_url, key) == []

    async def test_concurrent_first_publishes_share_one_client(
        self, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Publishes racing on a fresh publisher create one Redis client, not one each."""
        clients: list[redis.Redis] = []
        entered, gate = threading.Event(), threading.Event()
        real_from_url = redis.Redis.from_url

        def gated_from_url(url: str) -> redis.Redis:
            entered.set()
            gate.wait(5)
            client = real_from_url(url)
            clients.append(client)
            return client

        monkeypatch.setattr(redis.Redis, "from_url", gated_from_url)
        publisher = RedisStreamPublisher(
            url=redis_url, stream_key=f"{redis_prefix}race", id_from_position=False
        )
        async with anyio.create_task_group() as group:
            for event in make_events("s", 1, 3):
                group.start_soon(publisher.publish, event)
            await anyio.to_thread.run_sync(entered.wait, 5)
            for _ in range(20):  # let the other publishes get as far as they can
                await anyio.to_thread.run_sync(lambda: None)
            gate.set()
        await publisher.aclose()
        for client in clients:
            client.close()
        assert len(clients) == 1

    async def test_key_function_and_auto_ids(self, redis_url: str, redis_prefix: str) -> None:
        """A key function routes events; without position ids Redis assigns entry ids."""
        publisher = RedisStreamPublisher(
            url=redis_url,
            stream_key=lambda event: f"{redis_prefix}{event.stream_id}",
            id_from_position=False,
            maxlen=100,
        )
        unstored = Event(stream_id="s", version=1, type="T", data={"x": 1})
        await publisher.publish(unstored)
        await publisher.publish(unstored)
        await publisher.aclose()
        await publisher.aclose()
        assert len(_entries(redis_url, f"{redis_prefix}s")) == 2

    async def test_errors_become_publish_errors(self, redis_url: str, redis_prefix: str) -> None:
        """A Redis error (wrong key type, unreachable server) raises PublishError."""
        client = redis.Redis.from_url(redis_url)
        client.set(f"{redis_prefix}plain", "x")
        client.close()
        publisher = RedisStreamPublisher(url=redis_url, stream_key=f"{redis_prefix}plain")
        event = make_events("s", 1, 1)[0]
        with pytest.raises(PublishError, match="WRONGTYPE"):
            await publisher.publish(event)
        await publisher.aclose()
        down = RedisStreamPublisher(url="redis://127.0.0.1:1/0", stream_key="k")
        with pytest.raises(PublishError, match="'k'"):
            await down.publish(event)
        await down.aclose()
