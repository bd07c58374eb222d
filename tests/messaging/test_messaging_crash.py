"""Crash tests: a consumer process SIGKILLed at random points while handling, on real buses.

Each round publishes a few more events, forks a consumer (`messaging_crash_worker`), waits
until it is handling, and SIGKILLs it a random moment later; a last consumer then finishes.
Afterwards every event has exactly one effect row (none lost, none doubled) and each key's
rows are in version order. `MESHKIT_CRASH_KILLS` sets the kill points per run across NATS
and Redis (default 100: 40 on NATS, whose restarts wait `ack_wait`, and 60 on Redis);
`MESHKIT_CRASH_SEED` replays a run.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import signal
import sqlite3
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import nats
import pytest

import messaging_crash_worker as worker
from meshkit.eventsourcing import Event, RedisStreamPublisher
from meshkit.messaging import JetStreamPublisher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

TOTAL_KILLS = int(os.environ.get("MESHKIT_CRASH_KILLS", "100"))
SEED = int(os.environ.get("MESHKIT_CRASH_SEED", str(time.time_ns() % 2**32)))
KEYS = 6
PER_ROUND = 12


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.ForkServerContext:
    """A forkserver with meshkit and the drivers imported, so each child starts at once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["meshkit.messaging", "nats.js", "redis", "messaging_crash_worker"]
    )
    return context


class Crasher:
    """Runs the kill rounds of one bus and checks the handler's database afterwards."""

    def __init__(
        self,
        context: multiprocessing.context.ForkServerContext,
        config: dict[str, Any],
        publish: Callable[[list[Event]], None],
        db: Path,
    ) -> None:
        self.context, self.config, self.publish, self.db = context, config, publish, db
        self.random = random.Random(SEED)
        self.versions: collections.Counter[str] = collections.Counter()
        self.published: list[Event] = []
        run = uuid.uuid4().hex[:6]
        self.keys = [f"order-{run}-{n}" for n in range(KEYS)]
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE effects (key TEXT, version INTEGER, event_id TEXT)")

    def publish_round(self) -> None:
        batch = []
        for _ in range(PER_ROUND):
            key = self.random.choice(self.keys)
            self.versions[key] += 1
            batch.append(Event(stream_id=key, version=self.versions[key], type="OrderPlaced"))
        self.publish(batch)
        self.published.extend(batch)

    def start(self) -> tuple[multiprocessing.process.BaseProcess, Any]:
        handling = self.context.Event()
        config = self.config | {"db": str(self.db), "expected": len(self.published)}
        process = self.context.Process(target=worker.main, args=(config, handling))
        process.start()
        return process, handling

    def kill_rounds(self, kills: int) -> int:
        killed = 0
        for _ in range(kills):
            self.publish_round()
            process, handling = self.start()
            try:
                assert handling.wait(60), f"the consumer never handled anything (seed {SEED})"
                time.sleep(self.random.uniform(0, 0.03))
            finally:  # a failed round must not leave a consumer running on
                process.kill()
                process.join(30)
            killed += process.exitcode == -signal.SIGKILL
        return killed

    def finish(self) -> None:
        process, _ = self.start()
        process.join(90)
        if process.exitcode is None:  # pragma: no cover - only when the test fails
            process.kill()
            process.join(30)
        assert process.exitcode == 0, f"the last consumer did not finish (seed {SEED})"

    def check(self) -> None:
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT key, version, event_id FROM effects ORDER BY rowid")
            effects = list(rows)
        ids = collections.Counter(event_id for _, _, event_id in effects)
        expected = {str(event.event_id) for event in self.published}
        assert set(ids) == expected, f"lost or foreign effects (seed {SEED})"
        assert max(ids.values()) == 1, f"effects applied twice (seed {SEED})"
        for key in self.keys:
            versions = [version for k, version, _ in effects if k == key]
            assert versions == list(range(1, self.versions[key] + 1)), f"{key} order (seed {SEED})"


def run_crash_test(crasher: Crasher, kills: int) -> None:
    killed = crasher.kill_rounds(kills)
    crasher.finish()
    crasher.check()
    assert killed == kills, f"only {killed} of {kills} consumers died by SIGKILL"


@pytest.fixture
def nats_stream(nats_url: str, unique: str) -> Iterator[dict[str, Any]]:
    """A unique JetStream stream for one crash test, deleted afterwards."""
    config: dict[str, Any] = {
        "bus": "nats",
        "url": nats_url,
        "stream": f"MKCRASH_{unique}",
        "subject": f"mkcrash.{unique}.events",
        "dead": f"mkcrash.{unique}.dead",
        "name": "crash",
        "ack_wait": 0.3,
    }

    async def stream(create: bool) -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        if create:
            subjects = [config["subject"], config["dead"]]
            await js.add_stream(name=config["stream"], subjects=subjects)
        else:
            await js.delete_stream(config["stream"])
        await nc.close()

    anyio.run(stream, True)
    yield config
    anyio.run(stream, False)


@pytest.mark.nats
@pytest.mark.redis
class TestCrashes:
    def test_nats_consumer_killed_at_random_points(
        self, forkserver: Any, nats_stream: dict[str, Any], tmp_path: Path
    ) -> None:
        """SIGKILLed NATS consumers: every effect exactly once, per-key order kept."""

        def publish(events: list[Event]) -> None:
            async def send() -> None:
                publisher = JetStreamPublisher(
                    url=nats_stream["url"], subject=nats_stream["subject"]
                )
                for event in events:
                    await publisher.publish(event)
                await publisher.aclose()

            anyio.run(send, backend="asyncio")

        crasher = Crasher(forkserver, nats_stream, publish, tmp_path / "effects.db")
        run_crash_test(crasher, TOTAL_KILLS * 2 // 5)

    def test_redis_consumer_killed_at_random_points(
        self, forkserver: Any, redis_url: str, redis_prefix: str, tmp_path: Path
    ) -> None:
        """SIGKILLed Redis consumers: every effect exactly once, per-key order kept."""
        config = {"bus": "redis", "url": redis_url, "stream": f"{redis_prefix}crash", "name": "g"}
        publisher = RedisStreamPublisher(url=redis_url, stream_key=config["stream"])

        def publish(events: list[Event]) -> None:
            async def send() -> None:
                for event in events:
                    await publisher.publish(event)

            anyio.run(send)

        crasher = Crasher(forkserver, config, publish, tmp_path / "effects.db")
        try:
            run_crash_test(crasher, TOTAL_KILLS - TOTAL_KILLS * 2 // 5)
        finally:
            anyio.run(publisher.aclose)
