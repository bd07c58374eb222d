"""What the subscription lease costs a projection: catch-up with and without it.

A projection catches up on N events with a transactional checkpoint (one row written per
event, batches of 100), once holding its name's lease (every checkpoint fenced, a renewal
task running) and once with `leases=None`, alternately, on SQLite and on PostgreSQL (when it
is reachable). Prints the best time of each and the ratio.

Usage: .venv/bin/python benchmarks/subscription_lease.py [EVENTS] [ROUNDS]
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from meshkit.eventsourcing import Event, PostgresEventStore, SQLiteEventStore, Subscription

DSN = "postgresql://postgres@127.0.0.1:5432/test"
Store = SQLiteEventStore | PostgresEventStore


async def _fill(store: Store, events: int) -> None:
    for first in range(0, events, 100):
        stream = f"s-{first}"
        batch = [
            Event(stream_id=stream, version=n, type="T", data={"n": n})
            for n in range(1, min(100, events - first) + 1)
        ]
        await store.append(stream, batch, 0)


async def _catch_up(store: Store, insert: str, events: int, *, leased: bool) -> float:
    async def project(event: Event, tx: Any) -> None:
        await tx.execute(insert, (event.position,))

    knobs: dict[str, Any] = {} if leased else {"leases": None}
    subscription = Subscription(
        name=f"bench-{uuid.uuid4().hex[:8]}",
        store=store,
        handler=project,
        checkpoints=store,
        **knobs,
    )
    start = time.perf_counter()
    async with subscription:
        await subscription.wait_for_position(events)
    return time.perf_counter() - start


async def _transactions(store: Store, count: int, *, fenced: bool) -> float:
    """Time `count` checkpoint transactions, each fenced by the lease or not; per transaction."""
    leases = store.leases()
    name = f"tx-{uuid.uuid4().hex[:8]}"
    record = await leases.acquire_lease(name, None, "bench", 10.0)
    assert record is not None
    start = time.perf_counter()
    for position in range(1, count + 1):
        async with store.transaction() as tx:
            if fenced:
                await leases.fence(tx, name, "bench", record.token)
            await tx.save_checkpoint(name, position)
    return (time.perf_counter() - start) / count


async def _compare(store: Store, insert: str, label: str, events: int, rounds: int) -> None:
    await _fill(store, events)
    best = {True: float("inf"), False: float("inf")}
    fence = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for leased in (False, True):
            best[leased] = min(best[leased], await _catch_up(store, insert, events, leased=leased))
            fence[leased] = min(fence[leased], await _transactions(store, 50, fenced=leased))
    print(  # noqa: T201 - the report
        f"{label}: catch-up of {events} events without lease {best[False] * 1e3:.0f} ms, "
        f"with lease {best[True] * 1e3:.0f} ms ({best[False] / best[True]:.2f}x); "
        f"checkpoint transaction {fence[False] * 1e6:.0f} us, fenced {fence[True] * 1e6:.0f} us "
        f"({fence[False] / fence[True]:.2f}x)"
    )


async def main(events: int, rounds: int) -> None:
    """Run the comparison on SQLite, then on PostgreSQL if it answers."""
    with tempfile.TemporaryDirectory() as directory:
        async with SQLiteEventStore(path=Path(directory) / "bench.db") as store:
            async with store.transaction() as tx:
                await tx.execute("CREATE TABLE seen (position INTEGER)")
            await _compare(store, "INSERT INTO seen VALUES (?)", "sqlite", events, rounds)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        import psycopg  # noqa: PLC0415 - optional

        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        print(f"postgres: skipped ({exc})")  # noqa: T201 - the report
        return
    try:
        async with PostgresEventStore(dsn=DSN, schema=schema) as store:
            async with store.transaction() as tx:
                await tx.execute(f'CREATE TABLE "{schema}".seen (position BIGINT)')
            insert = f'INSERT INTO "{schema}".seen VALUES (%s)'  # noqa: S608 - a fresh schema name
            await _compare(store, insert, "postgres", events, rounds)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    anyio.run(main, EVENTS, ROUNDS)
