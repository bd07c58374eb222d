"""`ConsulRegistry`: registrations and watches on Consul agents, driven by the pure cores.

The `consul` client is synchronous; every call runs in an anyio worker thread (asyncio and
trio alike). Blocking queries run under the registry's own `CapacityLimiter`, so hundreds of
long queries never starve `anyio.to_thread`'s default pool that the rest of the process uses;
registration calls (short, and due on time for a TTL) run in that default pool, so that a
full `max_threads` never delays a heartbeat.
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import (
    ConfigurationError,
    DiscoveryError,
    RegistryAccessDeniedError,
    RegistryNotFoundError,
    RegistryRequestError,
)
from meshkit._validate import in_range, instance_of, require
from meshkit.discovery._agent import Agent, AgentCall, parse_agent
from meshkit.discovery._config import (
    ServiceRegistration,
    TtlCheck,
    WatchQuery,
    check_service_id,
    check_service_name,
    check_text,
    consul_duration,
)
from meshkit.discovery._core import AgentBackoff, LeaseAction, LeaseCore, WatchCore
from meshkit.discovery._registry import Registered, Watch

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["ConsulRegistry", "RegistryStatistics"]

_T = TypeVar("_T")
# Errors that retrying or another agent cannot fix: surfaced at once on entry.
_PERMANENT = (RegistryAccessDeniedError, RegistryRequestError)


def _to_agents(value: object) -> tuple[Agent, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, tuple | list):
        raise ConfigurationError("addresses", value, "must be a list of addresses")
    agents = tuple(parse_agent(item) for item in items)
    require(bool(agents), "addresses", value, "must not be empty")
    return agents


def _verify(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        check_text(attribute.name, value, allow_empty=False)


def _cert(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # requests takes a PEM path, or a (certificate, key) pair of paths.
    paths: tuple[object, ...] = value if isinstance(value, tuple) else (value,)
    if value is not None:
        ok = not isinstance(value, tuple) or len(value) == 2  # noqa: PLR2004 - cert and key
        require(ok, attribute.name, value, "must be a path or a (cert, key) pair")
        for path in paths:
            check_text(attribute.name, path, allow_empty=False)


def _token(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        ok = isinstance(value, str) and value.isascii() and value.isprintable()
        require(ok, attribute.name, "<redacted>", "must be printable ASCII")


@attrs.frozen
class RegistryStatistics:
    """How many requests a `ConsulRegistry` sent, and how many failed."""

    requests: int
    """Requests sent to agents (all kinds)."""
    queries: int
    """Of which health queries made by watches."""
    errors: int
    """Requests that failed (unreachable agent, error status)."""


@final
@attrs.define(eq=False, kw_only=True)
class ConsulRegistry:
    """Register services in Consul and watch their healthy instances.

    Attributes:
        addresses: Agent addresses in failover order (`host:port`, `https://host:port`).
            Put the local agent first; list more (or the servers) to survive its loss.
        token: The ACL token, or None.
        verify: TLS: verify the agent's certificate (True), not (False), or a CA bundle path.
        cert: TLS client certificate: a PEM path, or a `(cert, key)` pair of paths.
        wait: Seconds a blocking query may wait for a change (Consul allows up to 600).
        request_timeout: Seconds for a non-blocking request (and the connect of any request).
        min_interval: Least seconds between two queries of one watch (the rate limit).
        backoff: The pause after errors, once every agent failed in a row.
        max_threads: Worker threads for the watches' queries (one per watch); registration
            calls are short and use anyio's default thread pool.
        clock: The clock (sleeps, rate limit).
        rng: Random source of the backoff jitter.

    Raises:
        ConfigurationError: If an address is malformed or a number out of range.
    """

    addresses: tuple[Agent, ...] = attrs.field(default=("127.0.0.1:8500",), converter=_to_agents)
    token: str | None = attrs.field(default=None, validator=_token, repr=False)
    verify: bool | str = attrs.field(default=True, validator=_verify)
    cert: str | tuple[str, str] | None = attrs.field(default=None, validator=_cert)
    wait: float = attrs.field(default=60.0, validator=[instance_of(int, float), in_range(1, 600)])
    request_timeout: float = attrs.field(
        default=5.0, validator=[instance_of(int, float), in_range(0.01, 600)]
    )
    min_interval: float = attrs.field(
        default=0.1, validator=[instance_of(int, float), in_range(0, 60)]
    )
    backoff: AgentBackoff = attrs.field(factory=AgentBackoff, validator=instance_of(AgentBackoff))
    max_threads: int = attrs.field(default=64, validator=[instance_of(int), in_range(1, 10_000)])
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    rng: random.Random = attrs.field(
        factory=random.Random, repr=False, validator=instance_of(random.Random)
    )
    _limiter: anyio.CapacityLimiter = attrs.field(init=False)
    _counts: list[int] = attrs.field(init=False, factory=lambda: [0, 0, 0])

    def __attrs_post_init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(self.max_threads)

    def statistics(self) -> RegistryStatistics:
        """Return the request counters."""
        return RegistryStatistics(*self._counts)

    # ------------------------------------------------------------ registration

    @contextlib.asynccontextmanager
    async def register(self, registration: ServiceRegistration) -> AsyncIterator[Registered]:
        """Register `registration` while the block runs; deregister it on exit.

        An owned task keeps it alive: a TTL check is marked passing every `ttl / 3`; other
        checks verify every `resync_interval` that the agent still knows the service. An
        agent that forgot it (restarted) gets it again; an unreachable agent is replaced by
        the next address. Exit (even by cancellation, even during entry) waits for a call in
        flight (bounded by `request_timeout`), then deregisters from every agent sent
        the registration, shielded from cancellation.

        Raises:
            ConfigurationError: If `registration` is not a `ServiceRegistration`, or has no
                `address` while `addresses` lists several agents.
            DiscoveryError: If no agent accepts the registration on entry (a subclass).
        """
        ok = isinstance(registration, ServiceRegistration)
        require(ok, "registration", registration, "must be a ServiceRegistration")
        # An empty address is filled in by the agent with its node's address: after a
        # failover to another agent, clients would be sent to that other node.
        ok = bool(registration.address) or len(self.addresses) == 1
        require(ok, "address", registration.address, "must be set when several agents serve")
        check = registration.check
        interval = check.heartbeat if isinstance(check, TtlCheck) else registration.resync_interval
        call = self._caller(wait=0.0)
        core = LeaseCore(len(self.addresses), interval, self.backoff)
        handle = Registered(registration)
        try:
            await self._first(lambda: self._lease_attempt(call, core, handle), core.failed)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep, call, core, handle)
                yield handle
                tg.cancel_scope.cancel()
        finally:
            # Shielded, and reached even when entry was cancelled or failed: every agent that
            # was sent the registration may hold it. Each call ends within request_timeout.
            with anyio.CancelScope(shield=True):
                await self._release(call, core, registration.id)
            call.interrupt()

    async def deregister(self, service_id: str) -> None:
        """Remove an instance from the first agent that answers (a no-op for an unknown id).

        Raises:
            ConfigurationError: If `service_id` is not text that fits in a URL path segment.
            DiscoveryError: If no agent answers (the last agent's error).
        """
        check_service_id("service_id", service_id)
        call = self._caller(wait=0.0)
        path = f"/v1/agent/service/deregister/{service_id}"
        core = LeaseCore(len(self.addresses), 1.0, self.backoff)

        async def attempt() -> None:
            # An agent that does not know the id answers 404 (500 on Consul 1.8) when ACLs
            # are on, and nothing otherwise: either way, there is nothing to remove.
            with contextlib.suppress(RegistryNotFoundError):
                await self._lease_call(call.put, core.agent, path)

        try:
            await self._first(attempt, core.failed)
        finally:
            call.interrupt()

    async def _keep(self, call: AgentCall, core: LeaseCore, handle: Registered) -> None:
        delay = core.interval
        while True:
            await self.clock.sleep(delay)
            try:
                await self._lease_attempt(call, core, handle)
                delay = core.interval
            except RegistryNotFoundError:
                delay = core.forgotten()
            except DiscoveryError:
                delay = core.failed(self.rng.random())

    async def _lease_attempt(self, call: AgentCall, core: LeaseCore, handle: Registered) -> None:
        registration = handle.registration
        agent = core.agent
        if core.action() is LeaseAction.REGISTER:
            core.registering()
            body = self._body(handle)
            await self._lease_call(call.put, agent, "/v1/agent/service/register", body)
        elif isinstance(registration.check, TtlCheck):
            await self._lease_call(call.put, agent, f"/v1/agent/check/pass/{registration.check_id}")
        else:
            await self._lease_call(call.get, agent, f"/v1/agent/service/{registration.id}")
        core.succeeded()
        handle.agent = self.addresses[core.agent].url
        handle.registrations = core.registrations

    @staticmethod
    def _body(handle: Registered) -> dict[str, object]:
        body = handle.registration.payload()
        check = body.get("Check")
        if isinstance(check, dict) and "TTL" in check:
            check["Status"] = "passing"  # healthy from the start: the first beat is ttl/3 away
        return body

    async def _release(self, call: AgentCall, core: LeaseCore, service_id: str) -> None:
        # Deregister from every agent that may hold it (a failover may have left a copy
        # behind); an agent that cannot be reached is left to DeregisterCriticalServiceAfter.
        for agent in sorted(core.holders):
            with contextlib.suppress(DiscoveryError):
                await self._lease_call(
                    call.put, agent, f"/v1/agent/service/deregister/{service_id}"
                )

    # ------------------------------------------------------------ watches

    @contextlib.asynccontextmanager
    async def watch(self, service: str, query: WatchQuery | None = None) -> AsyncIterator[Watch]:
        """Follow the healthy instances of `service` with blocking queries.

        Entry waits for the first answer, so the watch (and a balancer bound to it) starts
        with the current instances. Afterwards a failing agent leaves the last good snapshot
        in place (`watch.stale`) while the watch retries the next agents, then backs off.

        Raises:
            ConfigurationError: If `service` is not a DNS label or `query` not a `WatchQuery`.
            DiscoveryError: If no agent answers the first query (a subclass).
        """
        check_service_name("service", service)
        query = WatchQuery() if query is None else query
        require(isinstance(query, WatchQuery), "query", query, "must be a WatchQuery")
        call = self._caller(wait=self.wait)
        core = WatchCore(len(self.addresses), query, self.backoff, self.min_interval)
        watch = Watch(service)

        def failed(draw: float) -> float:
            return core.failed(self.clock.now(), draw)

        try:
            await self._first(lambda: self._query(call, core, watch), failed)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._follow, call, core, watch)
                yield watch
                tg.cancel_scope.cancel()
        finally:
            call.interrupt()  # wakes the abandoned blocking query's thread

    async def _follow(self, call: AgentCall, core: WatchCore, watch: Watch) -> None:
        while True:
            await self.clock.sleep(core.plan(self.clock.now()).delay)
            try:
                await self._query(call, core, watch)
            except DiscoveryError:
                watch.mark_stale(stale=True)
                core.failed(self.clock.now(), self.rng.random())

    async def _query(self, call: AgentCall, core: WatchCore, watch: Watch) -> None:
        plan = core.plan(self.clock.now())
        params = [("passing", "1")] if core.query.passing_only else []
        if plan.index > 0:
            params += [("index", str(plan.index)), ("wait", consul_duration(self.wait))]
        core.started(self.clock.now())
        self._counts[1] += 1
        path = f"/v1/health/service/{watch.service}"
        answer = await self._query_call(call.get, plan.agent, path, params)
        snapshot = core.succeeded(answer.consul_index, answer.body)
        watch.mark_stale(stale=False)
        if snapshot is not None:
            watch.publish(snapshot)

    # ------------------------------------------------------------ plumbing

    def _caller(self, *, wait: float) -> AgentCall:
        return AgentCall(
            self.addresses, self.token, self.request_timeout, wait, self.verify, self.cert
        )

    async def _lease_call(self, fn: Callable[..., _T], *args: object) -> _T:
        # Not abandoned on cancel: a registration sent must be known to have landed (or not)
        # before the deregistration that cleans it up is sent, or the two could cross. The
        # call ends within request_timeout, so cancellation is delayed at most that long.
        # anyio's default limiter, not the watches' one: a heartbeat queued behind
        # `max_threads` blocking queries would wait up to `wait` and let its TTL expire.
        return await self._run(fn, *args, limiter=None, abandon_on_cancel=False)

    async def _query_call(self, fn: Callable[..., _T], *args: object) -> _T:
        # A blocking query cannot be interrupted: a cancelled watch abandons its thread, and
        # `AgentCall.interrupt()` shuts its socket down so that it ends at once.
        return await self._run(fn, *args, limiter=self._limiter, abandon_on_cancel=True)

    async def _run(
        self,
        fn: Callable[..., _T],
        *args: object,
        limiter: anyio.CapacityLimiter | None,
        abandon_on_cancel: bool,
    ) -> _T:
        self._counts[0] += 1
        try:
            return await anyio.to_thread.run_sync(
                fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel
            )
        except DiscoveryError:
            self._counts[2] += 1
            raise

    async def _first(self, attempt: Callable[[], Any], failed: Callable[[float], float]) -> None:
        """Run `attempt` against each agent in turn until one succeeds; raise the last error."""
        remaining = len(self.addresses)
        while True:
            remaining -= 1
            try:
                await attempt()
            except _PERMANENT:
                raise
            except DiscoveryError:
                failed(self.rng.random())
                if not remaining:
                    raise
            else:
                return
