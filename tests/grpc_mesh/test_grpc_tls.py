"""mTLS (STRICT) and SPIFFE principals in AuthorizationPolicy, on real loopback servers."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import aio_server, sync_server
from meshkit import ConfigurationError
from meshkit.grpc import AuthorizationPolicy, Rule, ServerPolicy, Source, WorkloadIdentity
from pki import TestCA

GATEWAY = "spiffe://cluster.local/ns/ecommerce/sa/api-gateway"
ORDERS = "spiffe://cluster.local/ns/ecommerce/sa/order-service"
ONLY_GATEWAY = AuthorizationPolicy(
    name="order-service",
    rules=(Rule(sources=(Source(principals=("cluster.local/ns/ecommerce/sa/api-gateway",)),)),),
)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    """One CA for the module (key generation is the slow part)."""
    return TestCA()


def _call(address: str, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(address, credentials) as channel:
        try:
            echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(text="x"), timeout=5)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


class TestStrictMtls:
    """STRICT mTLS with principal-based authorization."""

    def test_sync_principals(self, ca: TestCA) -> None:
        """The gateway passes; another workload is denied; no certificate fails the handshake."""
        server = ca.issue(ORDERS)
        policy = ServerPolicy(authorization=(ONLY_GATEWAY,))
        with sync_server([policy.interceptor()], credentials=server.server_credentials()) as (
            address,
            _,
        ):
            assert _call(address, ca.issue(GATEWAY).channel_credentials()) == grpc.StatusCode.OK
            other = ca.issue("spiffe://cluster.local/ns/ecommerce/sa/other")
            assert _call(address, other.channel_credentials()) == grpc.StatusCode.PERMISSION_DENIED
            two = ca.issue(GATEWAY, ORDERS)  # two URI SANs: grpcio reports no SPIFFE id
            assert _call(address, two.channel_credentials()) == grpc.StatusCode.PERMISSION_DENIED
            anonymous = grpc.ssl_channel_credentials(root_certificates=ca.pem)
            assert _call(address, anonymous) == grpc.StatusCode.UNAVAILABLE
            foreign = TestCA("foreign").issue(GATEWAY)
            foreign = WorkloadIdentity(
                certificate_chain=foreign.certificate_chain,
                private_key=foreign.private_key,
                root_certificates=ca.pem,
            )
            assert _call(address, foreign.channel_credentials()) == grpc.StatusCode.UNAVAILABLE

    @pytest.mark.anyio
    async def test_aio_principals(self, ca: TestCA) -> None:
        """The same policy on a grpc.aio server."""
        server = ca.issue(ORDERS)
        policy = ServerPolicy(authorization=(ONLY_GATEWAY,))
        credentials = server.server_credentials()
        async with aio_server([policy.aio_interceptor()], credentials=credentials) as (address, _):
            for identity, code in (
                (ca.issue(GATEWAY), grpc.StatusCode.OK),
                (ca.issue(ORDERS), grpc.StatusCode.PERMISSION_DENIED),
            ):
                channel = grpc.aio.secure_channel(address, identity.channel_credentials())
                async with channel:
                    stub: Any = echo_pb2_grpc.EchoStub(channel)
                    try:
                        await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                        got = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        got = exc.code()
                    assert got == code


class TestWorkloadIdentity:
    """Loading and validating identities."""

    def test_from_files(self, ca: TestCA, tmp_path: Any) -> None:
        """PEM files load; a missing file or non-PEM data is a ConfigurationError."""
        identity = ca.issue(GATEWAY)
        files = [tmp_path / name for name in ("cert.pem", "key.pem", "ca.pem")]
        files[0].write_bytes(identity.certificate_chain)
        files[1].write_bytes(identity.private_key)
        files[2].write_bytes(identity.root_certificates)
        assert WorkloadIdentity.from_files(*files) == identity
        with pytest.raises(ConfigurationError, match="root_certificates"):
            WorkloadIdentity.from_files(files[0], files[1], tmp_path / "missing.pem")
        with pytest.raises(ConfigurationError, match="private_key"):
            WorkloadIdentity(
                certificate_chain=identity.certificate_chain,
                private_key=b"not pem \x00\xff",
                root_certificates=identity.root_certificates,
            )
