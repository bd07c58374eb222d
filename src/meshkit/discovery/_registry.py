"""The `Registry` protocol, the `Watch` every registry hands out, and `StaticRegistry`."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import anyio
import attrs

from meshkit._validate import require
from meshkit.balancing import Endpoint, LoadBalancer
from meshkit.discovery._config import (
    ServiceRegistration,
    WatchQuery,
    check_service_id,
    check_service_name,
)
from meshkit.discovery._core import endpoints_from_health

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

__all__ = ["Registered", "Registry", "StaticRegistry", "Watch"]


@final
@attrs.define(eq=False)
class Registered:
    """A live registration, as `register()` yields it.

    Attributes:
        registration: What was registered.
        agent: The address of the agent that holds the registration now.
        registrations: How many times it was (re-)registered: 1, plus one per agent restart
            that forgot it or per failover to another agent.
    """

    registration: ServiceRegistration
    agent: str = ""
    registrations: int = 0


@final
@attrs.define(eq=False)
class Watch:
    """The current healthy endpoints of one service, kept up to date by its registry.

    Read `endpoints` at any time (a frozen tuple, swapped whole); `bind()` a balancer to have
    every change swapped into it; iterate (`async for endpoints in watch`) to follow changes.
    When the registry fails, the last good snapshot stays and `stale` turns true until an
    answer arrives again.

    Attributes:
        service: The watched service's name.
    """

    service: str
    _endpoints: tuple[Endpoint, ...] = attrs.field(default=(), init=False)
    _version: int = attrs.field(default=0, init=False)
    _stale: bool = attrs.field(default=False, init=False)
    _changed: anyio.Event = attrs.field(factory=anyio.Event, init=False)
    _balancers: list[LoadBalancer] = attrs.field(factory=list, init=False)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The latest snapshot (empty until the first answer)."""
        return self._endpoints

    @property
    def version(self) -> int:
        """How many snapshots were published (0 before the first)."""
        return self._version

    @property
    def stale(self) -> bool:
        """Whether the last query failed (the snapshot is the last good one)."""
        return self._stale

    def bind(self, balancer: LoadBalancer) -> None:
        """Swap every snapshot into `balancer` with its atomic `update()`, starting now.

        Raises:
            ConfigurationError: If `balancer` has no `update()` method.
        """
        require(isinstance(balancer, LoadBalancer), "balancer", balancer, "must be a LoadBalancer")
        if self._version:
            balancer.update(self._endpoints)
        self._balancers.append(balancer)

    def unbind(self, balancer: LoadBalancer) -> None:
        """Stop updating `balancer` (no effect if it is not bound)."""
        with contextlib.suppress(ValueError):
            self._balancers.remove(balancer)

    async def wait_changed(self, after: int) -> tuple[Endpoint, ...]:
        """Wait until `version > after`, then return the snapshot."""
        while self._version <= after:
            await self._changed.wait()
        return self._endpoints

    def __aiter__(self) -> _Changes:
        """Yield the current snapshot (once there is one), then each new one.

        A slow reader skips intermediate snapshots: it always gets the latest. (An iterator
        object rather than an async generator, so leaving the loop needs no `aclose()`.)
        """
        return _Changes(self)

    def publish(self, endpoints: tuple[Endpoint, ...]) -> None:
        """Swap in a new snapshot and update the bound balancers (called by the registry)."""
        self._endpoints = endpoints
        self._version += 1
        self._stale = False
        for balancer in tuple(self._balancers):
            balancer.update(endpoints)
        self._changed.set()
        self._changed = anyio.Event()

    def mark_stale(self, *, stale: bool) -> None:
        """Record whether the registry is failing (called by the registry)."""
        self._stale = stale


@final
@attrs.define(eq=False)
class _Changes:
    """An `async for` over a watch's snapshots."""

    watch: Watch
    seen: int = 0

    def __aiter__(self) -> _Changes:
        return self

    async def __anext__(self) -> tuple[Endpoint, ...]:
        endpoints = await self.watch.wait_changed(self.seen)
        self.seen = self.watch.version
        return endpoints


@runtime_checkable
class Registry(Protocol):
    """Where services register and clients find them (Consul, or a static list in tests)."""

    def register(
        self, registration: ServiceRegistration
    ) -> AbstractAsyncContextManager[Registered]:
        """Register an instance for the duration of the `async with` block.

        Raises:
            DiscoveryError: If the registry refuses or cannot be reached at entry.
        """
        ...

    async def deregister(self, service_id: str) -> None:
        """Remove an instance by id (a no-op for an unknown id).

        Raises:
            ConfigurationError: If `service_id` cannot be an instance's id.
            DiscoveryError: If the registry refuses or cannot be reached.
        """
        ...

    def watch(
        self, service: str, query: WatchQuery | None = None
    ) -> AbstractAsyncContextManager[Watch]:
        """Follow the healthy instances of `service` for the duration of the block.

        Raises:
            DiscoveryError: If no agent answers the first query.
        """
        ...


def _entry(registration: ServiceRegistration, status: str) -> dict[str, object]:
    """Build a health-endpoint entry for `registration`, so both registries share one filter."""
    return {
        "Node": {"Address": "127.0.0.1"},
        "Service": registration.payload() | {"Address": registration.address or "127.0.0.1"},
        "Checks": [{"Status": status}],
    }


@final
@attrs.define(eq=False)
class StaticRegistry:
    """An in-memory registry for tests, demos and fixed deployments without Consul.

    Registrations appear to watches at once; `set_status()` plays the health checks' part.
    Watches apply the same filters (passing only, tags, meta) and build endpoints the same way
    as `ConsulRegistry`'s.
    """

    _services: dict[str, tuple[ServiceRegistration, str]] = attrs.field(factory=dict, init=False)
    _watches: list[tuple[Watch, WatchQuery]] = attrs.field(factory=list, init=False)

    @contextlib.asynccontextmanager
    async def register(self, registration: ServiceRegistration) -> AsyncIterator[Registered]:
        """Register `registration` (passing) until the block exits.

        Raises:
            ConfigurationError: If `registration` is not a `ServiceRegistration`.
        """
        self.add(registration)
        try:
            yield Registered(registration, agent="static", registrations=1)
        finally:
            await self.deregister(registration.id)

    def add(self, registration: ServiceRegistration, status: str = "passing") -> None:
        """Register (or replace) an instance without a block, with a check `status`.

        Raises:
            ConfigurationError: If `registration` is not a `ServiceRegistration` or `status`
                is not passing, warning or critical.
        """
        ok = isinstance(registration, ServiceRegistration)
        require(ok, "registration", registration, "must be a ServiceRegistration")
        ok = status in {"passing", "warning", "critical"}
        require(ok, "status", status, "must be passing, warning or critical")
        self._services[registration.id] = (registration, status)
        self._notify()

    def set_status(self, service_id: str, status: str) -> None:
        """Set an instance's check status, as Consul's health checks would.

        Raises:
            ConfigurationError: If the id is unknown or `status` is invalid.
        """
        require(service_id in self._services, "service_id", service_id, "is not registered")
        self.add(self._services[service_id][0], status)

    async def deregister(self, service_id: str) -> None:
        """Remove an instance (a no-op for an unknown id).

        Raises:
            ConfigurationError: If `service_id` is one `ConsulRegistry` would refuse.
        """
        check_service_id("service_id", service_id)
        if self._services.pop(service_id, None) is not None:
            self._notify()
        await anyio.lowlevel.checkpoint()

    @contextlib.asynccontextmanager
    async def watch(self, service: str, query: WatchQuery | None = None) -> AsyncIterator[Watch]:
        """Follow `service`: the watch holds its first snapshot on entry.

        Raises:
            ConfigurationError: If `service` is not a DNS label or `query` not a `WatchQuery`
                (as `ConsulRegistry` would refuse them).
        """
        check_service_name("service", service)
        query = WatchQuery() if query is None else query
        require(isinstance(query, WatchQuery), "query", query, "must be a WatchQuery")
        watch = Watch(service)
        watch.publish(self._snapshot(service, query))
        self._watches.append((watch, query))
        try:
            yield watch
        finally:
            self._watches.remove((watch, query))

    def _snapshot(self, service: str, query: WatchQuery) -> tuple[Endpoint, ...]:
        entries = [_entry(r, s) for r, s in self._services.values() if r.name == service]
        return endpoints_from_health(entries, query)

    def _notify(self) -> None:
        for watch, query in self._watches:
            snapshot = self._snapshot(watch.service, query)
            if snapshot != watch.endpoints:
                watch.publish(snapshot)
