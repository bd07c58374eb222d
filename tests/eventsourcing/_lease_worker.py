"""A worker process for test_subscription_failover.py: one replica of a projection.

It runs the subscription `projection` with a transactional checkpoint; the handler records
each event in the `effects` table in the checkpoint's transaction. It exits once the
checkpoint reaches TOTAL, when the test kills it, or when the test process is gone.

Usage: python _lease_worker.py BACKEND TARGET SCHEMA WORKER TOTAL
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import anyio

from meshkit.eventsourcing import Event, PostgresEventStore, SQLiteEventStore, Subscription

LEASE_DURATION = 1.0
RENEW_INTERVAL = 0.2


async def main(backend: str, target: str, schema: str, worker: int, total: int) -> None:
    """Project every event into `effects` while this replica holds the lease."""
    store: SQLiteEventStore | PostgresEventStore
    if backend == "sqlite":
        store = await SQLiteEventStore.open(target)
        insert = "INSERT INTO effects (position, worker, at) VALUES (?, ?, ?)"
    else:
        store = await PostgresEventStore.open(target, schema=schema, max_connections=4)
        insert = f'INSERT INTO "{schema}".effects (position, worker, at) VALUES (%s, %s, %s)'  # noqa: S608 - a test schema name

    async def project(event: Event, tx: Any) -> None:
        await tx.execute(insert, (event.position, worker, time.time()))

    subscription = Subscription(
        name="projection",
        store=store,
        handler=project,
        checkpoints=store,
        batch_size=10,
        lease_duration=LEASE_DURATION,
        renew_interval=RENEW_INTERVAL,
    )
    parent = os.getppid()
    try:
        async with subscription:
            while await store.load_checkpoint("projection") < total:
                if os.getppid() != parent:  # the test process died: do not outlive it
                    return
                await anyio.sleep(0.05)
    finally:
        await store.aclose()


if __name__ == "__main__":
    backend, target, schema, worker, total = sys.argv[1:6]
    anyio.run(main, backend, target, schema, int(worker), int(total))
