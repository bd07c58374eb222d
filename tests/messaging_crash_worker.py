"""A consumer process for the crash tests: handles events into SQLite until told count is reached.

The parent forks it (multiprocessing forkserver, so no import cost per kill) and SIGKILLs it
at random moments while it handles messages. Every effect is a row in `effects`, written in
the inbox transaction, so after all the kills each event must have exactly one row.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import anyio

from meshkit.eventsourcing import Event, SQLiteEventStore, SQLiteTransaction
from meshkit.messaging import (
    Consumer,
    DeliveryPolicy,
    Dispatcher,
    JetStreamConsumer,
    RedisStreamConsumer,
    SQLiteInbox,
)

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as ProcessEvent


def make_consumer(config: dict[str, Any]) -> Consumer:
    """Build the bus consumer the config names."""
    if config["bus"] == "nats":
        return JetStreamConsumer(
            url=config["url"],
            stream=config["stream"],
            subject=config["subject"],
            durable=config["name"],
            dead_letter_subject=config["dead"],
            ack_wait=config["ack_wait"],
        )
    return RedisStreamConsumer(
        url=config["url"], stream=config["stream"], group=config["name"], consumer_id="worker"
    )


async def count_effects(store: SQLiteEventStore) -> int:
    """Return how many effect rows are committed."""
    async with store.transaction() as tx:
        rows = await tx.execute("SELECT count(*) FROM effects")
    return int(rows[0][0])


async def consume(config: dict[str, Any], handling: ProcessEvent) -> None:
    """Handle messages until `config["expected"]` effects are committed."""
    store = await SQLiteEventStore.open(config["db"])
    consumer = make_consumer(config)

    async def handler(event: Event, tx: SQLiteTransaction) -> None:
        handling.set()
        await tx.execute(
            "INSERT INTO effects (key, version, event_id) VALUES (?, ?, ?)",
            (event.stream_id, event.version, str(event.event_id)),
        )
        await anyio.sleep(random.uniform(0, 0.002))  # widen the window a kill can land in

    dispatcher = Dispatcher(
        consumer=consumer,
        handler=handler,
        inbox=SQLiteInbox(store=store),
        # Kills redeliver a message many times: never count that as poison here.
        policy=DeliveryPolicy(max_deliveries=None, backoff_initial=0.01),
        parallelism=4,
        batch_size=8,
        fetch_timeout=0.2,
    )
    async with dispatcher:
        while await count_effects(store) < config["expected"]:  # noqa: ASYNC110 - polls the db
            await anyio.sleep(0.02)
    await consumer.aclose()
    await store.aclose()


def main(config: dict[str, Any], handling: ProcessEvent) -> None:
    """Process entry point (asyncio: nats-py needs it)."""
    anyio.run(consume, config, handling, backend="asyncio")
