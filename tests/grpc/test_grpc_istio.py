"""Istio YAML: the docs manifests load unchanged; bad documents name the path of the fault."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError, PermissionDeniedError
from meshkit.grpc import Code, LoadBalancerKind, load_istio
from meshkit.grpc._authz import authorize
from meshkit.grpc._yaml import duration

MANIFEST = Path(__file__).resolve().parents[2] / "docs" / "istio" / "order-service.yaml"
ROUTE = "    - route: [{destination: {host: x}}]\n"
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: x}
spec:
  hosts: [x]
  http:
"""


class TestManifests:
    """The docs manifests."""

    def test_order_service_loads_unchanged(self) -> None:
        """Routes, subsets, traffic policy, mTLS mode and authorization come out as written."""
        config = load_istio(MANIFEST.read_text())
        assert config.unsupported == ()
        assert config.mtls_mode == "STRICT"
        mesh = config.mesh_config("order-service.ecommerce.svc.cluster.local")
        canary, stable = mesh.routes
        assert mesh.route({"x-canary": "true"}) is canary
        assert mesh.route({"x-canary": "false"}) is stable
        assert [(d.subset, d.weight) for d in stable.destinations] == [("v1", 90), ("v2", 10)]
        assert stable.timeout == 5
        assert stable.retries is not None
        assert stable.retries.attempts == 3
        assert stable.retries.per_try_timeout == 2
        assert stable.retries.retry_on == {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED}
        policy = mesh.traffic_policy
        assert policy.load_balancer is LoadBalancerKind.LEAST_REQUEST
        assert (policy.max_requests, policy.max_pending) == (100, 50)
        assert policy.outlier is not None
        assert policy.outlier.consecutive_errors == 5
        assert policy.outlier.max_ejection_percent == 50
        path = "/ecommerce.orders.v1.OrderService/PlaceOrder"
        authorize(config.authorization, "cluster.local/ns/ecommerce/sa/api-gateway", path)
        with pytest.raises(PermissionDeniedError):
            authorize(config.authorization, "cluster.local/ns/ecommerce/sa/other", path)
        assert config.server_policy().authorization == config.authorization
        assert config.mesh_config("unknown").routes == ()


class TestErrors:
    """Malformed documents."""

    @pytest.mark.parametrize(
        ("yaml", "path"),
        [
            (VS + "    - route: [{destination: {host: x}}, {destination: {host: x}, weight: -1}]",
             "spec.http[0].route[1].weight"),
            (VS + "    - route: [{destination: {host: x}, wieght: 1}]",
             "spec.http[0].route[0].wieght"),
            (VS + ROUTE + "      timeout: soon", "spec.http[0].timeout"),
            (VS + ROUTE + "      retries: {retryOn: bogus}", "spec.http[0].retries.retryOn"),
            (VS + "    - match: [{headers: {x-a: {exact: 1}}}]\n      route: [{destination: {}}]",
             "spec.http[0].match[0].headers.x-a.exact"),
            (VS + ROUTE + "      fault: {abort: {grpcStatus: NOPE}}",
             "spec.http[0].fault.abort.grpcStatus"),
            ("kind: Gateway\nspec: {}", "doc[0].kind"),
            ("kind: [1", "yaml"),
            ("kind: DestinationRule\nspec: {host: x, trafficPolicy: {loadBalancer: {simple: F}}}",
             "spec.trafficPolicy.loadBalancer.simple"),
            ("kind: AuthorizationPolicy\nspec: {action: AUDIT}", "spec.action"),
            ("kind: PeerAuthentication\nspec: {mtls: {mode: SOMETIMES}}", "spec.mtls.mode"),
        ],
    )  # fmt: skip
    def test_error_names_the_path(self, yaml: str, path: str) -> None:
        """The ConfigurationError's field is the path of the offending value."""
        with pytest.raises(ConfigurationError) as caught:
            load_istio(yaml)
        assert caught.value.field == path

    def test_unsupported_fields_are_reported(self, caplog: pytest.LogCaptureFixture) -> None:
        """A field meshkit does not enforce is listed by path and logged."""
        text = (
            VS
            + "    - route: [{destination: {host: x, port: {number: 80}}}]\n      mirror: {host: y}"
        )
        with caplog.at_level(logging.WARNING, logger="meshkit.grpc"):
            config = load_istio(text)
        assert set(config.unsupported) == {
            "spec.http[0].route[0].destination.port",
            "spec.http[0].mirror",
        }
        assert "spec.http[0].mirror" in caplog.text

    @given(st.text(max_size=200))
    def test_any_text_is_config_or_configuration_error(self, text: str) -> None:
        """Arbitrary text never raises anything but ConfigurationError."""
        with contextlib.suppress(ConfigurationError):
            load_istio(text)

    def test_huge_and_deep_documents(self) -> None:
        """Oversized or absurdly nested input is a ConfigurationError, not a crash."""
        with pytest.raises(ConfigurationError):
            load_istio("a: " + "x" * (2 << 20))
        with pytest.raises(ConfigurationError):
            load_istio("[" * 100_000)
        with pytest.raises(ConfigurationError):
            load_istio(b"kind: x")  # type: ignore[arg-type]

    def test_durations(self) -> None:
        """Istio durations in every unit."""
        assert duration("1.5s") == 1.5
        assert duration("100ms") == 0.1
        assert duration("2m") == 120
        assert duration("5") is None
        assert duration("9" * 400 + "h") is None
