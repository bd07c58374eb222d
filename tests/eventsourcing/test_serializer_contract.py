"""A serializer that breaks its contract is refused at the boundary, on every backend."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from meshkit import ConfigurationError
from meshkit.eventsourcing import (
    Event,
    JSONSerializer,
    MemoryEventStore,
    PostgresEventStore,
    Snapshot,
    SQLiteEventStore,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

_Store = MemoryEventStore | SQLiteEventStore | PostgresEventStore

pytestmark = pytest.mark.anyio

_JSON = JSONSerializer()


class _NotBytes:
    """Returns `data["out"]` as the encoding of a payload that has it (a buggy serializer)."""

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        return data["out"] if "out" in data else _JSON.dumps(data)

    def loads(self, raw: bytes) -> dict[str, Any]:
        return _JSON.loads(raw)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, db: str) -> _Store:
    """Return a store of each backend using `_NotBytes`."""
    if request.param == "memory":
        return MemoryEventStore(serializer=_NotBytes())
    if request.param == "sqlite":
        return SQLiteEventStore(path=db, serializer=_NotBytes())
    dsn = request.getfixturevalue("postgres_dsn")
    schema = request.getfixturevalue("pg_schema")
    return PostgresEventStore(dsn=dsn, schema=schema, serializer=_NotBytes())


@pytest.mark.parametrize("out", ["text", 12, None], ids=repr)
async def test_a_serializer_returning_no_bytes_is_refused(store: _Store, out: object) -> None:
    """Not bytes is a ConfigurationError naming the payload, and nothing is written."""
    async with store:
        results: dict[int, object] = {}

        async def append(n: int) -> None:
            stream = f"s-{n}-{uuid.uuid4()}"
            data = {"out": out} if n == 0 else {"n": n}
            try:
                results[n] = await store.append(
                    stream, [Event(stream_id=stream, version=1, type="T", data=data)], 0
                )
            except ConfigurationError as exc:
                results[n] = exc

        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(append, n)
        refused = results.pop(0)
        assert isinstance(refused, ConfigurationError)
        assert (refused.field, "bytes") == ("event.data", refused.reason[-5:])
        assert set(results.values()) == {1}
        assert len(await store.read_all()) == 19
        snapshot = Snapshot(stream_id="s", version=1, type="T", state={"out": out})
        with pytest.raises(ConfigurationError, match=r"snapshot\.state"):
            await store.save_snapshot(snapshot)
        assert await store.load_snapshot("s") is None


async def test_memory_refuses_a_payload_its_serializer_cannot_read_back() -> None:
    """Memory reads each payload back: one its serializer cannot decode is refused, not raw."""
    async with MemoryEventStore(serializer=_NotBytes()) as store:
        event = Event(stream_id="s", version=1, type="T", data={"out": b"\xff"})
        with pytest.raises(ConfigurationError, match="cannot read it back") as info:
            await store.append("s", [event], 0)
        assert info.value.field == "event.data"
        assert await store.read("s") == []
