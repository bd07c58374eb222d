"""A worker process for test_store_concurrency.py: appends to its own and shared streams.

Usage: python _es_worker.py BACKEND TARGET SCHEMA WORKER COUNT
"""

from __future__ import annotations

import sys

import anyio

from meshkit import VersionConflictError
from meshkit.eventsourcing import Event, EventStore, PostgresEventStore, SQLiteEventStore

SHARED = ("shared-a", "shared-b")


async def _append_shared(store: EventStore, stream_id: str, worker: int, n: int) -> None:
    """Append one event to a shared stream, retrying on lost races."""
    while True:
        version = await store.stream_version(stream_id)
        event = Event(stream_id=stream_id, version=version + 1, type="Shared", data={"w": worker})
        try:
            await store.append(stream_id, [event], version)
        except VersionConflictError:
            continue
        return


async def main(backend: str, target: str, schema: str, worker: int, count: int) -> None:
    """Append `count` events to the worker's own stream and `count` to the shared ones."""
    store: EventStore
    if backend == "sqlite":
        store = await SQLiteEventStore.open(target)
    else:
        store = await PostgresEventStore.open(target, schema=schema, max_connections=2)
    own = f"own-{worker}"
    try:
        for n in range(count):
            own_event = Event(stream_id=own, version=n + 1, type="Own", data={"n": n})
            await store.append(own, [own_event], n)
            await _append_shared(store, SHARED[n % 2], worker, n)
    finally:
        await store.aclose()


if __name__ == "__main__":
    backend, target, schema, worker, count = sys.argv[1:6]
    anyio.run(main, backend, target, schema, int(worker), int(count))
