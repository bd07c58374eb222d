"""Event bus throughput, end to end: meshkit (outbox -> bus -> inbox -> commit) vs FastStream.

meshkit's path: `PER_ROUND` events already stored in a SQLite event store are relayed by
`outbox_relay` to the bus (`JetStreamPublisher` / `RedisStreamPublisher`), consumed by
`Dispatcher`s over `JetStreamConsumer` / `RedisStreamConsumer`, and each one is handled in an
inbox transaction on a second SQLite file (the consuming service's database, WAL with
synchronous=FULL: the handler inserts a row, the inbox records the message; up to
`COMMIT_BATCH` waiting messages of a lane share one commit) and acknowledged after it.

FastStream's path, in the same session on the same servers: `broker.publish` of the same
number of messages (JetStream publish with its ack; XADD) while its subscribers (a durable
pull consumer; a consumer group) consume and acknowledge them, with no inbox and no
database. A round ends when every message has been handled; events/s = PER_ROUND / time.

"Consumers" is the number of consumer instances sharing the durable name (NATS) or group
(Redis): meshkit runs that many `Dispatcher`s; FastStream that many subscribers.

Run: `.venv/bin/pytest benchmarks/test_eventbus.py --benchmark-only`
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import nats
import pytest
import redis as redis_sync
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.redis import RedisBroker, StreamSub

from meshkit.eventsourcing import (
    Event,
    MemoryCheckpointStore,
    Publisher,
    RedisStreamPublisher,
    SQLiteEventStore,
    SQLiteTransaction,
    outbox_relay,
)
from meshkit.messaging import (
    Consumer,
    Dispatcher,
    JetStreamConsumer,
    JetStreamPublisher,
    RedisStreamConsumer,
    SQLiteInbox,
)

if TYPE_CHECKING:
    from collections.abc import Callable

PER_ROUND = int(os.environ.get("MESHKIT_BENCH_EVENTS", "2000"))
ROUNDS = 3
COMMIT_BATCH = int(os.environ.get("MESHKIT_BENCH_COMMIT_BATCH", "32"))
NATS_URL = os.environ.get("MESHKIT_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("MESHKIT_REDIS_URL", "redis://127.0.0.1:6379/0")
DATA = b'{"order_id":"o-1","total":42,"lines":[{"sku":"A","qty":1}]}'


class Names:
    """Unique stream/subject/key names of one round, cleaned up afterwards."""

    def __init__(self) -> None:
        token = uuid.uuid4().hex[:10]
        self.stream = f"BENCH_{token}"
        self.subject = f"bench.{token}.events"
        self.dead = f"bench.{token}.dead"
        self.key = f"meshkit-bench:{token}"


async def nats_stream(names: Names, create: bool) -> None:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    if create:
        await js.add_stream(name=names.stream, subjects=[names.subject, names.dead])
    else:
        await js.delete_stream(names.stream)
    await nc.close()


def redis_cleanup(names: Names) -> None:
    client = redis_sync.Redis.from_url(REDIS_URL)
    client.delete(names.key, f"{names.key}:dead-letters")
    client.close()


# ---------------------------------------------------------------- meshkit


async def fill_source(path: str) -> SQLiteEventStore:
    """A source store holding PER_ROUND events (the outbox), one per order stream."""
    store = await SQLiteEventStore.open(path)
    for n in range(PER_ROUND):
        event = Event(
            stream_id=f"order-{n % 64}-{n // 64}",
            version=1,
            type="OrderPlaced",
            data={"order_id": f"o-{n}", "total": 42},
        )
        await store.append(event.stream_id, [event], 0)
    return store


async def meshkit_round(
    publisher: Publisher, consumers: list[Consumer], source: SQLiteEventStore, sink: str
) -> None:
    target = await SQLiteEventStore.open(sink)
    async with target.transaction() as tx:
        await tx.execute("CREATE TABLE shipments (order_id TEXT, total INTEGER)")
    inbox = SQLiteInbox(store=target)
    done = anyio.Event()

    async def handler(event: Event, tx: SQLiteTransaction) -> None:
        await tx.execute(
            "INSERT INTO shipments VALUES (?, ?)", (event.data["order_id"], event.data["total"])
        )

    relay = outbox_relay(
        name="bench", store=source, publisher=publisher, checkpoints=MemoryCheckpointStore()
    )
    dispatchers = [
        Dispatcher(
            consumer=c,
            handler=handler,
            inbox=inbox,
            batch_size=64,
            parallelism=4,
            commit_batch=COMMIT_BATCH,
            fetch_timeout=0.2,
        )
        for c in consumers
    ]
    async with relay, anyio.create_task_group() as tg:
        for dispatcher in dispatchers:
            tg.start_soon(run_dispatcher, dispatcher, done)
        # Several dispatchers share the work: poll their sum (5 ms, well below a round).
        while sum(d.statistics().handled for d in dispatchers) < PER_ROUND:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        done.set()
    for consumer in consumers:
        await consumer.aclose()
    await target.aclose()


async def run_dispatcher(dispatcher: Dispatcher[Any], done: anyio.Event) -> None:
    async with dispatcher:
        await done.wait()


def meshkit_case(bus: str, consumers: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    state: dict[str, Any] = {}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        tmp = tempfile.mkdtemp(prefix="meshkit-bench-")
        names = Names()
        state.update(
            names=names, source=str(Path(tmp) / "source.db"), sink=str(Path(tmp) / "sink.db")
        )
        if bus == "nats":
            anyio.run(nats_stream, names, True, backend="asyncio")
        state["store"] = anyio.run(fill_source, state["source"], backend="asyncio")
        return (), {}

    def run() -> None:
        names: Names = state["names"]

        async def main() -> None:
            publisher: Any
            if bus == "nats":
                publisher = JetStreamPublisher(url=NATS_URL, subject=names.subject)
                members: list[Consumer] = [
                    JetStreamConsumer(
                        url=NATS_URL,
                        stream=names.stream,
                        subject=names.subject,
                        durable="bench",
                        dead_letter_subject=names.dead,
                    )
                    for _ in range(consumers)
                ]
            else:
                publisher = RedisStreamPublisher(
                    url=REDIS_URL, stream_key=names.key, id_from_position=False
                )
                members = [
                    RedisStreamConsumer(
                        url=REDIS_URL, stream=names.key, group="bench", consumer_id=f"c{n}"
                    )
                    for n in range(consumers)
                ]
            await meshkit_round(publisher, members, state["store"], state["sink"])
            await publisher.aclose()
            await state["store"].aclose()

        anyio.run(main, backend="asyncio")
        if bus == "nats":
            anyio.run(nats_stream, names, False, backend="asyncio")
        else:
            redis_cleanup(names)

    return setup, run


# ---------------------------------------------------------------- FastStream


def faststream_case(bus: str, consumers: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    state: dict[str, Any] = {}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        names = Names()
        state["names"] = names
        if bus == "nats":
            anyio.run(nats_stream, names, True, backend="asyncio")
        return (), {}

    def run() -> None:
        names: Names = state["names"]
        anyio.run(faststream_round, bus, consumers, names, backend="asyncio")
        if bus == "nats":
            anyio.run(nats_stream, names, False, backend="asyncio")
        else:
            redis_cleanup(names)

    return setup, run


async def faststream_round(bus: str, consumers: int, names: Names) -> None:
    handled = 0
    done = anyio.Event()

    async def handle(body: Any) -> None:  # FastStream decodes the JSON body
        nonlocal handled
        handled += 1
        if handled >= PER_ROUND:
            done.set()

    broker: Any
    if bus == "nats":
        broker = NatsBroker(NATS_URL, logger=None)
        stream = JStream(names.stream, declare=False)
        for _ in range(consumers):
            broker.subscriber(
                names.subject, stream=stream, durable="fs", pull_sub=PullSub(batch_size=64)
            )(handle)
    else:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]
        for n in range(consumers):
            broker.subscriber(stream=StreamSub(names.key, group="fs", consumer=f"c{n}"))(handle)
    async with broker:
        await broker.start()
        for n in range(PER_ROUND):
            if bus == "nats":
                await broker.publish(
                    DATA, names.subject, stream=names.stream, headers={"Nats-Msg-Id": f"m-{n}"}
                )
            else:
                await broker.publish(DATA, stream=names.key)
        with anyio.fail_after(120):
            await done.wait()


# ---------------------------------------------------------------- the benchmarks

CASES = [("nats", 1), ("nats", 8), ("redis", 1), ("redis", 8)]


@pytest.mark.parametrize(("bus", "consumers"), CASES, ids=[f"{b}-{c}" for b, c in CASES])
def test_meshkit_with_inbox(benchmark: Any, bus: str, consumers: int) -> None:
    benchmark.group = f"eventbus-{bus}-{consumers}"
    benchmark.extra_info["events"] = PER_ROUND
    setup, run = meshkit_case(bus, consumers)
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize(("bus", "consumers"), CASES, ids=[f"{b}-{c}" for b, c in CASES])
def test_faststream_without_inbox(benchmark: Any, bus: str, consumers: int) -> None:
    benchmark.group = f"eventbus-{bus}-{consumers}"
    benchmark.extra_info["events"] = PER_ROUND
    setup, run = faststream_case(bus, consumers)
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
