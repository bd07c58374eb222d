"""ConsulRegistry against real Consul agents: registration, checks, watches, failures."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from typing import TYPE_CHECKING

import anyio
import attrs
import pytest

from consul_agents import ConsulAgent, dev_agent, free_ports, leader_of
from meshkit import (
    ConfigurationError,
    DiscoveryError,
    RegistryAccessDeniedError,
    RegistryNotFoundError,
    RegistryRequestError,
    RegistryUnavailableError,
)
from meshkit.balancing import Endpoint, RoundRobin
from meshkit.discovery import (
    AgentBackoff,
    ConsulRegistry,
    GrpcCheck,
    HttpCheck,
    ServiceRegistration,
    TtlCheck,
    Watch,
    WatchQuery,
)
from meshkit.discovery._agent import AgentCall, Answer, _checked, parse_agent
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.anyio, pytest.mark.consul]

FAST = AgentBackoff(base=0.05, cap=0.5)


def registry(*agents: ConsulAgent, **kwargs: object) -> ConsulRegistry:
    """Build a registry on `agents` with short waits, so tests never idle long."""
    options: dict[str, object] = {"wait": 5.0, "backoff": FAST, "request_timeout": 2.0}
    options.update(kwargs)
    return ConsulRegistry(addresses=[a.address for a in agents], **options)  # type: ignore[arg-type]


async def until(watch: Watch, predicate: object, limit: float = 30.0) -> tuple[Endpoint, ...]:
    """Wait until `predicate(watch.endpoints)` holds (real time: Consul drives the change)."""
    assert callable(predicate)
    with anyio.fail_after(limit):
        while not predicate(watch.endpoints):
            await watch.wait_changed(watch.version)
    return watch.endpoints


async def eventually(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll `condition` until it holds: it changes in other threads and processes."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - no event to wait on across processes
            await anyio.sleep(0.05)


def ports(endpoints: tuple[Endpoint, ...]) -> set[int]:
    """Return the ports of a snapshot."""
    return {e.port for e in endpoints}


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.ThreadingHTTPServer, type[_Health]]]:
    """Serve GET / with a status the test flips (a handler class of this test's own)."""
    handler = type("Handler", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


@attrs.define(eq=False)
class Relay:
    """A TCP relay to an agent that can hold back the agent's answers on its first connection.

    `answered` is set once the agent answered there (so it handled the request); `release`
    lets that answer through; `clients` holds the client connections still open.
    """

    target: int
    hold_first: bool = False
    answered: threading.Event = attrs.field(factory=threading.Event)
    release: threading.Event = attrs.field(factory=threading.Event)
    clients: set[socket.socket] = attrs.field(factory=set)
    sockets: list[socket.socket] = attrs.field(factory=list)
    listener: socket.socket = attrs.field(factory=lambda: socket.create_server(("127.0.0.1", 0)))

    @property
    def address(self) -> str:
        """The relay's address, as `ConsulRegistry(addresses=...)` takes it."""
        return "127.0.0.1:{}".format(*self.listener.getsockname()[1:])

    def serve(self) -> None:
        """Accept and relay connections until the listener closes."""
        hold = self.hold_first
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.clients.add(client)
                self.sockets += [client, upstream]
                for source, sink, held in ((client, upstream, False), (upstream, client, hold)):
                    threading.Thread(
                        target=self.pipe, args=(source, sink, held), daemon=True
                    ).start()
                hold = False

    def pipe(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        """Copy `source` to `sink` until `source` ends; wait for `release` if `held`."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if held:
                    self.answered.set()
                    self.release.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        self.clients.discard(source)  # a no-op unless the client closed its side


@contextlib.contextmanager
def relay(target: int, *, hold_first: bool = False) -> Iterator[Relay]:
    """Run a `Relay` to the agent's port `target` for the block."""
    running = Relay(target, hold_first)
    threading.Thread(target=running.serve, daemon=True).start()
    try:
        yield running
    finally:
        running.release.set()
        running.listener.close()
        for sock in running.sockets:
            sock.close()


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """Yield the address of a listener whose accept queue is full: connecting there hangs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    filler = socket.create_connection(listener.getsockname())  # takes the one queue slot
    try:
        yield address
    finally:
        filler.close()
        listener.close()


class TestRegistration:
    async def test_register_watch_deregister(self, consul: ConsulAgent) -> None:
        """A registered instance appears with its weight and meta, and leaves on exit."""
        reg = registry(consul)
        service = ServiceRegistration(
            name="orders",
            address="127.0.0.1",
            port=9001,
            weight=7,
            meta={"zone": "eu-1", "version": "v2"},
            tags=["canary"],
            check=TtlCheck(ttl=10),
        )
        balancer = RoundRobin([])
        async with reg.watch("orders") as watch:
            watch.bind(balancer)
            assert not watch.endpoints
            async with reg.register(service) as handle:
                (endpoint,) = await until(watch, bool)
                assert handle.agent == consul.url
                assert handle.registrations == 1
                assert balancer.endpoints == (endpoint,)
            assert (endpoint.weight, endpoint.zone, endpoint.label("version")) == (7, "eu-1", "v2")
            await until(watch, lambda e: not e)
            assert list(balancer.endpoints) == []  # (a list: mypy narrowed the tuple above)
        assert reg.statistics().errors == 0

    async def test_cancelled_during_entry_still_deregisters(self, consul: ConsulAgent) -> None:
        """Cancelled while the agent's answer to the registration is on its way: no leftover."""
        service = ServiceRegistration(name="late", port=9009, address="127.0.0.1")

        async def hold_registration(reg: ConsulRegistry) -> None:
            async with reg.register(service):
                await anyio.sleep_forever()  # pragma: no cover - cancelled during entry

        with relay(consul.ports["http"], hold_first=True) as agent:
            reg = ConsulRegistry(addresses=[agent.address], request_timeout=30)
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold_registration, reg)
                assert await anyio.to_thread.run_sync(agent.answered.wait, 30)
                assert service.id in consul.get("/v1/agent/services")  # type: ignore[operator]
                tg.cancel_scope.cancel()
                agent.release.set()
        assert service.id not in consul.get("/v1/agent/services")  # type: ignore[operator]

    async def test_watches_do_not_starve_heartbeats(self, consul: ConsulAgent) -> None:
        """With every thread of max_threads in a blocking query, the TTL still gets its beats."""
        reg = registry(consul, max_threads=1, wait=60)
        service = ServiceRegistration(
            name="busy", port=9010, address="127.0.0.1", check=TtlCheck(ttl=4)
        )
        consul.put("/v1/agent/service/register", {"Name": "other", "Port": 9011})
        async with reg.register(service), reg.watch("other"):
            await eventually(lambda: reg.statistics().queries >= 2)  # the blocking one runs
            # Over two TTLs: a heartbeat starved for `wait` lets the check go critical, while
            # one on time has 2/3 of a TTL (2.7 s) of slack on a loaded machine.
            for _ in range(30):
                checks = await anyio.to_thread.run_sync(consul.get, "/v1/health/checks/busy")
                assert isinstance(checks, list)
                assert [c["Status"] for c in checks] == ["passing"]
                await anyio.sleep(0.3)

    async def test_explicit_deregister(self, consul: ConsulAgent) -> None:
        """deregister() removes an instance by id; an unknown id is a no-op."""
        reg = registry(consul)
        body = ServiceRegistration(name="pay", port=9002, address="127.0.0.1").payload()
        consul.put("/v1/agent/service/register", body)
        async with reg.watch("pay") as watch:
            assert ports(watch.endpoints) == {9002}
            await reg.deregister(str(body["ID"]))
            await reg.deregister("never-registered")
            await until(watch, lambda e: not e)

    async def test_ttl_expiry_leaves_the_balancer(self, consul: ConsulAgent) -> None:
        """A TTL that is not renewed makes Consul mark it critical; the balancer drops it."""
        frozen = registry(consul, clock=FakeClock())  # its heartbeat never fires
        balancer = RoundRobin([])
        service = ServiceRegistration(
            name="cart", port=9003, address="127.0.0.1", check=TtlCheck(ttl=1)
        )
        critical_at: list[float] = []

        async def note_critical() -> None:
            while not critical_at:
                checks = await anyio.to_thread.run_sync(consul.get, "/v1/health/checks/cart")
                if isinstance(checks, list) and any(c["Status"] == "critical" for c in checks):
                    critical_at.append(time.monotonic())
                await anyio.sleep(0.02)

        async with registry(consul).watch("cart") as watch, frozen.register(service):
            watch.bind(balancer)
            await until(watch, bool)
            async with anyio.create_task_group() as tg:
                tg.start_soon(note_critical)
                await until(watch, lambda e: not e)
                removed_at = time.monotonic()
            assert balancer.endpoints == ()
        # The bound: out of the balancer within 1 s of Consul's own state change.
        assert removed_at - critical_at[0] <= 1.0

    async def test_http_check_driven_by_consul(
        self,
        consul: ConsulAgent,
        health_server: tuple[http.server.ThreadingHTTPServer, type[_Health]],
    ) -> None:
        """Consul calls our HTTP server; a 503 takes the instance out, a 200 brings it back."""
        server, handler = health_server
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        check = HttpCheck(url=url, interval=1, timeout=1)
        service = ServiceRegistration(name="search", port=9004, address="127.0.0.1", check=check)
        reg = registry(consul)
        async with reg.watch("search") as watch, reg.register(service):
            await until(watch, bool)
            handler.status = 503
            await until(watch, lambda e: not e)
            handler.status = 200
            await until(watch, bool)

    async def test_grpc_check_driven_by_consul(self, consul: ConsulAgent) -> None:
        """Consul calls grpc.health.v1 on our server; NOT_SERVING removes the instance."""
        grpc = pytest.importorskip("grpc")
        health = pytest.importorskip("grpc_health.v1.health")
        health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
        health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
        server = grpc.server(_thread_pool())
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            servicer.set("inventory", health_pb2.HealthCheckResponse.SERVING)
            check = GrpcCheck(target=f"127.0.0.1:{port}/inventory", interval=1, timeout=1)
            service = ServiceRegistration(
                name="inventory", port=port, address="127.0.0.1", check=check
            )
            reg = registry(consul)
            async with reg.watch("inventory") as watch, reg.register(service):
                await until(watch, bool)
                servicer.set("inventory", health_pb2.HealthCheckResponse.NOT_SERVING)
                await until(watch, lambda e: not e)
                servicer.set("inventory", health_pb2.HealthCheckResponse.SERVING)
                await until(watch, bool)
        finally:
            server.stop(None)

    async def test_registration_returns_after_agent_restart(self, consul: ConsulAgent) -> None:
        """An agent restarted empty gets the registration back; the watch recovers meanwhile."""
        reg = registry(consul)
        service = ServiceRegistration(
            name="users", port=9005, address="127.0.0.1", check=TtlCheck(ttl=1.5)
        )
        balancer = RoundRobin([])
        async with reg.watch("users") as watch, reg.register(service) as handle:
            watch.bind(balancer)
            before = await until(watch, bool)
            consul.kill()
            await eventually(lambda: watch.stale)
            assert watch.endpoints == before  # the last good snapshot is kept
            assert balancer.endpoints == before
            consul.start(fresh=True)  # a replaced node: it forgot every local service
            await anyio.to_thread.run_sync(consul.wait_ready)
            await eventually(lambda: handle.registrations >= 2 and not watch.stale)
            await until(watch, lambda e: ports(e) == {9005})

    async def test_ttl_update_answering_not_found_re_registers(self, consul: ConsulAgent) -> None:
        """When the agent forgets the service behind our back, the next heartbeat re-registers."""
        reg = registry(consul)
        service = ServiceRegistration(
            name="mail", port=9006, address="127.0.0.1", check=TtlCheck(ttl=0.6)
        )
        async with reg.register(service) as handle:
            consul.put(f"/v1/agent/service/deregister/{service.id}")
            await eventually(lambda: handle.registrations >= 2)
            assert service.id in consul.get("/v1/agent/services")  # type: ignore[operator]

    async def test_resync_re_registers_a_forgotten_http_service(
        self,
        consul: ConsulAgent,
        health_server: tuple[http.server.ThreadingHTTPServer, type[_Health]],
    ) -> None:
        """Without a TTL, the periodic resync notices the agent forgot the service."""
        server, _ = health_server
        check = HttpCheck(url=f"http://127.0.0.1:{server.server_address[1]}/", interval=1)
        service = ServiceRegistration(
            name="notify", port=9007, address="127.0.0.1", check=check, resync_interval=0.3
        )
        async with registry(consul).register(service) as handle:
            consul.put(f"/v1/agent/service/deregister/{service.id}")
            await eventually(lambda: handle.registrations >= 2)

    async def test_deregister_critical_after_is_sent(self, consul: ConsulAgent) -> None:
        """The check carries DeregisterCriticalServiceAfter (on by default)."""
        service = ServiceRegistration(name="audit", port=9008, check=TtlCheck(ttl=5))
        async with registry(consul).register(service):
            checks = consul.get("/v1/agent/checks")
            assert isinstance(checks, dict)
            definition = checks[service.check_id]
            assert definition["ServiceID"] == service.id
        body = service.payload()["Check"]
        assert isinstance(body, dict)
        assert body["DeregisterCriticalServiceAfter"] == "60000ms"


class TestWatches:
    async def test_filters_and_warning_weights(self, consul: ConsulAgent) -> None:
        """Tag and meta filters apply; passing_only=False keeps warning instances, reweighted."""
        for port, tags, zone in [(9101, ["v2"], "a"), (9102, ["v1"], "a"), (9103, ["v2"], "b")]:
            body = ServiceRegistration(
                name="api", port=port, address="127.0.0.1", tags=tags, meta={"zone": zone},
                weight=5, warning_weight=2, check=TtlCheck(ttl=60),
            ).payload()  # fmt: skip
            consul.put("/v1/agent/service/register", body)
            consul.put(f"/v1/agent/check/warn/service:{body['ID']}")
        reg = registry(consul)
        assert ports(await _once(reg, "api", WatchQuery())) == set()
        everything = await _once(reg, "api", WatchQuery(passing_only=False))
        assert ports(everything) == {9101, 9102, 9103}
        assert {e.weight for e in everything} == {2}
        v2_in_a = WatchQuery(passing_only=False, tags=["v2"], meta={"zone": "a"})
        assert ports(await _once(reg, "api", v2_in_a)) == {9101}

    async def test_idle_watch_sends_one_query_per_wait(self, consul: ConsulAgent) -> None:
        """Idle, a watch costs about one request per `wait`; no busy loop."""
        reg = registry(consul, wait=1.0)
        consul.put("/v1/agent/service/register", {"Name": "idle", "Port": 9200})
        async with reg.watch("idle") as watch:
            await until(watch, bool)
            start, before = time.monotonic(), reg.statistics().queries
            await anyio.sleep(4)
            elapsed, sent = time.monotonic() - start, reg.statistics().queries - before
        # wait=1 s (Consul adds up to wait/16): one query per second; the agent's own
        # anti-entropy sync may wake one more.
        assert 1 <= sent <= elapsed / 1.0 + 2

    async def test_closing_a_watch_ends_its_blocking_query(self, consul: ConsulAgent) -> None:
        """Leaving the block closes the in-flight blocking query's connection, not `wait` later."""
        consul.put("/v1/agent/service/register", {"Name": "quiet", "Port": 9202})
        with relay(consul.ports["http"]) as agent:
            reg = ConsulRegistry(addresses=[agent.address], wait=120, backoff=FAST)
            async with reg.watch("quiet"):
                await eventually(lambda: reg.statistics().queries >= 2)  # the blocking one
                assert agent.clients
            # The agent would answer in 120 s; the watch's socket is shut down at once.
            await eventually(lambda: not agent.clients, limit=60)

    async def test_churn_is_rate_limited(self, consul: ConsulAgent) -> None:
        """Under constant churn a watch sends at most one query per `min_interval`."""
        reg = registry(consul, min_interval=0.2)
        body = ServiceRegistration(name="churn", port=9201, check=TtlCheck(ttl=60)).payload()
        consul.put("/v1/agent/service/register", body)
        async with reg.watch("churn", WatchQuery(passing_only=False)) as watch:
            start, before = time.monotonic(), reg.statistics().queries
            for i in range(30):
                status = "warn" if i % 2 else "pass"
                await anyio.to_thread.run_sync(
                    consul.put, f"/v1/agent/check/{status}/service:{body['ID']}"
                )
                await anyio.sleep(0.02)
            elapsed, sent = time.monotonic() - start, reg.statistics().queries - before
            assert watch.version >= 2
        assert sent <= elapsed / 0.2 + 1

    async def test_many_agents_fail_over(self, consul: ConsulAgent) -> None:
        """A dead first address is skipped: the watch and the registration use the next one."""
        dead = "127.0.0.1:1"
        reg = ConsulRegistry(addresses=[dead, consul.address], wait=5, backoff=FAST)
        anywhere = ServiceRegistration(name="geo", port=9301)  # the agent's node address
        with pytest.raises(ConfigurationError, match="address"):
            async with reg.register(anywhere):
                pass  # pragma: no cover
        service = ServiceRegistration(
            name="geo", port=9301, address="127.0.0.1", check=TtlCheck(ttl=5)
        )
        async with reg.watch("geo") as watch, reg.register(service) as handle:
            await until(watch, bool)
            assert handle.agent == consul.url
        assert reg.statistics().errors >= 2

    async def test_agent_that_never_accepts_costs_request_timeout(
        self, consul: ConsulAgent
    ) -> None:
        """Connecting is bounded by request_timeout, not by the blocking query's wait."""
        consul.put("/v1/agent/service/register", {"Name": "far", "Port": 9302})
        with blackhole() as dead:
            reg = ConsulRegistry(
                addresses=[dead, consul.address], wait=120, request_timeout=1, backoff=FAST
            )
            # Failover after about 1 s; a connect bounded by the read timeout took 128 s.
            with anyio.fail_after(60):
                async with reg.watch("far") as watch:
                    assert ports(watch.endpoints) == {9302}

    async def test_ipv6_agent_address(self, consul_bin: str, tmp_path: Path) -> None:
        """An agent given as `[::1]:port` is reached (the client's URL needs the brackets)."""
        with dev_agent(consul_bin, tmp_path, ["-client", "127.0.0.1 ::1"]) as agent:
            reg = ConsulRegistry(addresses=[f"[::1]:{agent.ports['http']}"], wait=5)
            service = ServiceRegistration(name="six", port=9303, address="::1")
            async with reg.watch("six") as watch, reg.register(service) as handle:
                (endpoint,) = await until(watch, bool)
            assert (endpoint.host, handle.agent) == ("::1", f"http://[::1]:{agent.ports['http']}")

    @pytest.mark.parametrize("value", ["127.0.0.1:1", "[::1]:1", "https://127.0.0.1:1"])
    async def test_consul_environment_does_not_override_addresses(
        self, consul: ConsulAgent, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        """CONSUL_HTTP_ADDR/SSL (read by python-consul2's constructor) leave `addresses` alone."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", value)
        monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
        monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
        consul.put("/v1/agent/service/register", {"Name": "env", "Port": 9304})
        async with registry(consul).watch("env") as watch:
            assert ports(watch.endpoints) == {9304}


class TestErrors:
    async def test_unreachable_agent_names_agent_and_path(self) -> None:
        """No agent answering: entry raises RegistryUnavailableError naming both."""
        reg = ConsulRegistry(addresses=["127.0.0.1:1"], request_timeout=1)
        with pytest.raises(RegistryUnavailableError) as info:
            async with reg.watch("orders"):
                pass  # pragma: no cover
        assert info.value.agent == "http://127.0.0.1:1"
        assert info.value.path == "/v1/health/service/orders"
        assert "HTTPConnectionPool(host='127.0.0.1', port=1)" in info.value.reason
        with pytest.raises(RegistryUnavailableError):
            await reg.deregister("x")
        with pytest.raises(RegistryUnavailableError):
            async with reg.register(ServiceRegistration(name="orders", port=1)):
                pass  # pragma: no cover

    @pytest.mark.parametrize("service_id", ["", "../x", "a/b", "..", "\ud800", "a\x00", 5])
    async def test_bad_service_id_is_refused_before_any_request(self, service_id: object) -> None:
        """deregister() refuses an id that no registration has, naming the field."""
        reg = ConsulRegistry(addresses=["127.0.0.1:1"], request_timeout=1)
        with pytest.raises(ConfigurationError, match="service_id"):
            await reg.deregister(service_id)  # type: ignore[arg-type]
        assert reg.statistics().requests == 0

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, RegistryRequestError), (401, RegistryAccessDeniedError),
            (403, RegistryAccessDeniedError), (404, RegistryNotFoundError),
            (405, RegistryRequestError), (429, RegistryUnavailableError),
            (500, RegistryUnavailableError), (503, RegistryUnavailableError),
        ],
    )  # fmt: skip
    def test_status_to_error(self, status: int, error: type[DiscoveryError]) -> None:
        """429 (Consul's rate limit: retry later, elsewhere) is unavailable, not a bad request."""
        with pytest.raises(error) as info:
            _checked("http://a:1", "/v1/x", Answer(status, None, "text"))
        assert type(info.value) is error
        assert (info.value.agent, info.value.path) == ("http://a:1", "/v1/x")

    async def test_not_found_and_bad_request(self, consul: ConsulAgent) -> None:
        """A 404 becomes RegistryNotFoundError; a rejected body a RegistryRequestError."""
        call = AgentCall([parse_agent(consul.address)], None, 2.0, 0.0)
        with pytest.raises(RegistryNotFoundError, match="unknown service"):
            await anyio.to_thread.run_sync(call.get, 0, "/v1/agent/service/nope")
        with pytest.raises(RegistryNotFoundError, match="associated TTL"):
            await anyio.to_thread.run_sync(call.put, 0, "/v1/agent/check/pass/service:nope")
        bogus = {"Name": "x", "Check": {"TTL": "not-a-duration"}}
        with pytest.raises(RegistryRequestError, match="HTTP 400"):
            await anyio.to_thread.run_sync(call.put, 0, "/v1/agent/service/register", bogus)
        reg = registry(consul)
        with pytest.raises(ConfigurationError):
            async with reg.register("orders"):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(ConfigurationError):
            async with reg.watch("orders", query="passing"):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(ConfigurationError, match="service"):
            async with reg.watch("not a name"):
                pass  # pragma: no cover

    async def test_acl_denied(self, consul_bin: str, tmp_path: Path) -> None:
        """With ACLs on, a bad token is RegistryAccessDeniedError; the master token works."""
        token = "root-token"  # noqa: S105 - the throwaway agent's own master token
        hcl = f'acl {{ enabled = true default_policy = "deny" tokens {{ master = "{token}" }} }}'
        with dev_agent(consul_bin, tmp_path, ["-hcl", hcl], token=token) as agent:
            denied = ConsulRegistry(addresses=[agent.address], token="wrong-" + token, backoff=FAST)
            service = ServiceRegistration(name="secure", port=9401, address="127.0.0.1")
            with pytest.raises(RegistryAccessDeniedError):
                async with denied.register(service):
                    pass  # pragma: no cover
            allowed = ConsulRegistry(addresses=[agent.address], token=token, wait=5)
            async with allowed.watch("secure") as watch, allowed.register(service):
                await until(watch, bool)
            await allowed.deregister("never-registered")  # 404 with ACLs on: still a no-op


class TestTls:
    async def test_https_with_client_certificate(self, consul_bin: str, tmp_path: Path) -> None:
        """verify (a CA bundle) and cert (client cert, key) reach an agent that requires mTLS."""
        for kind in (["ca"], ["cert", "-server"], ["cert", "-client"]):
            args = [consul_bin, "tls", kind[0], "create", *kind[1:]]
            await anyio.run_process(
                [*args, *(["-dc", "dc1"] if kind[0] == "cert" else [])], cwd=tmp_path
            )
        ca = str(tmp_path / "consul-agent-ca.pem")
        server = tmp_path / "dc1-server-consul-0"
        client = (
            str(tmp_path / "dc1-client-consul-0.pem"),
            str(tmp_path / "dc1-client-consul-0-key.pem"),
        )
        (https,) = free_ports(1)
        hcl = (
            f'ports {{ https = {https} }} ca_file = "{ca}" cert_file = "{server}.pem" '
            f'key_file = "{server}-key.pem" verify_incoming_https = true'
        )
        with dev_agent(consul_bin, tmp_path / "agent", ["-hcl", hcl]) as agent:
            address = f"https://127.0.0.1:{https}"
            reg = ConsulRegistry(addresses=[address], verify=ca, cert=client, wait=5, backoff=FAST)
            service = ServiceRegistration(name="vault", port=9601, address="127.0.0.1")
            async with reg.watch("vault") as watch, reg.register(service) as handle:
                await until(watch, bool)
                assert handle.agent == address
            assert agent.get("/v1/agent/services") == {}  # deregistered on exit, over TLS
            anonymous = ConsulRegistry(addresses=[address], verify=ca, request_timeout=2)
            with pytest.raises(RegistryUnavailableError, match=r"SSLError|ConnectionError"):
                async with anonymous.watch("vault"):
                    pass  # pragma: no cover


class TestCluster:
    async def test_leader_killed_watches_and_registrations_carry_on(
        self, consul_cluster: list[ConsulAgent]
    ) -> None:
        """SIGKILL the leader: the watch fails over, the registration moves to a survivor."""
        leader = leader_of(consul_cluster)
        order = [leader, *(a for a in consul_cluster if a is not leader)]
        reg = registry(*order, request_timeout=1.0)
        service = ServiceRegistration(
            name="ledger", port=9501, address="127.0.0.1", check=TtlCheck(ttl=2)
        )
        balancer = RoundRobin([])
        async with reg.watch("ledger") as watch, reg.register(service) as handle:
            watch.bind(balancer)
            await until(watch, bool, limit=60)
            assert handle.agent == leader.url
            leader.kill()
            await eventually(lambda: handle.agent != leader.url and handle.registrations >= 2, 60)
            # A survivor holds the registration and the watch follows the survivors.
            await until(watch, lambda e: ports(e) == {9501}, limit=60)
            assert balancer.endpoints == watch.endpoints
            assert handle.agent != leader.url


async def _once(reg: ConsulRegistry, service: str, query: WatchQuery) -> tuple[Endpoint, ...]:
    async with reg.watch(service, query) as watch:
        return watch.endpoints


def _thread_pool() -> object:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    return ThreadPoolExecutor(max_workers=2)
