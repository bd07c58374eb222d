"""Idempotency: one contract over the memory, SQLite and PostgreSQL stores, and end to end."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import aio_server, sync_server
from meshkit import ConfigurationError, IdempotencyConflictError, IdempotencyStoreError
from meshkit.grpc import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    PostgresIdempotencyStore,
    ServerPolicy,
    SQLiteIdempotencyStore,
)
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_and_clock(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[IdempotencyStore, FakeClock]]:
    """Each backend with a fake clock (ttl 100 s, lease 10 s)."""
    clock = FakeClock()
    clock.advance(1000)
    if request.param == "memory":
        yield MemoryIdempotencyStore(ttl=100, lease=10, clock=clock), clock
    elif request.param == "sqlite":
        store = SQLiteIdempotencyStore(str(tmp_path / "idem.db"), ttl=100, lease=10, clock=clock)
        yield store, clock
        store.close()
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        table = f"idem_{uuid.uuid4().hex[:12]}"
        pg = PostgresIdempotencyStore(dsn, table=table, ttl=100, lease=10, clock=clock)
        yield pg, clock
        pg._execute(f"DROP TABLE {table}", {})
        pg.close()


class TestStoreContract:
    """The state machine every backend implements."""

    def test_claim_answer_replay(self, store_and_clock: tuple[IdempotencyStore, FakeClock]) -> None:
        """First call claims; a repeat while running conflicts; after the answer, replays."""
        store, clock = store_and_clock
        assert store.begin("/a.B/C", "k1") is None
        with pytest.raises(IdempotencyConflictError):
            store.begin("/a.B/C", "k1")
        assert store.begin("/a.B/D", "k1") is None  # keys are per method
        store.complete("/a.B/C", "k1", b"")  # an empty message is an answer too
        assert store.begin("/a.B/C", "k1") == b""
        clock.advance(101)
        assert store.begin("/a.B/C", "k1") is None  # forgotten after ttl

    def test_abandon_and_lease(self, store_and_clock: tuple[IdempotencyStore, FakeClock]) -> None:
        """A failed call releases its claim; a claim past its lease is taken over."""
        store, clock = store_and_clock
        assert store.begin("/a.B/C", "k2") is None
        store.abandon("/a.B/C", "k2")
        assert store.begin("/a.B/C", "k2") is None
        clock.advance(11)
        assert store.begin("/a.B/C", "k2") is None
        store.complete("/a.B/C", "k2", b"\x08\x01")
        assert store.begin("/a.B/C", "k2") == b"\x08\x01"


class TestStoreErrors:
    """Broken backends and bad arguments."""

    def test_sqlite_unreachable(self, tmp_path: Path) -> None:
        """A path that cannot be opened is an IdempotencyStoreError."""
        with pytest.raises(IdempotencyStoreError, match="sqlite"):
            SQLiteIdempotencyStore(str(tmp_path / "missing" / "x.db"))
        store = SQLiteIdempotencyStore(":memory:")
        store.close()
        with pytest.raises(IdempotencyStoreError):
            store.begin("/a", "k")
        with pytest.raises(IdempotencyStoreError):
            store.abandon("/a", "k")

    def test_postgres_errors(self) -> None:
        """A bad table name is a ConfigurationError; an unreachable server a store error."""
        with pytest.raises(ConfigurationError, match="table"):
            PostgresIdempotencyStore("postgresql://x", table="x; DROP")
        with pytest.raises(IdempotencyStoreError, match="postgres"):
            PostgresIdempotencyStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")

    def test_bad_knobs(self) -> None:
        """ttl and lease must be positive and finite."""
        with pytest.raises(ConfigurationError, match="ttl"):
            MemoryIdempotencyStore(ttl=float("nan"))
        with pytest.raises(ConfigurationError, match="lease"):
            SQLiteIdempotencyStore(":memory:", lease=0)


def _key(text: str) -> tuple[tuple[str, str], ...]:
    return (("idempotency-key", text),)


class TestEndToEnd:
    """Through real servers."""

    def test_sync_server_replays(self, tmp_path: Path) -> None:
        """The second call with a key gets the first answer without running the handler."""
        store = SQLiteIdempotencyStore(str(tmp_path / "e2e.db"))
        policy = ServerPolicy(idempotency=store)
        with (
            sync_server([policy.interceptor()]) as (address, attempts),
            grpc.insecure_channel(address) as channel,
        ):
            stub = echo_pb2_grpc.EchoStub(channel)
            first = stub.Unary(echo_pb2.EchoRequest(text="pay"), metadata=_key("k-1"))
            again = stub.Unary(echo_pb2.EchoRequest(text="pay"), metadata=_key("k-1"))
            assert again == first
            assert attempts.counts["pay"] == 1
            with pytest.raises(grpc.RpcError):
                stub.Unary(echo_pb2.EchoRequest(text="bad", fail="conflict"), metadata=_key("k-2"))
            with pytest.raises(grpc.RpcError):
                stub.Unary(echo_pb2.EchoRequest(text="bad", fail="conflict"), metadata=_key("k-2"))
            assert attempts.counts["bad"] == 2  # a failure is not remembered
        store.close()

    @pytest.mark.anyio
    async def test_aio_server_replays_and_refuses_concurrent_repeat(self) -> None:
        """A repeat gets the stored answer; a repeat of a running call gets ABORTED."""
        policy = ServerPolicy(idempotency=MemoryIdempotencyStore())
        async with (
            aio_server([policy.aio_interceptor()]) as (address, attempts),
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(channel)
            first = await stub.Unary(echo_pb2.EchoRequest(text="p"), metadata=_key("a-1"))
            assert await stub.Unary(echo_pb2.EchoRequest(text="p"), metadata=_key("a-1")) == first
            assert attempts.counts["p"] == 1
            codes: list[grpc.StatusCode] = []
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    request = echo_pb2.EchoRequest(text="slow", sleep=0.3)
                    try:
                        await stub.Unary(request, metadata=_key("a-2"))
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code())

                tg.start_soon(call)
                await anyio.sleep(0.1)
                tg.start_soon(call)
            assert sorted(codes, key=str) == sorted(
                [grpc.StatusCode.OK, grpc.StatusCode.ABORTED], key=str
            )
            sqlite = ServerPolicy(idempotency=SQLiteIdempotencyStore(":memory:"))
            async with (
                aio_server([sqlite.aio_interceptor()]) as (address2, attempts2),
                grpc.aio.insecure_channel(address2) as channel2,
            ):
                stub2: Any = echo_pb2_grpc.EchoStub(channel2)
                for _ in range(2):
                    with pytest.raises(grpc.aio.AioRpcError):
                        await stub2.Unary(
                            echo_pb2.EchoRequest(text="x", fail="config"), metadata=_key("z")
                        )
                    await stub2.Unary(echo_pb2.EchoRequest(text="y"), metadata=_key("y"))
                assert (attempts2.counts["x"], attempts2.counts["y"]) == (2, 1)


class TestKeyReusedForAnotherRequest:
    """A key already answered, sent again with a different request, is refused."""

    def test_sync_server_refuses_a_different_request(self) -> None:
        """Same key, other body: INVALID_ARGUMENT, not the other request's answer."""
        policy = ServerPolicy(idempotency=MemoryIdempotencyStore())
        with (
            sync_server([policy.interceptor()]) as (address, attempts),
            grpc.insecure_channel(address) as channel,
        ):
            stub = echo_pb2_grpc.EchoStub(channel)
            stub.Unary(echo_pb2.EchoRequest(text="pay 10"), metadata=_key("s-1"))
            with pytest.raises(grpc.RpcError) as info:
                stub.Unary(echo_pb2.EchoRequest(text="pay 99"), metadata=_key("s-1"))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert attempts.counts["pay 99"] == 0
            again = stub.Unary(echo_pb2.EchoRequest(text="pay 10"), metadata=_key("s-1"))
            assert (again.text, attempts.counts["pay 10"]) == ("pay 10", 1)

    @pytest.mark.anyio
    async def test_aio_server_refuses_a_different_request(self) -> None:
        """Same key, other body: INVALID_ARGUMENT, not the other request's answer."""
        policy = ServerPolicy(idempotency=MemoryIdempotencyStore())
        async with (
            aio_server([policy.aio_interceptor()]) as (address, attempts),
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(echo_pb2.EchoRequest(text="pay 10"), metadata=_key("a-9"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Unary(echo_pb2.EchoRequest(text="pay 99"), metadata=_key("a-9"))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert attempts.counts["pay 99"] == 0

    def test_unreadable_request_is_not_compared(self) -> None:
        """A request stream has no fingerprint: its key replays without a comparison."""
        from meshkit.grpc._server import Memo, fingerprint_of  # noqa: PLC0415 - private

        store = MemoryIdempotencyStore()
        assert fingerprint_of(iter([echo_pb2.EchoRequest()])) == bytes(32)
        assert fingerprint_of(b"x") != fingerprint_of(b"y")
        first = Memo(store=store, method="/a.B/C", key="k", fingerprint=fingerprint_of(b"x"))
        assert first.begin() is None
        first.complete(b"answer")
        unknown = Memo(store=store, method="/a.B/C", key="k")
        assert unknown.begin() == b"answer"
        with pytest.raises(ConfigurationError):
            Memo(store=store, method="/a.B/C", key="k", fingerprint=fingerprint_of(b"y")).begin()
