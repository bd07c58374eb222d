"""SyncMeshChannel over real sync grpcio servers: the same decisions as MeshChannel."""

from __future__ import annotations

import random
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import Attempts, SyncEcho, sync_server
from meshkit import CircuitOpenError, NoAvailableEndpointError, RpcStatusError
from meshkit.balancing import Endpoint, OutlierConfig
from meshkit.grpc import (
    Destination,
    HeaderMatch,
    HttpRoute,
    MeshConfig,
    RetryPolicy,
    RouteMatch,
    Subset,
    SyncMeshChannel,
    TrafficPolicy,
)
from meshkit.resilience import CircuitBreaker, CircuitBreakerConfig, ExponentialBackoff

if TYPE_CHECKING:
    from collections.abc import Sequence

FAST = ExponentialBackoff(base=0.001, cap=0.002)
RETRIES = RetryPolicy(attempts=3, retry_on=("unavailable",), backoff=FAST)


class Failing(SyncEcho):
    """An Echo whose Unary and streams always fail with UNAVAILABLE."""

    def Unary(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.attempts.next(request.text)
        raise RpcStatusError("UNAVAILABLE", "down")


def _servers(
    stack: ExitStack, versions: Sequence[str], failing: int | None = None
) -> tuple[list[Endpoint], list[Attempts]]:
    endpoints, counters = [], []
    for index, version in enumerate(versions):
        attempts = Attempts()
        servicer = Failing(attempts) if index == failing else SyncEcho(attempts)
        address, _ = stack.enter_context(sync_server(servicer=servicer))
        host, port = address.rsplit(":", 1)
        endpoints.append(Endpoint(host=host, port=int(port), metadata={"version": version}))
        counters.append(attempts)
    return endpoints, counters


class TestSyncMeshChannel:
    """Balancing, routing, retries, ejection, breakers and draining from threads."""

    def test_routing_retries_and_ejection(self) -> None:
        """Canary header reaches v2; a failing v1 is retried around and ejected."""
        canary = HttpRoute(
            match=(RouteMatch(headers=(HeaderMatch(name="x-canary", exact="true"),)),),
            destinations=(Destination(subset="v2"),),
        )
        stable = HttpRoute(destinations=(Destination(subset="v1"),), retries=RETRIES)
        config = MeshConfig(
            host="echo",
            routes=(canary, stable),
            subsets=(
                Subset(name="v1", labels={"version": "v1"}),
                Subset(name="v2", labels={"version": "v2"}),
            ),
            traffic_policy=TrafficPolicy(
                outlier=OutlierConfig(consecutive_errors=2, max_ejection_percent=50)
            ),
        )
        with ExitStack() as stack:
            endpoints, counters = _servers(stack, ["v1", "v1", "v2"], failing=0)
            mesh = stack.enter_context(SyncMeshChannel(config, endpoints, rng=random.Random(1)))
            stub = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            for _ in range(20):
                stub.Unary(echo_pb2.EchoRequest(text="c"), metadata=(("x-canary", "true"),))
            assert counters[2].counts["c"] == 20
            for _ in range(40):
                assert stub.Unary(echo_pb2.EchoRequest(text="s")).text == "s"
            assert counters[0].counts["s"] <= 3
            assert counters[2].counts["s"] == 0
            replies = list(stub.ServerStream(echo_pb2.EchoRequest(text="st", count=3)))
            assert [r.index for r in replies] == [0, 1, 2]

    def test_breaker_streams_and_draining(self) -> None:
        """An endpoint's breaker opens; streams fail as meshkit errors; removal drains."""

        def breaker() -> CircuitBreaker:
            return CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, open_duration=60.0))

        with ExitStack() as stack:
            endpoints, counters = _servers(stack, ["v1"])
            mesh = stack.enter_context(SyncMeshChannel("echo", endpoints, breaker=breaker))
            stub = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            late = echo_pb2.EchoRequest(text="late", fail="unavailable", count=3, fail_after=1)
            received: list[Any] = []
            with pytest.raises(RpcStatusError):
                received.extend(stub.ServerStream(late))
            assert len(received) == 1
            assert stub.ClientStream(iter([echo_pb2.EchoRequest(text="cs")])).text == "cs"
            replies: list[Any] = []
            slow = threading.Thread(
                target=lambda: replies.append(stub.Unary(echo_pb2.EchoRequest(sleep=0.3)))
            )
            slow.start()
            while mesh.in_flight(endpoints[0]) == 0:
                threading.Event().wait(0.01)
            mesh.update(())
            assert list(mesh.endpoints) == [endpoints[0]]
            with pytest.raises(NoAvailableEndpointError):
                stub.Unary(echo_pb2.EchoRequest())
            slow.join(5)
            assert len(replies) == 1
            assert not mesh.endpoints
            mesh.update(endpoints)
            with pytest.raises(RpcStatusError):
                stub.Unary(echo_pb2.EchoRequest(text="x", fail="unavailable"))
            with pytest.raises(CircuitOpenError):
                stub.Unary(echo_pb2.EchoRequest(text="x", fail="unavailable"))
            assert counters[0].counts["x"] == 1


class TestSyncMeshEdges:
    """Streams retried before their first message, faults, mTLS, empty streams."""

    def test_streams_faults_and_mtls(self) -> None:
        """Early stream failures are retried; a delay fault waits; mTLS endpoints work."""
        from meshkit.grpc import Fault  # noqa: PLC0415
        from pki import TestCA  # noqa: PLC0415

        ca = TestCA()
        server_identity = ca.issue("spiffe://cluster.local/ns/e/sa/echo")
        client_identity = ca.issue("spiffe://cluster.local/ns/e/sa/client")
        route = HttpRoute(destinations=(Destination(),), retries=RETRIES, fault=Fault(delay=0.001))
        config = MeshConfig(
            host="echo", routes=(route,), traffic_policy=TrafficPolicy(max_requests=4)
        )
        with ExitStack() as stack:
            address, attempts = stack.enter_context(
                sync_server(credentials=server_identity.server_credentials())
            )
            host, port = address.rsplit(":", 1)
            mesh = stack.enter_context(
                SyncMeshChannel(
                    config,
                    [Endpoint(host=host, port=int(port))],
                    credentials=client_identity.channel_credentials(),
                )
            )
            stub = echo_pb2_grpc.EchoStub(mesh)  # type: ignore[call-overload]
            assert stub.Unary(echo_pb2.EchoRequest(text="u")).text == "u"
            early = echo_pb2.EchoRequest(text="e", fail="unavailable", count=2, fail_after=0)
            with pytest.raises(RpcStatusError):
                list(stub.ServerStream(early))
            assert attempts.counts["e"] == 4  # the first attempt and three retries
            assert list(stub.ServerStream(echo_pb2.EchoRequest(text="empty"))) == []
            stream = stub.ServerStream(echo_pb2.EchoRequest(text="b", count=3))
            assert next(stream).index == 0
            stream.close()  # the caller stops early: the attempt is finished all the same
            assert mesh.in_flight(Endpoint(host=host, port=int(port))) == 0
