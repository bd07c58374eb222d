"""Real Consul agents for the tests: a dev agent, or a three-server cluster, on loopback.

The discovery tests get them through the fixtures of `tests/discovery/conftest.py`; the
benchmarks import this module directly.

Every agent gets its own free ports (HTTP, DNS, serf LAN/WAN on TCP and UDP, server RPC,
gRPC) and its own data directory, and is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
PORT_NAMES = ("http", "dns", "serf_lan", "serf_wan", "server", "grpc")


def consul_binary() -> str | None:
    """Find the agent: $MESHKIT_CONSUL_BIN, then `.tools/consul` of the repo, then PATH."""
    candidates = [
        os.environ.get("MESHKIT_CONSUL_BIN", ""),
        str(ROOT / ".tools" / "consul" / "usr" / "bin" / "consul"),
        shutil.which("consul") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(Path(candidate).resolve())
    return None


def _free_port() -> tuple[int, list[socket.socket]]:
    """Return a port free on 127.0.0.1 for TCP and UDP, with the sockets holding it."""
    while True:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            udp.close()
            continue
        return port, [tcp, udp]


def free_ports(count: int) -> list[int]:
    """Return `count` distinct ports free for TCP and UDP (serf needs both)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            port, sockets = _free_port()
            held += sockets
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


@attrs.define(eq=False)
class ConsulAgent:
    """One `consul agent` process; `start()`, `kill()`, `start()` again on the same ports."""

    binary: str
    data_dir: Path
    node: str
    ports: dict[str, int] = attrs.field(
        factory=lambda: dict(zip(PORT_NAMES, free_ports(6), strict=True))
    )
    extra: list[str] = attrs.field(factory=list)
    dev: bool = True
    token: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The HTTP address, as `ConsulRegistry(addresses=...)` takes it."""
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def url(self) -> str:
        """The HTTP URL, as errors and `Registered.agent` name it."""
        return f"http://{self.address}"

    @property
    def serf_lan(self) -> str:
        """The serf LAN address others join."""
        return f"127.0.0.1:{self.ports['serf_lan']}"

    def command(self) -> list[str]:
        """Return the agent's command line."""
        p = self.ports
        return [
            self.binary, "agent", *(["-dev"] if self.dev else []),
            "-node", self.node, "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-data-dir", str(self.data_dir), "-log-level", "warn",
            "-http-port", str(p["http"]), "-dns-port", str(p["dns"]),
            "-serf-lan-port", str(p["serf_lan"]), "-serf-wan-port", str(p["serf_wan"]),
            "-server-port", str(p["server"]), "-grpc-port", str(p["grpc"]),
            *self.extra,
        ]  # fmt: skip

    def start(self, *, fresh: bool = False) -> None:
        """Start the process (output goes to `<node>.log` beside its data dir).

        An agent keeps the services registered through its API in its data dir and loads them
        again on restart; `fresh=True` empties it first, as a replaced node would be.
        """
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir.parent / f"{self.node}.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def get(self, path: str) -> object:
        """GET a path of the agent's API and decode it (raises urllib's errors)."""
        request = urllib.request.Request(f"{self.url}{path}", headers=self._headers())  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")

    def _headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    def put(self, path: str, body: object = None) -> None:
        """PUT to a path of the agent's API."""
        data = b"" if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}{path}", data=data, method="PUT", headers=self._headers()
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def leader(self) -> str:
        """Return the raft leader's server address this agent knows ('' when none)."""
        try:
            return str(self.get("/v1/status/leader") or "")
        except (OSError, ValueError):
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the agent answers and its cluster has a leader and this node synced."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"consul agent {self.node} exited: {self.process.returncode}")
            if self.leader() and self._node_registered():
                return
            time.sleep(0.1)
        raise TimeoutError(f"consul agent {self.node} not ready in {timeout}s")

    def _node_registered(self) -> bool:
        try:
            nodes = self.get("/v1/catalog/nodes")
        except (OSError, ValueError):
            return False
        return isinstance(nodes, list) and any(n.get("Node") == self.node for n in nodes)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the agent's pid and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        """Stop the agent by its pid (SIGTERM, then SIGKILL)."""
        self.kill(signal.SIGTERM)


@contextlib.contextmanager
def dev_agent(
    binary: str, tmp: Path, extra: list[str] | None = None, token: str = ""
) -> Iterator[ConsulAgent]:
    """Run one `consul agent -dev` on free ports for the duration of the block."""
    agent = ConsulAgent(binary, tmp / "dev", "dev", extra=extra or [], token=token)
    agent.start()
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.stop()


@contextlib.contextmanager
def cluster(binary: str, tmp: Path, size: int = 3) -> Iterator[list[ConsulAgent]]:
    """Run `size` servers (`-bootstrap-expect`, `-retry-join` each other) on loopback."""
    agents = [ConsulAgent(binary, tmp / f"server{i}", f"server{i}", dev=False) for i in range(size)]
    try:
        for agent in agents:  # inside the try: a failed start must stop those already running
            joins = [f"-retry-join={o.serf_lan}" for o in agents if o is not agent]
            agent.extra = ["-server", f"-bootstrap-expect={size}", "-retry-interval=1s", *joins]
            agent.start()
        for agent in agents:
            agent.wait_ready()
        yield agents
    finally:
        for agent in agents:
            agent.kill()  # SIGKILL: a clean leave would only slow the teardown down


def leader_of(agents: list[ConsulAgent]) -> ConsulAgent:
    """Return the agent that is the raft leader (its server port is in /v1/status/leader)."""
    for agent in agents:
        for other in agents:
            if other.leader().endswith(f":{agent.ports['server']}"):
                return agent
    raise LookupError("no leader")
