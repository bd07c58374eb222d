"""Discovery on a real Consul dev agent: propagation latency, idle cost, concurrent watches.

Peers in the same run, on the same agent:

* `hand-written blocking loop`: python-consul2's own `health.service(index=..., wait=...)` in a
  thread, updating a balancer: the floor a careful user would write by hand;
* `polling every 1 s`: python-consul2's `health.service()` without an index, once a second:
  what a watch without blocking queries costs and lags.

Latency is measured from the moment a check's state change is sent to the agent
(`PUT /v1/agent/check/fail|pass`) to the moment the bound balancer holds the new snapshot.
Each figure goes to `extra_info` and is printed (`-s`).

Run: .venv/bin/pytest benchmarks/test_discovery.py --benchmark-only -s
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from meshkit.balancing import Endpoint, RoundRobin
from meshkit.discovery import ConsulRegistry, ServiceRegistration, TtlCheck

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from consul_agents import ConsulAgent, consul_binary, dev_agent

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

FLIPS = 60
SERVICE = "bench"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    binary = consul_binary()
    if binary is None:
        pytest.skip("no consul binary (../shared/tools/install-consul .tools/consul)")
    # Consul accepts 200 HTTP connections per client IP by default; every watch holds one.
    limits = ["-hcl", "limits { http_max_conns_per_client = 4096 }"]
    with dev_agent(binary, tmp_path_factory.mktemp("consul"), limits) as running:
        yield running


def report(*parts: object) -> None:
    """Print a result line (shown with `-s`)."""
    print(*parts)  # noqa: T201 - the benchmark's output is its point


def _client(agent: ConsulAgent, timeout: float) -> Any:
    import consul  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return consul.Consul(host="127.0.0.1", port=agent.ports["http"], timeout=timeout)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000}


def _flip_and_time(agent: ConsulAgent, check_id: str, holds: Callable[[bool], bool]) -> list[float]:
    """Flip the check FLIPS times; return the lag until `holds(passing)` for each flip."""
    lags = []
    passing = True
    for _ in range(FLIPS):
        passing = not passing
        # From the moment the change is sent: the agent may wake a blocking query before
        # its answer to the PUT reaches us.
        sent = time.monotonic()
        agent.put(f"/v1/agent/check/{'pass' if passing else 'fail'}/{check_id}")
        deadline = sent + 10
        while not holds(passing) and time.monotonic() < deadline:
            time.sleep(0.0002)
        lags.append(time.monotonic() - sent)
        time.sleep(0.05)
    return lags


def _registered(agent: ConsulAgent, port: int) -> ServiceRegistration:
    service = ServiceRegistration(
        name=SERVICE, port=port, address="127.0.0.1", check=TtlCheck(ttl=3600)
    )
    body = service.payload()
    body["Check"]["Status"] = "passing"  # type: ignore[index]
    agent.put("/v1/agent/service/register", body)
    return service


def _meshkit_lags(agent: ConsulAgent, service: ServiceRegistration) -> list[float]:
    balancer = RoundRobin([])
    lags: list[float] = []

    async def main() -> None:
        registry = ConsulRegistry(addresses=[agent.address], wait=30, min_interval=0.0)
        async with registry.watch(SERVICE) as watch:
            watch.bind(balancer)

            def holds(passing: bool) -> bool:
                return bool(balancer.endpoints) == passing

            lags.extend(
                await anyio.to_thread.run_sync(_flip_and_time, agent, service.check_id, holds)
            )

    anyio.run(main)
    return lags


def _peer_lags(agent: ConsulAgent, service: ServiceRegistration, *, blocking: bool) -> list[float]:
    client = _client(agent, timeout=40)
    balancer = RoundRobin([])
    stop = threading.Event()

    def loop() -> None:
        index = None
        while not stop.is_set():
            if blocking:
                index, nodes = client.health.service(SERVICE, index=index, wait="30s", passing=True)
            else:
                _, nodes = client.health.service(SERVICE, passing=True)
            balancer.update(
                [Endpoint(host=n["Service"]["Address"], port=n["Service"]["Port"]) for n in nodes]
            )
            if not blocking:
                stop.wait(1.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        return _flip_and_time(agent, service.check_id, lambda p: bool(balancer.endpoints) == p)
    finally:
        stop.set()
        agent.put(f"/v1/agent/check/pass/{service.check_id}")  # wake the blocking peer


@pytest.mark.benchmark(group="discovery-latency")
def test_propagation_latency(agent: ConsulAgent, benchmark: Any) -> None:
    service = _registered(agent, 7001)
    results: dict[str, dict[str, float]] = {}

    def run() -> None:
        results["meshkit watch"] = _percentiles(_meshkit_lags(agent, service))
        results["hand-written blocking loop"] = _percentiles(
            _peer_lags(agent, service, blocking=True)
        )
        results["polling every 1 s"] = _percentiles(_peer_lags(agent, service, blocking=False))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(results)
    floor = results["hand-written blocking loop"]["p50_ms"]
    report("\nhealth change -> balancer snapshot, ms over", FLIPS, "flips")
    for name, figures in results.items():
        report(f"  {name:28s} p50 {figures['p50_ms']:8.2f}  p99 {figures['p99_ms']:8.2f}"
              f"  p50 vs floor {figures['p50_ms'] / floor:5.2f}x")  # fmt: skip


@pytest.mark.benchmark(group="discovery-idle")
def test_idle_requests_per_minute(agent: ConsulAgent, benchmark: Any) -> None:
    _registered(agent, 7002)
    observe, wait = 20.0, 5.0
    counts: dict[str, float] = {}

    async def main() -> None:
        registry = ConsulRegistry(addresses=[agent.address], wait=wait)
        async with registry.watch(SERVICE):
            await anyio.sleep(1)
            before = registry.statistics().queries
            await anyio.sleep(observe)
            counts["queries"] = registry.statistics().queries - before

    benchmark.pedantic(lambda: anyio.run(main), rounds=1, iterations=1)
    per_minute = counts["queries"] * 60 / observe
    benchmark.extra_info.update({"wait_s": wait, "requests_per_minute": per_minute})
    report(f"\nidle watch, wait={wait:g}s: {per_minute:.1f} requests/min "
          f"(=> ~{per_minute * wait / 60:.1f}/min at the default wait=60s); "
          "polling every 1 s: 60/min")  # fmt: skip


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # pragma: no cover


@pytest.mark.benchmark(group="discovery-watches")
@pytest.mark.parametrize("watches", [100, 1000])
def test_concurrent_watches(agent: ConsulAgent, benchmark: Any, watches: int) -> None:
    _registered(agent, 7003)
    figures: dict[str, float] = {}

    async def main() -> None:
        registry = ConsulRegistry(addresses=[agent.address], wait=30, max_threads=watches + 8)
        threads, rss = threading.active_count(), _rss_kib()
        start = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            opened = [
                await stack.enter_async_context(registry.watch(SERVICE)) for _ in range(watches)
            ]
            figures["open_s"] = time.monotonic() - start
            await anyio.sleep(2)  # every watch is now parked in its blocking query
            figures["threads_per_watch"] = (threading.active_count() - threads) / watches
            figures["rss_kib_per_watch"] = (_rss_kib() - rss) / watches
            assert all(w.endpoints for w in opened)

    benchmark.pedantic(lambda: anyio.run(main), rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    report(f"\n{watches} watches: opened in {figures['open_s']:.2f}s, "
          f"{figures['threads_per_watch']:.2f} threads and "
          f"{figures['rss_kib_per_watch']:.0f} KiB RSS per watch")  # fmt: skip
