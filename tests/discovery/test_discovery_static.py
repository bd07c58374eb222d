"""StaticRegistry and Watch: snapshots, bound balancers, iteration, the Registry protocol."""

from __future__ import annotations

import anyio
import pytest

from meshkit import ConfigurationError
from meshkit.balancing import Endpoint, RoundRobin, WeightedRoundRobin
from meshkit.discovery import (
    ConsulRegistry,
    Registry,
    ServiceRegistration,
    StaticRegistry,
    Watch,
    WatchQuery,
)

pytestmark = pytest.mark.anyio


def now(source: Watch | RoundRobin | WeightedRoundRobin) -> tuple[Endpoint, ...]:
    """Read the current snapshot (a call, so mypy does not narrow the property across steps)."""
    return source.endpoints


def instance(port: int, **kwargs: object) -> ServiceRegistration:
    """Return an `orders` instance on 127.0.0.1:`port`."""
    return ServiceRegistration(name="orders", address="127.0.0.1", port=port, **kwargs)  # type: ignore[arg-type]


class TestStaticRegistry:
    def test_both_registries_are_registries(self) -> None:
        """StaticRegistry and ConsulRegistry satisfy the Registry protocol."""
        assert isinstance(StaticRegistry(), Registry)
        assert isinstance(ConsulRegistry(), Registry)

    async def test_register_watch_and_leave(self) -> None:
        """Registrations show up in watches at once and leave on exit."""
        registry = StaticRegistry()
        balancer = RoundRobin([])
        async with registry.watch("orders") as watch:
            watch.bind(balancer)
            assert watch.version == 1
            async with registry.register(instance(1, weight=3)) as handle:
                assert handle.registrations == 1
                assert now(watch) == (Endpoint(host="127.0.0.1", port=1, weight=3),)
                assert now(balancer) == now(watch)
            assert now(watch) == ()
            assert now(balancer) == ()

    async def test_status_and_filters(self) -> None:
        """Critical instances leave; warning ones stay when asked; tags and meta filter."""
        registry = StaticRegistry()
        registry.add(instance(1, tags=["v2"], meta={"zone": "a"}))
        registry.add(instance(2, tags=["v1"], meta={"zone": "b"}, warning_weight=0))
        passing = WatchQuery()
        lenient = WatchQuery(passing_only=False)
        async with (
            registry.watch("orders", passing) as strict,
            registry.watch("orders", lenient) as loose,
            registry.watch("orders", WatchQuery(tags=["v2"], meta={"zone": "a"})) as v2,
        ):
            registry.set_status("orders-127.0.0.1-2", "warning")
            assert [e.port for e in strict.endpoints] == [1]
            assert [(e.port, e.weight) for e in loose.endpoints] == [(1, 1), (2, 0)]
            assert [e.port for e in v2.endpoints] == [1]
            registry.set_status("orders-127.0.0.1-1", "critical")
            assert strict.endpoints == ()
            await registry.deregister("orders-127.0.0.1-2")
            await registry.deregister("unknown")
            assert loose.endpoints == ()

    async def test_bad_arguments(self) -> None:
        """Bad arguments raise ConfigurationError naming the field."""
        registry = StaticRegistry()
        with pytest.raises(ConfigurationError, match="registration"):
            registry.add("orders")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="status"):
            registry.add(instance(1), "sick")
        with pytest.raises(ConfigurationError, match="service_id"):
            registry.set_status("nope", "passing")
        with pytest.raises(ConfigurationError, match="query"):
            async with registry.watch("orders", "all"):  # type: ignore[arg-type]
                pass  # pragma: no cover

    @pytest.mark.parametrize("service", ["not a name", "\ud800", "", 5])
    async def test_refuses_what_consul_refuses(self, service: object) -> None:
        """A service name ConsulRegistry refuses is refused here too, so tests do not lie."""
        with pytest.raises(ConfigurationError, match="service"):
            async with StaticRegistry().watch(service):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(ConfigurationError, match="service_id"):
            await StaticRegistry().deregister("../x")


class TestWatch:
    async def test_iteration_follows_changes(self) -> None:
        """`async for` yields the current snapshot, then each new one."""
        registry = StaticRegistry()
        seen: list[tuple[int, ...]] = []
        async with registry.watch("orders") as watch:

            async def follow() -> None:
                changes = aiter(watch)
                assert aiter(changes) is changes
                async for endpoints in changes:
                    seen.append(tuple(e.port for e in endpoints))
                    if len(seen) == 3:
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await anyio.wait_all_tasks_blocked()
                registry.add(instance(1))
                await anyio.wait_all_tasks_blocked()
                registry.add(instance(2))
        assert seen == [(), (1,), (1, 2)]

    async def test_bind_and_unbind(self) -> None:
        """A bound balancer gets the current snapshot, then each change, until unbound."""
        watch = Watch("orders")
        balancer = WeightedRoundRobin([])
        watch.bind(balancer)  # nothing published yet: nothing to swap in
        assert now(balancer) == ()
        first = (Endpoint(host="h", port=1),)
        watch.publish(first)
        assert now(balancer) == first
        watch.unbind(balancer)
        watch.unbind(balancer)  # a second unbind is a no-op
        watch.publish(())
        assert now(balancer) == first
        late = RoundRobin([])
        watch.publish(first)
        watch.bind(late)
        assert late.endpoints == first
        with pytest.raises(ConfigurationError, match="balancer"):
            watch.bind("round robin")  # type: ignore[arg-type]  # the point of the test

    async def test_stale_flag(self) -> None:
        """mark_stale sets the flag; the next publish clears it."""
        watch = Watch("orders")
        watch.mark_stale(stale=True)
        assert watch.stale
        watch.publish(())
        assert not getattr(watch, "stale")  # noqa: B009 - mypy narrowed the property above
        assert await watch.wait_changed(0) == ()
