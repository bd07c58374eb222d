"""Checks the SQLite and PostgreSQL store tests share."""

from __future__ import annotations

import anyio

from meshkit.eventsourcing import Event, EventStore


async def wait_for_new_race_free(store: EventStore) -> None:
    """A waiter wakes once an event is appended after the position it waits from."""
    try:
        await store.append("s-1", [Event(stream_id="s-1", version=1, type="T")], 0)
        with anyio.fail_after(10):
            await store.wait_for_new(0)
        position = (await store.read_all())[-1].position or 0
        woke: list[bool] = []

        async def waiter() -> None:
            await store.wait_for_new(position)
            woke.append(True)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                await store.append("s-1", [Event(stream_id="s-1", version=2, type="T")], 1)
        assert woke == [True]
    finally:
        await store.aclose()
