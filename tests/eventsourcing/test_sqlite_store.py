"""Tests for the SQLite event store: conformance, group commit, durability knobs, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from meshkit import (
    ConfigurationError,
    DuplicateEventIdError,
    EventDecodeError,
    EventStoreCorruptError,
    EventStoreUnavailableError,
    VersionConflictError,
)
from meshkit.eventsourcing import Event, EventStore, JSONSerializer, Snapshot, SQLiteEventStore
from meshkit.eventsourcing import _sqlite_sql as sql
from meshkit.eventsourcing._sql_common import encode_events
from meshkit.eventsourcing._sqlite_group import AppendRequest
from meshkit.testing import CheckpointStoreConformance, EventStoreConformance, FakeClock

pytestmark = pytest.mark.anyio


def _events(stream_id: str, first: int, count: int = 1) -> list[Event]:
    return [Event(stream_id=stream_id, version=v, type="T") for v in range(first, first + count)]


class TestSQLiteConformance(EventStoreConformance):
    @pytest.fixture(autouse=True)
    def _path(self, db: str) -> None:
        self.path = db

    async def make_store(self) -> SQLiteEventStore:
        return await SQLiteEventStore.open(self.path)

    async def corrupt_event(
        self, store: EventStore, stream_id: str, column: str, value: object
    ) -> bool:
        assert isinstance(store, SQLiteEventStore)
        async with store.transaction() as tx:
            statement = f"UPDATE meshkit_events SET {column} = ? WHERE stream_id = ?"  # noqa: S608
            await tx.execute(statement, (value, stream_id))
        return True


class TestSQLiteCheckpointConformance(CheckpointStoreConformance):
    @pytest.fixture(autouse=True)
    def _path(self, db: str) -> None:
        self.path = db

    async def make_checkpoints(self) -> SQLiteEventStore:
        return await SQLiteEventStore.open(self.path)


class TestConfiguration:
    def test_memory_database_is_refused(self) -> None:
        """A :memory: database cannot be durable, so it is refused."""
        with pytest.raises(ConfigurationError, match="path"):
            SQLiteEventStore(path=":memory:")

    @pytest.mark.parametrize("path", [5, None, "events\0.db", ""])
    def test_unusable_paths_name_the_field(self, path: object) -> None:
        """A path that is not a path, holds a NUL byte, or names a memory database is refused."""
        with pytest.raises(ConfigurationError) as info:
            SQLiteEventStore(path=path)  # type: ignore[arg-type]
        assert info.value.field == "path"

    async def test_bytes_path_is_decoded(self, tmp_path: Path) -> None:
        """A bytes path is accepted and stored as text."""
        async with SQLiteEventStore(path=bytes(tmp_path / "b.db")) as store:  # type: ignore[arg-type]
            assert store.path == str(tmp_path / "b.db")

    def test_bad_knobs_name_the_field(self, db: str) -> None:
        """Invalid knobs raise ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError, match="synchronous"):
            SQLiteEventStore(path=db, synchronous="OFF")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="poll_interval"):
            SQLiteEventStore(path=db, poll_interval=0)
        with pytest.raises(ConfigurationError, match="max_batch"):
            SQLiteEventStore(path=db, max_batch=0)

    async def test_pragmas_are_durable(self, db: str) -> None:
        """The database runs in WAL mode with synchronous=FULL by default."""
        async with SQLiteEventStore(path=db) as store:
            await store.append("s", _events("s", 1), 0)
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        async with SQLiteEventStore(path=db, synchronous="NORMAL") as store:
            assert await store.stream_version("s") == 1


class TestGroupCommit:
    async def test_concurrent_appends_share_commits(self, db: str) -> None:
        """Many concurrent appends all land, each stream gapless, positions unique."""
        async with SQLiteEventStore(path=db) as store:

            async def writer(n: int) -> None:
                for version in range(1, 6):
                    await store.append(f"s{n}", _events(f"s{n}", version), version - 1)

            async with anyio.create_task_group() as group:
                for n in range(12):
                    group.start_soon(writer, n)
            log = await store.read_all()
            assert len(log) == 60
            assert [e.position for e in log] == list(range(1, 61))
            for n in range(12):
                assert [e.version for e in await store.read(f"s{n}")] == [1, 2, 3, 4, 5]

    async def test_conflict_in_a_batch_fails_only_that_append(self, db: str) -> None:
        """Racing appends to one stream: one wins, the loser writes nothing, others land."""
        async with SQLiteEventStore(path=db) as store:
            outcomes: list[str] = []

            async def racer(n: int) -> None:
                try:
                    await store.append("shared", _events("shared", 1, 3), 0)
                    outcomes.append("ok")
                except VersionConflictError:
                    outcomes.append("conflict")
                await store.append(f"own{n}", _events(f"own{n}", 1, 2), 0)

            async with anyio.create_task_group() as group:
                for n in range(6):
                    group.start_soon(racer, n)
            assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]
            assert [e.version for e in await store.read("shared")] == [1, 2, 3]
            assert len(await store.read_all()) == 3 + 12

    async def test_idempotent_retry_in_a_batch(self, db: str) -> None:
        """Re-appending the same events is a no-op returning the version they reached."""
        async with SQLiteEventStore(path=db) as store:
            events = _events("s", 1, 2)
            results = []

            async def append() -> None:
                results.append(await store.append("s", events, 0))

            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(append)
            assert results == [2, 2, 2]
            assert len(await store.read_all()) == 2

    async def test_event_id_stored_elsewhere_is_a_duplicate(self, db: str) -> None:
        """An event id already stored in another stream is named with its stream; no write."""
        async with SQLiteEventStore(path=db) as store:
            first = _events("a", 1)
            await store.append("a", first, 0)
            clash = [
                *_events("b", 1),
                Event(stream_id="b", version=2, type="T", event_id=first[0].event_id),
            ]
            with pytest.raises(DuplicateEventIdError) as info:
                await store.append("b", clash, 0)
            assert (info.value.event_id, info.value.stream_id) == (first[0].event_id, "a")
            assert await store.read("b") == []

    async def test_one_bad_append_does_not_poison_its_group_commit(self, db: str) -> None:
        """Of 20 concurrent appends, one with a lone surrogate fails alone; 19 commit."""
        async with SQLiteEventStore(path=db) as store:
            outcomes: dict[str, object] = {}

            async def append(stream: str) -> None:
                try:
                    outcomes[stream] = await store.append(stream, _events(stream, 1), 0)
                except ConfigurationError as exc:
                    outcomes[stream] = exc.field

            streams = [f"s{n}" for n in range(19)]
            async with anyio.create_task_group() as group:
                for stream in [*streams[:7], "bad-\ud800", *streams[7:]]:
                    group.start_soon(append, stream)
            assert outcomes == {**dict.fromkeys(streams, 1), "bad-\ud800": "stream_id"}
            assert len(await store.read_all()) == 19

    async def test_unserializable_payload_is_bad_input(self, db: str) -> None:
        """A payload the serializer rejects is a ConfigurationError before anything is queued."""
        async with SQLiteEventStore(path=db) as store:
            bad = [Event(stream_id="s", version=1, type="T", data={"x": object()})]
            with pytest.raises(ConfigurationError, match=r"event\.data"):
                await store.append("s", bad, 0)


class TestErrors:
    async def test_unopenable_path_is_translated(self, tmp_path: Path) -> None:
        """A database that cannot be opened raises EventStoreUnavailableError from sqlite3."""
        store = SQLiteEventStore(path=tmp_path / "missing" / "dir" / "x.db")
        with pytest.raises(EventStoreUnavailableError) as info:
            await store.append("s", _events("s", 1), 0)
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert info.value.backend == "sqlite"

    async def test_locked_database_fails_whole_batch(self, db: str) -> None:
        """When another process holds the write lock too long, the append fails, unwritten."""
        async with SQLiteEventStore(path=db, busy_timeout=0.05) as store:
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(EventStoreUnavailableError, match="append"):
                    await store.append("s", _events("s", 1), 0)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert await store.read_all() == []
            assert await store.append("s", _events("s", 1), 0) == 1

    async def test_failing_statement_in_batch_is_isolated(self, db: str) -> None:
        """A driver error inside one append of a batch fails it alone (its savepoint)."""
        async with SQLiteEventStore(path=db) as store:
            await store.append("s", _events("s", 1), 0)
            raw = sqlite3.connect(db, isolation_level=None)
            raw.execute(
                "CREATE TRIGGER no_bad BEFORE INSERT ON meshkit_events "
                "WHEN NEW.stream_id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
            raw.close()
            outcomes: dict[str, object] = {}

            async def append(stream: str) -> None:
                try:
                    outcomes[stream] = await store.append(stream, _events(stream, 1, 2), 0)
                except EventStoreUnavailableError as exc:
                    outcomes[stream] = exc

            async def append_one(stream: str) -> None:
                try:
                    outcomes[stream] = await store.append(stream, _events(stream, 1), 0)
                except EventStoreUnavailableError as exc:
                    outcomes[stream] = exc

            async with anyio.create_task_group() as group:
                for stream in ["good1", "bad", "good2"]:
                    group.start_soon(append, stream)
                group.start_soon(append_one, "bad")
                group.start_soon(append_one, "good3")
            assert outcomes["good1"] == outcomes["good2"] == 2
            assert outcomes["good3"] == 1
            assert isinstance(outcomes["bad"], EventStoreUnavailableError)
            assert await store.read("bad") == []

    async def test_corrupt_row_names_stream_version_and_type(self, db: str) -> None:
        """A row whose payload cannot be decoded raises EventDecodeError with its coordinates."""
        async with SQLiteEventStore(path=db) as store:
            await store.append("s", _events("s", 1), 0)
            raw = sqlite3.connect(db, isolation_level=None)
            raw.execute("UPDATE meshkit_events SET data = x'ff00'")
            raw.close()
            with pytest.raises(EventDecodeError) as info:
                await store.read("s")
            assert (info.value.stream_id, info.value.version, info.value.event_type) == (
                "s",
                1,
                "T",
            )

    async def test_corrupt_snapshot_is_a_decode_error(self, db: str) -> None:
        """A corrupt snapshot row raises EventDecodeError."""
        async with SQLiteEventStore(path=db) as store:
            await store.save_snapshot(Snapshot(stream_id="s", version=1, type="A", state={}))
            raw = sqlite3.connect(db, isolation_level=None)
            raw.execute("UPDATE meshkit_snapshots SET state = x'00'")
            raw.close()
            with pytest.raises(EventDecodeError, match="'A'"):
                await store.load_snapshot("s")

    @pytest.mark.parametrize("stored", ["'x'", "-5", "1.5"])
    async def test_corrupt_checkpoint_is_corrupt_not_a_raw_error(
        self, db: str, stored: str
    ) -> None:
        """A checkpoint stored as text, negative or a float raises EventStoreCorruptError."""
        async with SQLiteEventStore(path=db) as store:
            await store.save_checkpoint("c", 1)
            raw = sqlite3.connect(db, isolation_level=None)
            raw.execute(f"UPDATE meshkit_checkpoints SET position = {stored}")  # noqa: S608
            raw.close()
            with pytest.raises(EventStoreCorruptError, match="'c'"):
                await store.load_checkpoint("c")
            with pytest.raises(EventStoreCorruptError, match="'c'"):
                async with store.transaction() as tx:
                    await tx.load_checkpoint("c")

    @pytest.mark.parametrize("column", ["type", "timestamp"])
    async def test_text_that_is_not_utf8_is_corrupt(self, db: str, column: str) -> None:
        """Stored text that is not UTF-8 is damage no retry mends: EventStoreCorruptError."""
        async with SQLiteEventStore(path=db) as store:
            await store.append("s", _events("s", 1), 0)
            raw = sqlite3.connect(db, isolation_level=None)
            raw.execute(f"UPDATE meshkit_events SET {column} = CAST(x'ff' AS TEXT)")  # noqa: S608
            raw.close()
            with pytest.raises(EventStoreCorruptError, match="UTF-8"):
                await store.read("s")

    async def test_file_that_is_not_a_database_is_corrupt(self, tmp_path: Path) -> None:
        """A file that is not a database raises EventStoreCorruptError, not a retryable one."""
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a database, just text" * 200)
        with pytest.raises(EventStoreCorruptError) as info:
            await SQLiteEventStore.open(path)
        assert not isinstance(info.value, EventStoreUnavailableError)
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)

    async def test_malformed_database_is_corrupt(self, db: str) -> None:
        """A database whose pages are damaged raises EventStoreCorruptError on read."""
        async with SQLiteEventStore(path=db) as store:
            big = {"pad": "x" * 3000}
            for n in range(40):
                await store.append(
                    f"s{n}", [Event(stream_id=f"s{n}", version=1, type="T", data=big)], 0
                )
        _damage_pages(db)
        async with SQLiteEventStore(path=db) as store:
            with pytest.raises(EventStoreCorruptError, match="malformed"):
                await store.read_all()

    async def test_closed_store_refuses_work(self, db: str) -> None:
        """After aclose() every call raises EventStoreUnavailableError."""
        store = await SQLiteEventStore.open(db)
        await store.read_all()
        await store.aclose()
        with pytest.raises(EventStoreUnavailableError, match="closed"):
            await store.read_all()


class TestWriteBatch:
    """The batch writer, driven directly on a connection."""

    @pytest.fixture
    def conn(self, db: str) -> sqlite3.Connection:
        conn = sql.connect(db, 1.0, "FULL")
        sql.init_schema(conn)
        conn.execute(
            "CREATE TRIGGER no_bad BEFORE INSERT ON meshkit_events "
            "WHEN NEW.stream_id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        return conn

    async def test_single_row_failure_is_isolated(self, conn: sqlite3.Connection) -> None:
        """A failing single-row append in a batch fails alone, without a savepoint."""
        batch = [_request_for(stream) for stream in ("good1", "bad", "good2", "good1")]
        sql.write_batch(conn, batch)
        assert [r.result for r in batch] == [1, None, 1, None]
        assert isinstance(batch[1].error, EventStoreUnavailableError)
        assert isinstance(batch[3].error, VersionConflictError)

    @pytest.mark.parametrize("bad", ["bad-\ud800", 2**64])
    async def test_any_error_of_one_append_is_its_own(
        self, conn: sqlite3.Connection, bad: object
    ) -> None:
        """Whatever one request raises in the writer (here, input that skipped the checks:
        a lone surrogate, an int beyond 64 bits) fails it alone; the other 19 commit."""
        batch = [_request_for(f"s{n}") for n in range(20)]
        row = batch[5].rows[0]
        batch[5].rows[0] = (row[0], row[1], row[2], bad, *row[4:])  # type: ignore[assignment]
        sql.write_batch(conn, batch)
        assert [r.result for r in batch] == [*[1] * 5, None, *[1] * 14]
        assert isinstance(batch[5].error, ConfigurationError | UnicodeEncodeError)
        assert conn.execute("SELECT count(*) FROM meshkit_events").fetchone() == (19,)

    async def test_lone_append_failure_rolls_back(self, conn: sqlite3.Connection) -> None:
        """A driver error in a batch of one rolls its transaction back and is translated."""
        batch = [_request_for("bad")]
        sql.write_batch(conn, batch)
        assert isinstance(batch[0].error, EventStoreUnavailableError)
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM meshkit_events").fetchone() == (0,)

    async def test_failure_that_ends_the_transaction_fails_all(
        self, conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An error after which SQLite has rolled the transaction back fails the whole batch."""

        def lost_transaction(conn: sqlite3.Connection, request: AppendRequest) -> int:
            conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(sql, "_append_one", lost_transaction)
        batch = [_request_for("a"), _request_for("b")]
        sql.write_batch(conn, batch)
        assert all(isinstance(r.error, EventStoreUnavailableError) for r in batch)
        assert conn.execute("SELECT count(*) FROM meshkit_events").fetchone() == (0,)

    async def test_schema_clash_is_translated(self, tmp_path: Path) -> None:
        """A database whose names clash with the store's tables cannot be opened."""
        path = tmp_path / "clash.db"
        raw = sqlite3.connect(path)
        raw.execute("CREATE TABLE t (x)")
        raw.execute("CREATE INDEX meshkit_snapshots ON t (x)")
        raw.close()
        with pytest.raises(EventStoreUnavailableError, match="open"):
            await SQLiteEventStore.open(path)

    async def test_unserializable_snapshot_is_bad_input(self, db: str) -> None:
        """A snapshot state the serializer rejects raises ConfigurationError."""
        async with SQLiteEventStore(path=db) as store:
            bad = Snapshot(stream_id="s", version=1, type="A", state={"x": object()})
            with pytest.raises(ConfigurationError, match="snapshot"):
                await store.save_snapshot(bad)


def _damage_pages(db: str) -> None:
    """Overwrite pages 2 to 9 of the database file with garbage (after a WAL checkpoint)."""
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    with Path(db).open("r+b") as file:
        file.seek(page_size)
        file.write(b"\xff" * page_size * 8)


def _request_for(stream_id: str) -> AppendRequest:
    events = _events(stream_id, 1)
    rows = encode_events(events, JSONSerializer())
    return AppendRequest(stream_id=stream_id, events=events, expected_version=0, rows=rows)


class TestWaitForNew:
    async def test_wakes_on_own_append_at_once(self, db: str, clock: FakeClock) -> None:
        """An append of the same store wakes waiters without the clock moving."""
        async with SQLiteEventStore(path=db, clock=clock) as store:
            async with anyio.create_task_group() as group:
                group.start_soon(store.wait_for_new, 0)
                await clock.wait_sleepers(1)
                await store.append("s", _events("s", 1), 0)
            assert clock.now() == 0

    async def test_polls_for_other_writers(self, db: str, clock: FakeClock) -> None:
        """Appends of another store (process) on the file are seen at the next poll."""
        async with (
            SQLiteEventStore(path=db, clock=clock, poll_interval=1.0) as store,
            SQLiteEventStore(path=db) as other,
        ):
            done = anyio.Event()

            async def waiter() -> None:
                await store.wait_for_new(0)
                done.set()

            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                await clock.wait_sleepers(1)
                await other.append("s", _events("s", 1), 0)
                await clock.wait_sleepers(1)
                assert not done.is_set()
                clock.advance(1.0)
            assert done.is_set()

    @pytest.mark.parametrize(("first", "second"), [("asyncio", "asyncio"), ("trio", "asyncio")])
    def test_store_outlives_an_event_loop(self, db: str, first: str, second: str) -> None:
        """A waiter in a later event loop does not trip over an event armed in an earlier one."""
        store = SQLiteEventStore(path=db, clock=FakeClock())

        async def wait_then_give_up() -> None:
            assert isinstance(store.clock, FakeClock)
            async with anyio.create_task_group() as group:
                group.start_soon(store.wait_for_new, 0)
                await store.clock.wait_sleepers(1)
                group.cancel_scope.cancel()

        async def wait_then_append() -> None:
            assert isinstance(store.clock, FakeClock)
            async with anyio.create_task_group() as group:
                group.start_soon(store.wait_for_new, 0)
                await store.clock.wait_sleepers(1)
                await store.append("s", _events("s", 1), 0)
            await store.aclose()

        anyio.run(wait_then_give_up, backend=first)
        anyio.run(wait_then_append, backend=second)
        assert store._closed


class TestTransactions:
    async def test_projection_and_checkpoint_commit_together(self, db: str) -> None:
        """Writes and the checkpoint of one transaction commit together."""
        async with SQLiteEventStore(path=db) as store:
            async with store.transaction() as tx:
                await tx.execute("CREATE TABLE totals (name TEXT PRIMARY KEY, n INTEGER)")
                await tx.execute("INSERT INTO totals VALUES (?, ?)", ("a", 1))
                await tx.save_checkpoint("proj", 7)
                assert await tx.load_checkpoint("proj") == 7
            assert await store.load_checkpoint("proj") == 7

    async def test_failure_rolls_back_both(self, db: str) -> None:
        """An exception in the block rolls back the writes and the checkpoint."""
        async with SQLiteEventStore(path=db) as store:
            async with store.transaction() as tx:
                await tx.execute("CREATE TABLE totals (n INTEGER)")
            with pytest.raises(RuntimeError):  # noqa: PT012 - the block is the subject
                async with store.transaction() as tx:
                    await tx.execute("INSERT INTO totals VALUES (1)")
                    await tx.save_checkpoint("proj", 3)
                    raise RuntimeError
            assert await store.load_checkpoint("proj") == 0
            async with store.transaction() as tx:
                assert await tx.execute("SELECT count(*) FROM totals") == [(0,)]

    async def test_sql_errors_are_translated(self, db: str) -> None:
        """A bad statement inside a transaction raises EventStoreUnavailableError."""
        async with SQLiteEventStore(path=db) as store:
            with pytest.raises(EventStoreUnavailableError):
                async with store.transaction() as tx:
                    await tx.execute("SELECT * FROM no_such_table")

    async def test_idle_connections_are_capped(self, db: str) -> None:
        """With no idle connections allowed, each call opens and closes its own."""
        async with SQLiteEventStore(path=db, max_idle_connections=0) as store:
            await store.save_checkpoint("p", 1)
            assert await store.load_checkpoint("p") == 1
            assert store._idle == []


class TestReadArguments:
    async def test_bad_read_arguments_are_configuration_errors(self, db: str) -> None:
        """Bad stream ids and versions on the read paths name the field, like the memory store."""
        async with SQLiteEventStore(path=db) as store:
            with pytest.raises(ConfigurationError, match="stream_id"):
                await store.read(object())  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="from_version"):
                await store.read("s", "1")  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="stream_id"):
                await store.stream_version(7)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="stream_id"):
                await store.load_snapshot(None)  # type: ignore[arg-type]


class _FailingCommit(sqlite3.Connection):
    """A connection whose COMMIT fails while `fail` is set (a disk error, injected)."""

    fail = False

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if sql == "COMMIT" and _FailingCommit.fail:
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, parameters)


class TestTransactionMisuse:
    async def test_transaction_is_unusable_after_its_block(self, db: str) -> None:
        """A transaction kept past its block refuses work (its connection is back in the pool)."""
        async with SQLiteEventStore(path=db) as store:
            async with store.transaction() as tx:
                await tx.execute("CREATE TABLE t (x INTEGER)")
            with pytest.raises(EventStoreUnavailableError, match="ended"):
                await tx.execute("INSERT INTO t VALUES (1)")
            async with store.transaction() as other:
                assert await other.execute("SELECT count(*) FROM t") == [(0,)]

    async def test_failed_commit_does_not_leak_an_open_transaction(
        self, db: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A COMMIT that fails rolls back, so no pooled connection keeps the write lock."""

        def connect(path: str, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                factory=_FailingCommit,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            return conn

        monkeypatch.setattr(sql, "connect", connect)
        monkeypatch.setattr(_FailingCommit, "fail", False)
        async with SQLiteEventStore(path=db, busy_timeout=0.05) as store:
            async with store.transaction() as tx:
                await tx.execute("CREATE TABLE t (x INTEGER)")
            _FailingCommit.fail = True
            with pytest.raises(EventStoreUnavailableError, match="commit"):
                async with store.transaction() as tx:
                    await tx.execute("INSERT INTO t VALUES (1)")
            _FailingCommit.fail = False
            assert await store.append("s", _events("s", 1), 0) == 1
            async with store.transaction() as tx:
                assert await tx.execute("SELECT count(*) FROM t") == [(0,)]


class TestSixtyFourBits:
    async def test_numbers_beyond_64_bits_are_configuration_errors(self, db: str) -> None:
        """Versions, positions and limits that SQLite cannot store name their field."""
        big = 2**63
        async with SQLiteEventStore(path=db) as store:
            with pytest.raises(ConfigurationError, match="from_version"):
                await store.read("s", big)
            with pytest.raises(ConfigurationError, match="from_version"):
                await store.read("s", -big - 1)
            with pytest.raises(ConfigurationError, match="limit"):
                await store.read("s", limit=big)
            with pytest.raises(ConfigurationError, match="after_position"):
                await store.read_all(big)
            with pytest.raises(ConfigurationError, match="position"):
                await store.save_checkpoint("n", big)
            with pytest.raises(ConfigurationError, match="expected_version"):
                await store.append("s", _events("s", big), big - 1)

    async def test_oversized_snapshot_version_is_a_configuration_error(self, db: str) -> None:
        """A snapshot whose version SQLite cannot store names the field, not OverflowError."""
        async with SQLiteEventStore(path=db) as store:
            with pytest.raises(ConfigurationError, match=r"snapshot\.version"):
                await store.save_snapshot(
                    Snapshot(stream_id="s", version=2**63, type="A", state={})
                )
            assert await store.load_snapshot("s") is None

    async def test_oversized_append_does_not_fail_its_batch_mates(self, db: str) -> None:
        """An append with an out-of-range version is refused alone; the others commit."""
        async with SQLiteEventStore(path=db) as store:
            outcomes: dict[str, object] = {}

            async def append(stream: str, expected: int) -> None:
                try:
                    outcomes[stream] = await store.append(
                        stream, _events(stream, expected + 1), expected
                    )
                except Exception as exc:
                    outcomes[stream] = type(exc)

            async with anyio.create_task_group() as group:
                group.start_soon(append, "a", 0)
                group.start_soon(append, "big", 2**63)
                group.start_soon(append, "b", 0)
            assert outcomes == {"a": 1, "big": ConfigurationError, "b": 1}

    @pytest.mark.parametrize("count", [1, 2])
    async def test_oversized_schema_version_fails_alone(self, db: str, count: int) -> None:
        """An event whose schema_version SQLite cannot store is refused alone, in its batch."""
        async with SQLiteEventStore(path=db) as store:
            outcomes: dict[str, object] = {}
            big = [
                Event(stream_id="big", version=v, type="T", schema_version=2**63)
                for v in range(1, count + 1)
            ]

            async def append(stream: str, events: list[Event]) -> None:
                try:
                    outcomes[stream] = await store.append(stream, events, 0)
                except ConfigurationError as exc:
                    outcomes[stream] = exc.field

            async with anyio.create_task_group() as group:
                group.start_soon(append, "a", _events("a", 1))
                group.start_soon(append, "big", big)
                group.start_soon(append, "b", _events("b", 1))
            assert outcomes == {"a": 1, "big": "event.schema_version", "b": 1}
            await append("big", big)
            assert outcomes["big"] == "event.schema_version"
            assert await store.read("big") == []
