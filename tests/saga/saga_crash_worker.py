"""A worker for the saga crash tests: runs order sagas against ledger-keeping participants.

`python saga_crash_worker.py serve` imports everything once, then reads one JSON job per
line on stdin, forks a child per job (the server itself never opens a store nor starts a
thread, so forking is safe), and prints the child's exit status: 0 when the job finished,
-9 when the child SIGKILLed itself at its seeded kill point. Forking from a warm server makes
a kill point cost a few milliseconds instead of an interpreter start.

A job: {"backend": "sqlite"|"postgres", "store": path-or-dsn, "ledger": path-or-dsn,
"schema": str, "new": [[saga_id, data], ...], "kill_at": int|null}. The child enters an
orchestrator (which recovers what earlier children left), starts the new sagas, waits for all
of them, and exits. Every "tick" (before and after each participant effect, and each append)
counts down to `kill_at`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from meshkit import SagaOwnershipLostError
from meshkit.eventsourcing import (
    Event,
    EventStore,
    PostgresEventStore,
    Snapshot,
    SQLiteEventStore,
)
from meshkit.saga import Parallel, Saga, SagaOrchestrator, Step, StepContext, StepKind

if TYPE_CHECKING:
    from collections.abc import Sequence

LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {s}ledger (key TEXT PRIMARY KEY, state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}effects (key TEXT NOT NULL, kind TEXT NOT NULL, pid INT)",
    "CREATE TABLE IF NOT EXISTS {s}calls (key TEXT NOT NULL, kind TEXT NOT NULL, pid INT)",
)


class Killer:
    """Counts ticks; SIGKILLs this process at the `kill_at`-th."""

    def __init__(self, kill_at: int | None) -> None:
        self.left = kill_at

    def tick(self) -> None:
        if self.left is None:
            return
        self.left -= 1
        if self.left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


class Ledger:
    """A participant's own table: one row per idempotency key, and an effect log."""

    def __init__(self, backend: str, target: str, schema: str) -> None:
        self.pid = os.getpid()
        self.prefix = "" if backend == "sqlite" else f'"{schema}".'
        self.mark = "?" if backend == "sqlite" else "%s"
        if backend == "sqlite":
            self.conn: Any = sqlite3.connect(target, timeout=60, isolation_level=None)
        else:
            import psycopg  # noqa: PLC0415 - only the postgres jobs need it

            self.conn = psycopg.connect(target, autocommit=True)

    def create(self) -> None:
        for statement in LEDGER_SCHEMA:
            self.conn.execute(statement.format(s=self.prefix))

    def _sql(self, text: str) -> str:
        return text.format(s=self.prefix).replace("%s", self.mark)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if self.mark == "?" else "BEGIN")

    def call(self, key: str, kind: str) -> None:
        self.conn.execute(
            self._sql("INSERT INTO {s}calls VALUES (%s, %s, %s)"), (key, kind, self.pid)
        )

    def apply(self, key: str) -> None:
        """Apply the effect of `key` once; a tombstone (undone first) refuses it."""
        self._begin()
        try:
            select = "SELECT state FROM {s}ledger WHERE key = %s"
            row = self.conn.execute(self._sql(select), (key,)).fetchone()
            if row is None:
                self.conn.execute(self._sql("INSERT INTO {s}ledger VALUES (%s, 'applied')"), (key,))
                self._effect(key, "apply")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def undo(self, key: str) -> None:
        """Undo the effect of `key` if applied; leave a tombstone if it never was."""
        self._begin()
        try:
            row = self.conn.execute(
                self._sql("SELECT state FROM {s}ledger WHERE key = %s"), (key,)
            ).fetchone()
            if row is None:
                self.conn.execute(self._sql("INSERT INTO {s}ledger VALUES (%s, 'undone')"), (key,))
            elif row[0] == "applied":
                self.conn.execute(
                    self._sql("UPDATE {s}ledger SET state = 'undone' WHERE key = %s"), (key,)
                )
                self._effect(key, "undo")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _effect(self, key: str, kind: str) -> None:
        self.conn.execute(
            self._sql("INSERT INTO {s}effects VALUES (%s, %s, %s)"), (key, kind, self.pid)
        )


@attrs.define
class Participants:
    """Inventory, credit and payment services of the order saga, on one ledger."""

    ledger: Ledger
    killer: Killer

    async def act(self, data: Any, context: StepContext) -> dict[str, Any]:
        self.ledger.call(context.idempotency_key, "do")
        if data.get("fail") == context.step:
            msg = f"{context.step} declined"
            raise RuntimeError(msg)  # a business refusal: no effect
        if context.step == "confirm" and context.attempt <= data.get("flaky", 0):
            msg = "confirm unavailable"
            raise RuntimeError(msg)
        self.killer.tick()
        self.ledger.apply(context.idempotency_key)
        self.killer.tick()
        return {context.step: "ok"}

    async def undo(self, data: Any, context: StepContext) -> None:
        self.ledger.call(context.idempotency_key, "undo")
        if context.attempt <= data.get("flaky", 0):
            msg = f"undo {context.step} unavailable"
            raise RuntimeError(msg)
        self.killer.tick()
        self.ledger.undo(context.idempotency_key)
        self.killer.tick()


@attrs.frozen
class Quick:
    """A short fixed backoff (real time: the child runs on the system clock)."""

    def delay(self, retry: int) -> float:
        return 0.001


def order_saga(p: Participants) -> Saga:
    """create -> (reserve | hold) -> pay (pivot) -> confirm (retriable)."""
    return Saga(
        name="order",
        steps=[
            Step(name="create", action=p.act, compensation=p.undo, backoff=Quick()),
            Parallel(
                (
                    Step(name="reserve", action=p.act, compensation=p.undo, backoff=Quick()),
                    Step(name="hold", action=p.act, compensation=p.undo, backoff=Quick()),
                )
            ),
            Step(name="pay", action=p.act, kind=StepKind.PIVOT),
            Step(name="confirm", action=p.act, kind=StepKind.RETRIABLE, backoff=Quick()),
        ],
    )


@attrs.define
class TickingStore:
    """Delegates to a real store; ticks before and after each append."""

    inner: EventStore
    killer: Killer

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        self.killer.tick()
        version = await self.inner.append(stream_id, events, expected_version)
        self.killer.tick()
        return version

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        return await self.inner.read(stream_id, from_version, limit=limit)

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        return await self.inner.read_all(after_position, limit=limit)

    async def stream_version(self, stream_id: str) -> int:
        return await self.inner.stream_version(stream_id)

    async def wait_for_new(self, after_position: int) -> None:
        await self.inner.wait_for_new(after_position)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self.inner.load_snapshot(stream_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def open_store(job: dict[str, Any]) -> EventStore:
    if job["backend"] == "sqlite":
        return await SQLiteEventStore.open(job["store"])
    return await PostgresEventStore.open(job["store"], schema=job["schema"], max_connections=4)


async def run_job(job: dict[str, Any]) -> None:
    """Recover, start the job's new sagas, and wait for every saga this child drives."""
    killer = Killer(job.get("kill_at"))
    ledger = Ledger(job["backend"], job["ledger"], job["schema"])
    participants = Participants(ledger, killer)
    saga = order_saga(participants)
    inner = await open_store(job)
    store = TickingStore(inner, killer)
    try:
        recover_after = job.get("recover_after", 0.0)
        async with SagaOrchestrator(store=store, sagas=[saga], recover_after=recover_after) as orch:
            ids = list(orch._drives)
            for saga_id, data in job.get("new", []):
                ids.append(await orch.start(saga, data, saga_id=saga_id))
            for saga_id in ids:
                with contextlib.suppress(SagaOwnershipLostError):  # another process has it
                    await orch.wait(saga_id)
            while recover_after:  # sharing the store: wait until every saga has ended
                await orch.refresh()
                stats = orch.statistics()
                if stats.running + stats.compensating == 0:
                    break
                await anyio.sleep(0.1)
    finally:
        await inner.aclose()


def serve() -> None:
    """Fork one child per job line; print its exit status."""
    try:  # imported once here, so that children do not pay for it
        import psycopg  # noqa: F401, PLC0415
        import psycopg_pool  # noqa: F401, PLC0415
    except ImportError:  # pragma: no cover - the dev extra installs them
        pass
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                anyio.run(run_job, job)
            except BaseException:
                import traceback  # noqa: PLC0415

                traceback.print_exc()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(code, flush=True)  # noqa: T201 - the protocol with the test


def setup(backend: str, ledger: str, schema: str) -> None:
    """Create the ledger tables."""
    Ledger(backend, ledger, schema).create()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        setup(*sys.argv[2:5])
