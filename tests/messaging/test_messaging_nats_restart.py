"""A NATS JetStream server restarted mid-run: consumers and publishers ride it out.

The test runs its own `nats-server -js` on a free loopback port with a store directory of its
own (not the machine's shared server), restarts it while a dispatcher consumes, and checks
that every event takes effect once, in order.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import anyio
import nats
import pytest

from meshkit import PublishError
from meshkit.eventsourcing import Event
from meshkit.messaging import Dispatcher, JetStreamConsumer, JetStreamPublisher, MemoryInbox
from meshkit.testing._bus_conformance import record_effect
from services import missing_service

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.nats

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@pytest.fixture
def anyio_backend() -> str:
    """nats-py runs on asyncio only."""
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnServer:
    """A private nats-server process that can be stopped and started again."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        self.process = subprocess.Popen(
            [*command, "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # waiting for a real server to listen
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.stop()  # pragma: no cover - never leave a server behind
        pytest.fail("the private nats-server did not start")  # pragma: no cover

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                process.kill()
                process.wait(20)


@pytest.fixture
def own_nats(tmp_path: Path, nats_url: str) -> Iterator[OwnServer]:
    """Start a private JetStream server; stop it (and its store goes with tmp_path)."""
    if not shutil.which(NATS_SERVER):  # pragma: no cover - depends on the machine
        missing_service(f"{NATS_SERVER} is not installed (Debian package nats-server)")
    server = OwnServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


async def publish_retrying(publisher: JetStreamPublisher, event: Event) -> None:
    """Publish like an outbox relay does: retry until the server takes it."""
    with anyio.fail_after(60):
        while True:
            try:
                await publisher.publish(event)
            except PublishError:
                await anyio.sleep(0.1)  # the server is restarting
            else:
                return


@pytest.mark.anyio
class TestServerRestart:
    async def test_dispatcher_survives_a_server_restart(self, own_nats: OwnServer) -> None:
        """Events before, during and after a restart all take effect once, in order."""
        nc = await nats.connect(own_nats.url)
        await nc.jetstream().add_stream(name="RESTART", subjects=["restart.events", "restart.dead"])
        await nc.close()
        publisher = JetStreamPublisher(url=own_nats.url, subject="restart.events")
        consumer = JetStreamConsumer(
            url=own_nats.url,
            stream="RESTART",
            subject="restart.events",
            durable="survivor",
            dead_letter_subject="restart.dead",
            ack_wait=2.0,
        )
        events = [Event(stream_id="order-1", version=v, type="OrderPlaced") for v in range(1, 21)]
        inbox = MemoryInbox()
        async with Dispatcher(
            consumer=consumer, handler=record_effect, inbox=inbox, fetch_timeout=0.2
        ) as dispatcher:
            for event in events[:10]:
                await publish_retrying(publisher, event)
            with anyio.fail_after(30):
                await dispatcher.wait_for(lambda s: s.handled >= 10)
            own_nats.stop()
            own_nats.start()
            for event in events[10:]:
                await publish_retrying(publisher, event)
            with anyio.fail_after(60):
                await dispatcher.wait_for(lambda s: s.handled >= 20)
                while len(inbox.data.get("order-1", ())) < 20:  # noqa: ASYNC110 - a bounded poll
                    await anyio.sleep(0.05)
        await consumer.aclose()
        await publisher.aclose()
        assert inbox.data["order-1"] == tuple(range(1, 21))
