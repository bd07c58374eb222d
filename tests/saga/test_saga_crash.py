"""Crash fuzzing: sagas run in child processes SIGKILLed at seeded points, then recovered.

Each kill point is one forked child (see `saga_crash_worker.py`) that recovers what the
previous children left, starts new sagas, and kills itself at a seeded tick: before or after
a participant's effect, or an append. A last child recovers without dying. Then every saga
must be COMPLETED or COMPENSATED as its data dictates, no effect may have been applied twice,
and every effect of a compensated saga must be undone.

`MESHKIT_SAGA_KILLS` sets the kill points per backend (default 100: 200 per run in all), split
over `CHAINS` independent chains (fresh databases, their own seeds) so that each test stays
well inside the per-test timeout; set it to thousands for a long soak.
"""

# ruff: noqa: S608 - the SQL text is built from the test's own schema name

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
import pytest

from meshkit.eventsourcing import Event, EventStore, PostgresEventStore, SQLiteEventStore
from meshkit.saga import Saga, SagaOrchestrator, SagaState, Step, StepContext, StepKind

WORKER = Path(__file__).with_name("saga_crash_worker.py")
KILLS = int(os.environ.get("MESHKIT_SAGA_KILLS", "100"))
CHAINS = 4
PER_CHAIN = max(1, KILLS // CHAINS)
STEPS = ("create", "reserve", "hold", "pay", "confirm")


class Server:
    """The worker's fork server: one job line in, one exit status out."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: `close` can kill its children too
        )

    def send(self, job: dict[str, Any]) -> None:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(job) + "\n")
        stdin.flush()

    def receive(self) -> int:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        return int(stdout.readline())

    def run(self, job: dict[str, Any]) -> int:
        self.send(job)
        return self.receive()

    def close(self) -> None:
        """Let the server finish its job and exit; kill it and its child if they hang."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a hung child must not outlive the test
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _data(rng: random.Random) -> dict[str, Any]:
    fail = rng.choice([None, None, "hold", "reserve", "pay"])
    return {"fail": fail, "flaky": rng.choice([0, 0, 1, 2])}


def _expected(data: dict[str, Any]) -> SagaState:
    return SagaState.COMPLETED if data["fail"] is None else SagaState.COMPENSATED


async def _noop(data: Any, context: StepContext) -> None:
    """The checker never runs steps; it only reads the logs."""


CHECK_SAGA = Saga(
    name="order",
    steps=[
        Step(name="create", action=_noop, compensation=_noop),
        Step(name="reserve", action=_noop, compensation=_noop),
        Step(name="hold", action=_noop, compensation=_noop),
        Step(name="pay", action=_noop, kind=StepKind.PIVOT),
        Step(name="confirm", action=_noop, kind=StepKind.RETRIABLE),
    ],
)


async def _states(store: EventStore, ids: list[str]) -> dict[str, SagaState | None]:
    """Each saga's state as its log tells (None: never started)."""
    states: dict[str, SagaState | None] = {}
    async with SagaOrchestrator(store=store, sagas=[CHECK_SAGA], recover=False) as orch:
        for saga_id in ids:
            events: list[Event] = await store.read(f"saga-{saga_id}")
            states[saga_id] = orch._catalog.state_of(saga_id) if events else None
    return states


def _check(
    states: dict[str, SagaState | None],
    datas: dict[str, dict[str, Any]],
    effects: list[tuple[str, str]],
) -> None:
    """Every started saga ended as its data says; effects once; compensated ones undone."""
    counts = Counter(effects)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    for saga_id, state in states.items():
        applied = {
            k.split(":")[1]
            for k, kind in effects
            if kind == "apply" and k.startswith(f"{saga_id}:")
        }
        undone = {
            k.split(":")[1] for k, kind in effects if kind == "undo" and k.startswith(f"{saga_id}:")
        }
        if state is None:  # killed before its start was recorded
            assert applied == set(), saga_id
            continue
        assert state is _expected(datas[saga_id]), (saga_id, state, datas[saga_id])
        if state is SagaState.COMPLETED:
            assert applied == set(STEPS)
            assert undone == set()
        else:
            assert undone == applied, (saga_id, applied, undone)
            assert "pay" not in applied


def _chain(
    server: Server, base: dict[str, Any], seed: int, kills: int
) -> tuple[dict[str, dict[str, Any]], int]:
    """Run `kills` children killed at seeded points, then one that recovers everything."""
    rng = random.Random(seed)
    datas: dict[str, dict[str, Any]] = {}
    killed = 0
    for round_ in range(kills):
        new = [(f"s{round_}-{i}", _data(rng)) for i in range(rng.randint(1, 3))]
        datas.update(new)
        code = server.run({**base, "new": new, "kill_at": rng.randint(1, 60)})
        assert code in {0, -9}, code
        killed += code == -9
    assert server.run({**base, "new": [], "kill_at": None}) == 0
    return datas, killed


def _sqlite_effects(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT key, kind FROM effects"))


def _pg_effects(dsn: str, schema: str, table: str = "effects") -> list[Any]:
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(dsn) as conn:
        return list(conn.execute(f'SELECT * FROM "{schema}".{table}'))


def _setup(backend: str, ledger: str, schema: str) -> None:
    subprocess.run([sys.executable, str(WORKER), "setup", backend, ledger, schema], check=True)


class TestCrashFuzzing:
    @pytest.mark.parametrize("seed", range(CHAINS))
    def test_sqlite(self, tmp_path: Path, seed: int, record_property: Any) -> None:
        """SQLite: after SIGKILLs at seeded points and a recovery, every invariant holds."""
        store, ledger = tmp_path / "store.db", tmp_path / "ledger.db"
        _setup("sqlite", str(ledger), "")
        server = Server()
        try:
            base = {"backend": "sqlite", "store": str(store), "ledger": str(ledger), "schema": ""}
            datas, killed = _chain(server, base, seed=100 + seed, kills=PER_CHAIN)
        finally:
            server.close()
        record_property("kill_points", PER_CHAIN)
        record_property("killed", killed)
        record_property("sagas", len(datas))
        assert PER_CHAIN < 10 or killed > PER_CHAIN // 2  # most children died mid-flight

        async def states() -> dict[str, SagaState | None]:
            async with SQLiteEventStore(path=store) as events:
                return await _states(events, list(datas))

        _check(anyio.run(states), datas, _sqlite_effects(ledger))

    @pytest.mark.parametrize("seed", range(CHAINS))
    def test_postgres(
        self, postgres_dsn: str, pg_schema: str, seed: int, record_property: Any
    ) -> None:
        """PostgreSQL: after SIGKILLs at seeded points and a recovery, every invariant holds."""
        _setup("postgres", postgres_dsn, pg_schema)
        server = Server()
        try:
            base = {
                "backend": "postgres",
                "store": postgres_dsn,
                "ledger": postgres_dsn,
                "schema": pg_schema,
            }
            datas, killed = _chain(server, base, seed=200 + seed, kills=PER_CHAIN)
        finally:
            server.close()
        record_property("kill_points", PER_CHAIN)
        record_property("killed", killed)
        record_property("sagas", len(datas))
        assert PER_CHAIN < 10 or killed > PER_CHAIN // 2  # most children died mid-flight

        async def states() -> dict[str, SagaState | None]:
            async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as events:
                return await _states(events, list(datas))

        _check(
            anyio.run(states), datas, [tuple(r[:2]) for r in _pg_effects(postgres_dsn, pg_schema)]
        )


def _orphans(count: int) -> list[tuple[str, list[Event]]]:
    """Logs of sagas whose orchestrator died right after starting them."""
    logs = []
    for n in range(count):
        stream = f"saga-o{n}"
        logs.append(
            (
                stream,
                [
                    Event(
                        stream_id=stream,
                        version=1,
                        type="SagaStarted",
                        data={"saga": "order", "data": {"fail": None, "flaky": 0}},
                    ),
                    Event(stream_id=stream, version=2, type="StepStarted", data={"step": "create"}),
                ],
            )
        )
    return logs


def _two_recoverers(base: dict[str, Any]) -> None:
    """Two processes enter at once; each takes over sagas it saw standing still for 5 s.

    The lease must exceed the longest pause between a live driver's appends (on a loaded
    two-core machine, 1 s was not enough: the other process then took sagas over, which is
    safe, at least once, but is exactly what this test must not see).
    """
    servers = [Server(), Server()]
    try:
        for server in servers:
            server.send({**base, "new": [], "kill_at": None, "recover_after": 5.0})
        assert [server.receive() for server in servers] == [0, 0]
    finally:
        for server in servers:
            server.close()


def _check_single_driver(calls: list[tuple[str, str, int]], count: int) -> None:
    """Each saga was driven by one process, and each step called once."""
    drivers: dict[str, set[int]] = {}
    for key, _kind, pid in calls:
        drivers.setdefault(key.split(":")[0], set()).add(pid)
    assert len(drivers) == count
    assert all(len(pids) == 1 for pids in drivers.values()), drivers
    per_key = Counter(key for key, _, _ in calls)
    assert set(per_key.values()) == {1}


class TestTwoRecoverers:
    COUNT = 20

    def test_sqlite(self, tmp_path: Path) -> None:
        """Two processes recover one SQLite store at once: no saga is driven by both."""
        store, ledger = tmp_path / "store.db", tmp_path / "ledger.db"
        _setup("sqlite", str(ledger), "")

        async def prepare() -> None:
            async with SQLiteEventStore(path=store) as events:
                for stream, log in _orphans(self.COUNT):
                    await events.append(stream, log, 0)

        anyio.run(prepare)
        _two_recoverers(
            {"backend": "sqlite", "store": str(store), "ledger": str(ledger), "schema": ""}
        )
        with sqlite3.connect(ledger) as conn:
            calls = list(conn.execute("SELECT key, kind, pid FROM calls"))
        _check_single_driver(calls, self.COUNT)

    def test_postgres(self, postgres_dsn: str, pg_schema: str) -> None:
        """Two processes recover one PostgreSQL store at once: no saga is driven by both."""
        _setup("postgres", postgres_dsn, pg_schema)

        async def prepare() -> None:
            async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as events:
                for stream, log in _orphans(self.COUNT):
                    await events.append(stream, log, 0)

        anyio.run(prepare)
        _two_recoverers(
            {
                "backend": "postgres",
                "store": postgres_dsn,
                "ledger": postgres_dsn,
                "schema": pg_schema,
            }
        )
        calls = [tuple(r) for r in _pg_effects(postgres_dsn, pg_schema, "calls")]
        _check_single_driver(calls, self.COUNT)
