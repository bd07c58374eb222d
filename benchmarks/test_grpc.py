"""gRPC benchmarks: unary round trips on loopback, meshkit against bare grpc.aio and peers.

Every server answers the standard `grpc.health.v1.Health/Check` (a tiny unary call), so the
figures are the chains' own cost on top of a loopback round trip. One asyncio loop runs all
servers and clients of the module; each benchmark round makes `N` calls, sequentially (the
per-call figure is a latency: `extra_info["us_per_call"]`) or `CONCURRENCY` at a time
(`extra_info["calls_per_s"]`: throughput). `extra_info["cpu_us_per_call"]` is the median
round's CPU time per call of this process (client and server together), the figure a shared
machine disturbs least.

Groups:

* `grpc-unary-latency` / `grpc-unary-throughput`: bare grpc.aio (no interceptors), meshkit's
  full chain (client: `MeshChannel` over one endpoint with deadline, retries, breaker,
  least-request balancing and Prometheus metrics, inside a meshkit `Timeout`; server:
  `ServerPolicy` with authorization, deadline context and metrics), grpc-interceptor (an
  empty `AsyncServerInterceptor`: it does less) and opentelemetry-instrumentation-grpc
  (client and server tracing to a no-op provider: it does less);
* `meshkit-server-only` (a default `ServerPolicy`, bare client) and `meshkit-client-only`
  (a default `ClientPolicy` on a grpc.aio channel, bare server) split the chain's cost;
* `grpc-balancing-throughput`: `MeshChannel` over three servers against grpc's own
  `round_robin` policy over the same three.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - grpc.aio runs on asyncio; the benchmark drives one loop
import os
import time
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_interceptor import AsyncServerInterceptor
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from prometheus_client import CollectorRegistry

from meshkit.balancing import Endpoint
from meshkit.grpc import (
    ClientPolicy,
    Destination,
    HttpRoute,
    MeshChannel,
    MeshConfig,
    PrometheusObserver,
    RetryPolicy,
    ServerPolicy,
    add_standard_services_aio,
)
from meshkit.resilience import CircuitBreaker, RetryBudget, Timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

N = 200
CONCURRENCY = 20
REQUEST = health_pb2.HealthCheckRequest(service="")


class _Noop(AsyncServerInterceptor):
    """grpc-interceptor's async server interceptor, passing the call through."""

    async def intercept(
        self, method: Any, request_or_iterator: Any, context: Any, method_name: str
    ) -> Any:
        return await method(request_or_iterator, context)


class _Watch:
    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)

    async def watch(self, service: str) -> AsyncIterator[Sequence[Endpoint]]:
        yield self.endpoints
        await asyncio.Event().wait()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module's servers and clients."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def _server(interceptors: list[Any]) -> tuple[Any, int]:
    server = grpc.aio.server(interceptors=interceptors)
    await add_standard_services_aio(server, [])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _observer() -> PrometheusObserver:
    return PrometheusObserver(CollectorRegistry())


def _mesh_config() -> MeshConfig:
    retries = RetryPolicy(attempts=2, retry_on=["unavailable"])
    return MeshConfig(
        host="health", routes=(HttpRoute(destinations=(Destination(),), retries=retries),)
    )


def _client_policy(observer: PrometheusObserver) -> ClientPolicy:
    return ClientPolicy(budget=RetryBudget(), observer=observer)


async def _owned(mesh: MeshChannel, closers: list[Any]) -> MeshChannel:
    """Enter `mesh` in a task of its own (its task group must be left in the same task)."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def own() -> None:
        async with mesh:
            ready.set_result(None)
            await stop.wait()

    task = asyncio.get_running_loop().create_task(own())
    await ready

    async def close() -> None:
        stop.set()
        await task

    closers.append(close)
    return mesh


@pytest.fixture(scope="module")
def stubs(loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, Any]]:
    """The stubs under test, keyed by chain name, and the servers behind them."""
    servers: list[Any] = []
    closers: list[Any] = []

    async def plain(name: str, server_side: list[Any], client_side: list[Any] | None) -> None:
        server, port = await _server(server_side)
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=client_side)
        closers.append(channel.close)
        result[name] = health_pb2_grpc.HealthStub(channel)

    async def full() -> None:
        observer = _observer()
        server, port = await _server([ServerPolicy(observer=observer).aio_interceptor()])
        servers.append(server)
        watch = _Watch([Endpoint(host="127.0.0.1", port=port)])
        policy = _client_policy(observer)
        mesh = MeshChannel(_mesh_config(), watch, policy=policy, breaker=CircuitBreaker)
        result["meshkit"] = health_pb2_grpc.HealthStub(await _owned(mesh, closers))

    async def three() -> None:
        ports = []
        for _ in range(3):
            server, port = await _server([])
            servers.append(server)
            ports.append(port)
        targets = ",".join(f"127.0.0.1:{p}" for p in ports)
        options = [("grpc.lb_policy_name", "round_robin")]
        channel = grpc.aio.insecure_channel(f"ipv4:{targets}", options=options)
        closers.append(channel.close)
        result["round_robin"] = health_pb2_grpc.HealthStub(channel)
        watch = _Watch([Endpoint(host="127.0.0.1", port=p) for p in ports])
        mesh3 = await _owned(MeshChannel("health", watch), closers)
        result["meshchannel-3"] = health_pb2_grpc.HealthStub(mesh3)

    async def setup() -> None:
        await plain("bare", [], None)
        await full()
        await plain("meshkit-server-only", [ServerPolicy().aio_interceptor()], None)
        await plain("meshkit-client-only", [], ClientPolicy().aio_interceptors())
        await plain("grpc-interceptor", [_Noop()], None)
        otel_server = aio_server_interceptor()  # type: ignore[no-untyped-call]
        otel_client = aio_client_interceptors()  # type: ignore[no-untyped-call]
        await plain("opentelemetry", [otel_server], otel_client)
        await three()

    result: dict[str, Any] = {}
    loop.run_until_complete(setup())
    yield result

    async def teardown() -> None:
        for close in closers:
            await close()
        for server in servers:
            await server.stop(None)

    loop.run_until_complete(teardown())


async def _sequential(stub: Any, deadline: bool) -> None:
    for _ in range(N):
        if deadline:
            async with Timeout(5):
                await stub.Check(REQUEST)
        else:
            await stub.Check(REQUEST)


async def _concurrent(stub: Any, deadline: bool) -> None:
    async def worker() -> None:
        for _ in range(N // CONCURRENCY):
            if deadline:
                async with Timeout(5):
                    await stub.Check(REQUEST)
            else:
                await stub.Check(REQUEST)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def _run(benchmark: Any, loop: asyncio.AbstractEventLoop, body: Callable[[], Any]) -> None:
    loop.run_until_complete(body())  # warm up connections
    cpu: list[float] = []

    def round_() -> None:
        # CPU time of this process (client and server both live here): unlike wall time, it
        # hardly moves when other jobs share the machine's cores.
        start = time.process_time()
        loop.run_until_complete(body())
        cpu.append(time.process_time() - start)

    benchmark.pedantic(round_, rounds=15, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_call"] = round(median / N * 1e6, 1)
    benchmark.extra_info["calls_per_s"] = round(N / median)
    benchmark.extra_info["cpu_us_per_call"] = round(sorted(cpu)[len(cpu) // 2] / N * 1e6, 1)


CHAINS = [
    "bare",
    "meshkit",
    "meshkit-server-only",
    "meshkit-client-only",
    "grpc-interceptor",
    "opentelemetry",
]


@pytest.mark.parametrize("chain", CHAINS)
def test_unary_latency(
    benchmark: Any, loop: asyncio.AbstractEventLoop, stubs: dict[str, Any], chain: str
) -> None:
    """Sequential unary calls: the per-call time is a round-trip latency."""
    benchmark.group = "grpc-unary-latency"
    stub = stubs[chain]
    _run(benchmark, loop, lambda: _sequential(stub, deadline=chain == "meshkit"))


@pytest.mark.parametrize("chain", CHAINS)
def test_unary_throughput(
    benchmark: Any, loop: asyncio.AbstractEventLoop, stubs: dict[str, Any], chain: str
) -> None:
    """Unary calls, CONCURRENCY at a time: calls per second."""
    benchmark.group = "grpc-unary-throughput"
    stub = stubs[chain]
    _run(benchmark, loop, lambda: _concurrent(stub, deadline=chain == "meshkit"))


@pytest.mark.parametrize("chain", ["round_robin", "meshchannel-3"])
def test_balancing_throughput(
    benchmark: Any, loop: asyncio.AbstractEventLoop, stubs: dict[str, Any], chain: str
) -> None:
    """Three servers: MeshChannel (least-request, per call) against grpc's round_robin."""
    benchmark.group = "grpc-balancing-throughput"
    stub = stubs[chain]
    _run(benchmark, loop, lambda: _concurrent(stub, deadline=False))
