"""The discovery API as a user writes it, checked by mypy only (never collected by pytest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshkit import DiscoveryError
from meshkit.discovery import (
    AgentBackoff,
    ConsulRegistry,
    GrpcCheck,
    HttpCheck,
    Registered,
    Registry,
    RegistryStatistics,
    ServiceRegistration,
    StaticRegistry,
    TtlCheck,
    Watch,
    WatchQuery,
)

if TYPE_CHECKING:
    from meshkit.balancing import Endpoint, LoadBalancer


async def discovery_usage(registry: Registry, balancer: LoadBalancer) -> None:
    """Register, watch, bind: the calls a service and its clients make."""
    registration = ServiceRegistration(
        name="orders", port=8080, tags=["v2"], meta={"zone": "a"}, check=TtlCheck(ttl=10)
    )
    query = WatchQuery(tags=["v2"], passing_only=False)
    async with registry.register(registration) as handle, registry.watch("orders", query) as w:
        registered: Registered = handle
        watch: Watch = w
        watch.bind(balancer)
        current: tuple[Endpoint, ...] = watch.endpoints
        version: int = watch.version
        changed: tuple[Endpoint, ...] = await watch.wait_changed(version)
        async for snapshot in watch:
            current = snapshot
            break
        assert registered.registrations >= 1
        assert current == changed or not watch.stale
    try:
        await registry.deregister(registration.id)
    except DiscoveryError as exc:
        where: str = exc.agent + exc.path
        assert where


def configs() -> None:
    """Build every config value."""
    registries: list[Registry] = [
        StaticRegistry(),
        ConsulRegistry(
            addresses=["127.0.0.1:8500"],
            token="t",  # noqa: S106 - a placeholder
            wait=30.0,
            backoff=AgentBackoff(base=0.1),
        ),
    ]
    checks = [HttpCheck(url="http://h/health"), GrpcCheck(target="h:1"), TtlCheck(ttl=5)]
    stats: RegistryStatistics = ConsulRegistry().statistics()
    assert registries
    assert checks
    assert stats.requests >= 0
