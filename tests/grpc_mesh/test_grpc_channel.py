"""MeshChannel over three real loopback servers: balancing, routing, ejection, draining."""

from __future__ import annotations

import random
from collections import Counter
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import KINDS, AioEcho, Attempts, aio_server, call_aio
from meshkit import BulkheadFullError, NoAvailableEndpointError, RpcStatusError
from meshkit.balancing import Endpoint, OutlierConfig
from meshkit.grpc import (
    Code,
    Destination,
    Fault,
    HeaderMatch,
    HttpRoute,
    LoadBalancerKind,
    MeshChannel,
    MeshConfig,
    RetryPolicy,
    RouteMatch,
    Subset,
    TrafficPolicy,
)
from meshkit.resilience import ExponentialBackoff

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

SERVICE = "echo"
FAST = ExponentialBackoff(base=0.001, cap=0.002)
CANARY = HttpRoute(
    name="canary",
    match=(RouteMatch(headers=(HeaderMatch(name="x-canary", exact="true"),)),),
    destinations=(Destination(subset="v2"),),
)
SPLIT = HttpRoute(
    name="split",
    destinations=(Destination(subset="v1", weight=90), Destination(subset="v2", weight=10)),
)
SUBSETS = (Subset(name="v1", labels={"version": "v1"}), Subset(name="v2", labels={"version": "v2"}))


class Registry:
    """A registry with a watch: the current endpoints, then every change."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self._changed = anyio.Event()

    def set(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self._changed.set()

    async def watch(self, service: str) -> AsyncIterator[Sequence[Endpoint]]:
        while True:
            yield self.endpoints
            await self._changed.wait()
            self._changed = anyio.Event()


class Failing(AioEcho):
    """An Echo whose Unary always fails with UNAVAILABLE."""

    async def Unary(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.attempts.next(request.text)
        raise RpcStatusError("UNAVAILABLE", "down")


async def _servers(
    stack: AsyncExitStack, versions: Sequence[str], failing: int | None = None
) -> tuple[list[Endpoint], list[Attempts]]:
    endpoints, counters = [], []
    for index, version in enumerate(versions):
        attempts = Attempts()
        servicer = Failing(attempts) if index == failing else AioEcho(attempts)
        address, _ = await stack.enter_async_context(aio_server(servicer=servicer))
        host, port = address.rsplit(":", 1)
        endpoints.append(Endpoint(host=host, port=int(port), metadata={"version": version}))
        counters.append(attempts)
    return endpoints, counters


def _served(counters: list[Attempts]) -> list[int]:
    return [sum(c.counts.values()) for c in counters]


class TestBalancing:
    """Per-call balancing over three servers."""

    @pytest.mark.anyio
    async def test_least_request_spreads_and_follows_the_registry(self) -> None:
        """Calls reach every endpoint; an endpoint added to the registry gets calls too."""
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1", "v1", "v1"])
            registry = Registry(endpoints[:2])
            mesh = await stack.enter_async_context(MeshChannel(SERVICE, registry))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            for _ in range(60):
                await stub.Unary(echo_pb2.EchoRequest(text="x"))
            assert all(n > 0 for n in _served(counters)[:2])
            registry.set(endpoints)
            with anyio.fail_after(5):
                while len(mesh.endpoints) < 3:  # noqa: ASYNC110 - the mesh has no event to wait on
                    await anyio.sleep(0.01)
            for _ in range(60):
                await stub.Unary(echo_pb2.EchoRequest(text="y"))
            assert counters[2].counts["y"] > 0
            replies = [r async for r in stub.ServerStream(echo_pb2.EchoRequest(count=2))]
            assert len(replies) == 2

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", [LoadBalancerKind.RING_HASH, LoadBalancerKind.MAGLEV])
    async def test_consistent_hash_on_a_header(self, kind: LoadBalancerKind) -> None:
        """The same x-user value always reaches the same server."""
        config = MeshConfig(
            host=SERVICE, traffic_policy=TrafficPolicy(load_balancer=kind, hash_header="x-user")
        )
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1", "v1", "v1"])
            mesh = await stack.enter_async_context(MeshChannel(config, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            for user in ("ann", "bob", "cy"):
                for _ in range(10):
                    meta = (("x-user", user),)
                    await stub.Unary(echo_pb2.EchoRequest(text=user), metadata=meta)
                assert sorted(c.counts[user] for c in counters) == [0, 0, 10]

    @pytest.mark.anyio
    async def test_outlier_ejection_and_retries(self) -> None:
        """A failing endpoint is ejected; retries pick again and succeed."""
        outlier = OutlierConfig(consecutive_errors=2, max_ejection_percent=50)
        retries = RetryPolicy(attempts=3, retry_on=("unavailable",), backoff=FAST)
        config = MeshConfig(
            host=SERVICE,
            routes=(HttpRoute(destinations=(Destination(),), retries=retries),),
            traffic_policy=TrafficPolicy(outlier=outlier),
        )
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1", "v1", "v1"], failing=0)
            mesh = await stack.enter_async_context(MeshChannel(config, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            for _ in range(60):
                assert (await stub.Unary(echo_pb2.EchoRequest(text="r"))).text == "r"
            assert counters[0].counts["r"] <= 3  # ejected after its consecutive errors
            assert endpoints[0] in mesh.balancer().ejected  # type: ignore[attr-defined]

    @pytest.mark.anyio
    async def test_draining(self) -> None:
        """A removed endpoint finishes its call in flight, then its channel closes."""
        async with AsyncExitStack() as stack:
            endpoints, _ = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(MeshChannel(SERVICE, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            replies: list[Any] = []
            async with anyio.create_task_group() as tg:

                async def slow() -> None:
                    replies.append(await stub.Unary(echo_pb2.EchoRequest(text="s", sleep=0.3)))

                tg.start_soon(slow)
                with anyio.fail_after(5):
                    while mesh.in_flight(endpoints[0]) == 0:  # noqa: ASYNC110 - as above
                        await anyio.sleep(0.01)
                await mesh.update(())
                assert mesh.endpoints == (endpoints[0],)  # still draining
                with pytest.raises(NoAvailableEndpointError):
                    await stub.Unary(echo_pb2.EchoRequest())
            assert [r.text for r in replies] == ["s"]
            assert mesh.endpoints == ()


class TestRouting:
    """VirtualService routing over subsets."""

    def test_split_is_90_10(self) -> None:
        """10,000 weighted picks split 90/10 within four standard deviations."""
        rng = random.Random(7)
        picks = Counter(SPLIT.destination(rng.random()).subset for _ in range(10_000))
        assert abs(picks["v2"] - 1000) < 4 * 30  # binomial sd = sqrt(10000 * .1 * .9) = 30

    @pytest.mark.anyio
    async def test_header_match_and_split_on_real_calls(self) -> None:
        """x-canary: true always reaches v2; 10,000 other calls split 90/10 by subset."""
        config = MeshConfig(host=SERVICE, routes=(CANARY, SPLIT), subsets=SUBSETS)
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1", "v1", "v2"])
            mesh = await stack.enter_async_context(
                MeshChannel(config, Registry(endpoints), rng=random.Random(3))
            )
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            for _ in range(50):
                meta = (("x-canary", "true"),)
                await stub.Unary(echo_pb2.EchoRequest(text="c"), metadata=meta)
            assert counters[2].counts["c"] == 50

            async def caller() -> None:
                for _ in range(500):
                    await stub.Unary(echo_pb2.EchoRequest(text="n"))

            async with anyio.create_task_group() as tg:  # 20 x 500 = 10,000 real calls
                for _ in range(20):
                    tg.start_soon(caller)
            v2 = counters[2].counts["n"]
            assert counters[0].counts["n"] + counters[1].counts["n"] + v2 == 10_000
            assert abs(v2 - 1000) < 4 * 30  # binomial sd = sqrt(10000 * .1 * .9) = 30

    @pytest.mark.anyio
    async def test_fault_and_bulkhead(self) -> None:
        """An abort fault answers its status; a full connection pool rejects the call."""
        abort = HttpRoute(
            match=(RouteMatch(headers=(HeaderMatch(name="x-fault", prefix="y"),)),),
            destinations=(Destination(),),
            fault=Fault(abort=Code.UNAVAILABLE, delay=0.001),
        )
        config = MeshConfig(
            host=SERVICE,
            routes=(abort,),
            traffic_policy=TrafficPolicy(max_requests=1, max_pending=0),
        )
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(MeshChannel(config, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            with pytest.raises(RpcStatusError, match="fault injected"):
                await stub.Unary(echo_pb2.EchoRequest(text="f"), metadata=(("x-fault", "yes"),))
            assert counters[0].counts["f"] == 0
            errors: list[BaseException] = []
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    try:
                        await stub.Unary(echo_pb2.EchoRequest(sleep=0.2))
                    except BulkheadFullError as exc:
                        errors.append(exc)

                tg.start_soon(call)
                tg.start_soon(call)
            assert len(errors) == 1


class TestEdges:
    """Outcomes, other balancers, breakers and streams through the mesh."""

    def test_outcome_of(self) -> None:
        """What each ending tells the balancer."""
        from meshkit import CircuitOpenError, DeadlineExceededError  # noqa: PLC0415
        from meshkit.balancing import Outcome  # noqa: PLC0415
        from meshkit.grpc._mesh import outcome_of  # noqa: PLC0415

        assert outcome_of(None) is Outcome.SUCCESS
        assert outcome_of(DeadlineExceededError(1.0)) is Outcome.GATEWAY_ERROR
        assert outcome_of(CircuitOpenError("b", 1.0)) is Outcome.GATEWAY_ERROR
        assert outcome_of(RpcStatusError("UNAVAILABLE", "")) is Outcome.GATEWAY_ERROR
        assert outcome_of(RpcStatusError("INTERNAL", "")) is Outcome.ERROR
        assert outcome_of(RpcStatusError("NOT_FOUND", "")) is Outcome.SUCCESS
        assert outcome_of(KeyError("x")) is Outcome.ERROR
        assert outcome_of(KeyboardInterrupt()) is Outcome.SUCCESS

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", [LoadBalancerKind.ROUND_ROBIN, LoadBalancerKind.RANDOM])
    async def test_breaker_and_streams(self, kind: LoadBalancerKind) -> None:
        """A failing endpoint's breaker opens; a failing stream raises a meshkit error."""
        from meshkit import CircuitOpenError  # noqa: PLC0415
        from meshkit.resilience import CircuitBreaker, CircuitBreakerConfig  # noqa: PLC0415

        def breaker() -> CircuitBreaker:
            return CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, open_duration=60.0))

        config = MeshConfig(host=SERVICE, traffic_policy=TrafficPolicy(load_balancer=kind))
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1"], failing=0)
            mesh = await stack.enter_async_context(
                MeshChannel(config, Registry(endpoints), breaker=breaker)
            )
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            with pytest.raises(RpcStatusError, match="ABORTED"):
                async for _ in stub.ServerStream(
                    echo_pb2.EchoRequest(text="s", fail="conflict", count=2)
                ):
                    pass
            assert (await stub.ClientStream([echo_pb2.EchoRequest(text="c")])).text == "c"
            with pytest.raises(RpcStatusError):
                await stub.Unary(echo_pb2.EchoRequest(text="b"))
            with pytest.raises(CircuitOpenError):
                await stub.Unary(echo_pb2.EchoRequest(text="b"))
            assert counters[0].counts["b"] == 1


class TestFaultRetries:
    """Injected aborts are retried like real failures."""

    @pytest.mark.anyio
    async def test_half_aborted_calls_succeed_with_retries(self) -> None:
        """With 50% UNAVAILABLE faults and three retries, calls succeed; some were retried."""
        retries = RetryPolicy(attempts=3, retry_on=("unavailable",), backoff=FAST)
        route = HttpRoute(
            destinations=(Destination(),),
            retries=retries,
            fault=Fault(abort=Code.UNAVAILABLE, abort_percent=50),
        )
        config = MeshConfig(host=SERVICE, routes=(route,))
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(
                MeshChannel(config, Registry(endpoints), rng=random.Random(5))
            )
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            failures = 0
            for _ in range(40):
                try:
                    await stub.Unary(echo_pb2.EchoRequest(text="f"))
                except RpcStatusError:
                    failures += 1
            assert counters[0].counts["f"] == 40 - failures
            assert failures <= 3  # 0.5**4 per call: about 2.5 expected


class BrokenRegistry:
    """A registry whose watch fails at once."""

    async def watch(self, service: str) -> AsyncIterator[Sequence[Endpoint]]:
        if service:
            raise RuntimeError("consul is down")
        yield ()  # never reached: makes this an async generator


class TestRegistryFailure:
    """A watch that fails before its first snapshot."""

    @pytest.mark.anyio
    async def test_enter_raises_the_watch_error(self) -> None:
        """Entering the channel raises the registry's error instead of hanging."""
        with pytest.raises(BaseExceptionGroup) as caught:
            async with MeshChannel(SERVICE, BrokenRegistry()):
                pass  # pragma: no cover - never entered
        assert caught.group_contains(RuntimeError, match="consul is down")


class TestStreamRetries:
    """Streams through the mesh: retried before their first response only."""

    @pytest.mark.anyio
    async def test_stream_retried_before_first_message_only(self) -> None:
        """A stream failing at once is retried on another pick; one failing later is not."""
        retries = RetryPolicy(attempts=2, retry_on=("unavailable",), backoff=FAST)
        config = MeshConfig(
            host=SERVICE, routes=(HttpRoute(destinations=(Destination(),), retries=retries),)
        )
        async with AsyncExitStack() as stack:
            endpoints, counters = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(MeshChannel(config, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            # Echo fails a stream after `fail_after` messages; attempts are counted per text.
            early = echo_pb2.EchoRequest(text="early", fail="unavailable", count=2, fail_after=0)
            with pytest.raises(RpcStatusError):
                async for _ in stub.ServerStream(early):
                    pass  # pragma: no cover - fails before the first message
            assert counters[0].counts["early"] == 3
            late = echo_pb2.EchoRequest(text="late", fail="unavailable", count=3, fail_after=1)
            received = []
            with pytest.raises(RpcStatusError):  # noqa: PT012 - the error comes mid-loop
                async for reply in stub.ServerStream(late):
                    received.append(reply)  # noqa: PERF401 - keep what came before the error
            assert len(received) == 1
            assert counters[0].counts["late"] == 1
            empty = [r async for r in stub.ServerStream(echo_pb2.EchoRequest(text="empty"))]
            assert empty == []


class TestSecureMesh:
    """MeshChannel over mTLS endpoints, and statuses that do not count against them."""

    @pytest.mark.anyio
    async def test_mtls_endpoints_and_not_found(self) -> None:
        """Calls reach an mTLS server; NOT_FOUND is raised without counting as a failure."""
        from pki import TestCA  # noqa: PLC0415

        ca = TestCA()
        server_identity = ca.issue("spiffe://cluster.local/ns/ecommerce/sa/echo")
        client_identity = ca.issue("spiffe://cluster.local/ns/ecommerce/sa/api-gateway")
        async with AsyncExitStack() as stack:
            address, attempts = await stack.enter_async_context(
                aio_server(credentials=server_identity.server_credentials())
            )
            host, port = address.rsplit(":", 1)
            endpoint = Endpoint(host=host, port=int(port))
            mesh = await stack.enter_async_context(
                MeshChannel(
                    SERVICE,
                    Registry([endpoint]),
                    credentials=client_identity.channel_credentials(),
                )
            )
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            assert (await stub.Unary(echo_pb2.EchoRequest(text="tls"))).text == "tls"
            with pytest.raises(RpcStatusError, match="NOT_FOUND"):
                await stub.Unary(echo_pb2.EchoRequest(text="nf", fail="notfound"))
            assert attempts.counts["nf"] == 1


class TestMeshDeadlines:
    """A meshkit deadline over MeshChannel calls (grpc/grpc#43502)."""

    @pytest.mark.anyio
    async def test_timeout_gives_deadline_exceeded(self) -> None:
        """Unary and streaming calls past a Timeout raise DeadlineExceededError."""
        from meshkit import DeadlineExceededError  # noqa: PLC0415
        from meshkit.resilience import Timeout  # noqa: PLC0415

        async with AsyncExitStack() as stack:
            endpoints, _ = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(MeshChannel(SERVICE, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            slow = echo_pb2.EchoRequest(sleep=5, count=2)
            for _ in range(3):
                with pytest.raises(DeadlineExceededError):
                    async with Timeout(0.1):
                        await stub.Unary(slow)
                with pytest.raises(DeadlineExceededError):  # noqa: PT012 - a scope around a loop
                    async with Timeout(0.1):
                        async for _ in stub.ServerStream(slow):
                            pass  # pragma: no cover - nothing arrives in time
            assert mesh.in_flight(endpoints[0]) == 0

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_fail_after_is_timeout_error(self, kind: str) -> None:
        """An anyio scope the plan cannot see, expiring mid-call, raises TimeoutError."""
        async with AsyncExitStack() as stack:
            endpoints, _ = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(MeshChannel(SERVICE, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            slow = echo_pb2.EchoRequest(sleep=5, count=2)
            for _ in range(3):
                with pytest.raises(TimeoutError), anyio.fail_after(0.1):
                    await call_aio(stub, kind, slow)
            assert mesh.in_flight(endpoints[0]) == 0


class TestMeshBadMetadata:
    """Metadata gRPC would refuse is a ConfigurationError through MeshChannel too."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", ["unary_unary", "unary_stream"])
    async def test_non_ascii_value(self, kind: str) -> None:
        """A non-ASCII text value never reaches grpc, and no call is left in flight."""
        from meshkit import ConfigurationError  # noqa: PLC0415

        async with AsyncExitStack() as stack:
            endpoints, _ = await _servers(stack, ["v1"])
            mesh = await stack.enter_async_context(MeshChannel(SERVICE, Registry(endpoints)))
            stub: Any = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            with pytest.raises(ConfigurationError):
                await call_aio(stub, kind, echo_pb2.EchoRequest(), metadata=(("x-n", "\u00e9"),))
            assert mesh.in_flight(endpoints[0]) == 0
