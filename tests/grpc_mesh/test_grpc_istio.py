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
VSX = "kind: VirtualService\nspec: {hosts: [x], http: "
DRT = "kind: DestinationRule\nspec: {host: x, trafficPolicy: "
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
            (DRT + "{loadBalancer: {simple: F}}}",
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


KITCHEN_SINK = """
kind: VirtualService
spec:
  hosts: [shop]
  gateways: [mesh]
  http:
    - name: hashed
      match:
        - headers: {x-user: {prefix: "a"}, x-tier: {regex: "gold|silver"}}
          uri: {prefix: /}
      route: [{destination: {host: shop}}]
      timeout: 250ms
      retries: {attempts: 1, perTryTimeout: 100ms, retryOn: "5xx,gateway-error,reset"}
      fault:
        delay: {fixedDelay: 1s, percentage: {value: 5}}
        abort: {httpStatus: 503, percentage: {value: 1.5}}
    - route: [{destination: {host: shop}}]
      retries: {attempts: 0}
      fault: {abort: {httpStatus: 418}}
---
kind: DestinationRule
spec:
  host: shop
  exportTo: ["."]
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: X-User, maglev: {tableSize: 65537}}
    connectionPool: {tcp: {maxConnections: 10}, http: {maxRetries: 3}}
    outlierDetection:
      consecutiveErrors: 0
      consecutiveGatewayErrors: 3
      minHealthPercent: 25
---
kind: DestinationRule
spec:
  host: ring
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: k, ringHash: {minimumRingSize: 64}}}
---
kind: DestinationRule
spec:
  host: rr
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
kind: DestinationRule
spec:
  host: lc
  trafficPolicy: {loadBalancer: {simple: LEAST_CONN, localityLbSetting: {enabled: true}}}
---
kind: AuthorizationPolicy
metadata: {name: deny-writes}
spec:
  action: DENY
  selector: {matchLabels: {app: shop}}
  rules:
    - from: [{source: {notPrincipals: ["cluster.local/ns/shop/*"], namespaces: [shop]}}]
      to: [{operation: {notMethods: [GET], notPaths: ["/shop.Cart/Get*"], ports: ["80"]}}]
      when: [{key: "request.auth.claims[iss]", values: ["x"]}]
---
kind: PeerAuthentication
spec: {}
"""


class TestCoverage:
    """Every enforced field, and the unsupported ones next to them."""

    def test_kitchen_sink(self) -> None:
        """Each field lands where it should; unsupported ones are listed."""
        config = load_istio(KITCHEN_SINK)
        shop = config.mesh_config("shop")
        hashed, plain = shop.routes
        assert hashed.matches({"x-user": "ann", "x-tier": "gold"})
        assert not hashed.matches({"x-user": "bob", "x-tier": "gold"})
        assert not hashed.matches({"x-user": "ann", "x-tier": "iron"})
        assert hashed.timeout == 0.25
        assert hashed.retries is not None
        assert Code.DATA_LOSS in hashed.retries.retry_on
        assert hashed.fault is not None
        assert hashed.fault.abort is Code.UNAVAILABLE
        assert hashed.fault.decide(0.04, 0.014) == (1.0, Code.UNAVAILABLE)
        assert hashed.fault.decide(0.06, 0.016) == (0.0, None)
        assert plain.fault is not None
        assert plain.fault.abort is Code.UNKNOWN
        policy = shop.traffic_policy
        assert (policy.load_balancer, policy.hash_header) == (LoadBalancerKind.MAGLEV, "x-user")
        assert policy.outlier is not None
        assert policy.outlier.consecutive_errors is None
        assert policy.outlier.consecutive_gateway_errors == 3
        assert config.mesh_config("ring").traffic_policy.load_balancer is LoadBalancerKind.RING_HASH
        assert config.mesh_config("rr").traffic_policy.load_balancer is LoadBalancerKind.ROUND_ROBIN
        lc = config.mesh_config("lc").traffic_policy.load_balancer
        assert lc is LoadBalancerKind.LEAST_REQUEST
        assert config.mtls_mode == "UNSET"
        assert set(config.unsupported) >= {
            "spec.gateways",
            "spec.http[0].match[0].uri",
            "spec.exportTo",
            "spec.trafficPolicy.connectionPool.tcp",
            "spec.trafficPolicy.connectionPool.http.maxRetries",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "spec.selector",
            "spec.rules[0].when",
            "spec.rules[0].from[0].source.namespaces",
            "spec.rules[0].to[0].operation.ports",
        }
        (deny,) = config.authorization
        authorize(config.authorization, "cluster.local/ns/shop/sa/a", "/shop.Cart/Add")
        with pytest.raises(PermissionDeniedError):
            authorize(config.authorization, "cluster.local/ns/x/sa/a", "/shop.Cart/Add")
        assert deny.name == "deny-writes"

    @pytest.mark.parametrize(
        ("yaml", "path"),
        [
            ("kind: VirtualService\nspec: {}", "spec"),
            ("kind: VirtualService\nspec: {hosts: []}", "spec.hosts"),
            (VSX + "[{}]}", "spec.http[0]"),
            (VSX + "[{route: [{}]}]}",
             "spec.http[0].route[0]"),
            (VSX + "[{route: [{destination: {}, weight: 0}]}]}",
             "spec.http[0].route"),
            (VSX + "[{match: [{headers: [a]}], route: []}]}",
             "spec.http[0].match[0].headers"),
            (VSX + "[{match: [{headers: {a: {}}}], route: [{destination: {}}]}]}",
             "spec.http[0].match[0].headers.a"),
            (VSX + "[{match: [{headers: {a: {regex: '('}}}], route: [{destination: {}}]}]}",
             "spec.http[0].match[0].headers.a"),
            (VSX + "[{route: [{destination: {subset: v9}}]}]}",
             "spec.http[0].route[0].destination.subset"),
            (VSX + "[{route: [{destination: {}}]}, {route: [{destination: {}, weight: 50},"
             " {destination: {subset: v9}, weight: 50}]}]}",
             "spec.http[1].route[1].destination.subset"),
            ("kind: DestinationRule\nspec: {}", "spec"),
            ("kind: DestinationRule\nspec: {host: x, subsets: [{labels: {}}]}", "spec.subsets[0]"),
            ("kind: DestinationRule\nspec: {host: x, subsets: [{name: a, labels: [1]}]}",
             "spec.subsets[0].labels"),
            ("kind: DestinationRule\nspec: {host: x, subsets: [{name: a, labels: {v: 1}}]}",
             "spec.subsets[0].labels.v"),
            (DRT + "{loadBalancer: {simple: PASSTHROUGH}}}",
             "spec.trafficPolicy.loadBalancer.simple"),
            (DRT + "{outlierDetection: {interval: 0s}}}",
             "spec.trafficPolicy.outlierDetection"),
            (DRT + "{outlierDetection: {maxEjectionPercent: 101}}}",
             "spec.trafficPolicy.outlierDetection.maxEjectionPercent"),
            (DRT + "{connectionPool: {http: {http2MaxRequests: true}}}}",
             "spec.trafficPolicy.connectionPool.http.http2MaxRequests"),
            (VSX + "[{route: [{destination: {}}], fault: {delay: {percentage: 5}}}]}",
             "spec.http[0].fault.delay.percentage"),
            (VSX + "[{route: [{destination: {}}], fault: {delay: {percentage: {value: .nan}}}}]}",
             "spec.http[0].fault.delay.percentage.value"),
            (VSX + "[{name: 7, route: [{destination: {}}]}]}",
             "spec.http[0].name"),
            ("kind: VirtualService\nspec: {hosts: x}", "spec.hosts"),
            ("- 1", "doc[0]"),
            ("kind: VirtualService", "spec"),
        ],
    )  # fmt: skip
    def test_more_errors(self, yaml: str, path: str) -> None:
        """Each malformed value names its path."""
        with pytest.raises(ConfigurationError) as caught:
            load_istio(yaml)
        assert caught.value.field == path


ALLOW_WHEN = """
kind: AuthorizationPolicy
metadata: {name: allow-gateway}
spec:
  rules:
    - from: [{source: {principals: ["cluster.local/ns/shop/sa/gateway"]}}]
      when: [{key: "request.headers[x-admin]", values: ["yes"]}]
    - from: [{source: {namespaces: [shop]}}]
"""

DENY_WHEN = """
kind: AuthorizationPolicy
metadata: {name: deny-writes}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/shop.Cart/Add"]}}]
      when: [{key: "request.headers[x-dry-run]", values: ["yes"]}]
"""


class TestUnenforcedConditions:
    """A rule meshkit cannot fully evaluate fails closed, as Istio does, never open."""

    def test_allow_rule_with_unenforced_condition_never_allows(self) -> None:
        """An ALLOW rule with `when` or `namespaces` does not match without its conditions."""
        config = load_istio(ALLOW_WHEN)
        assert {"spec.rules[0].when", "spec.rules[1].from[0].source.namespaces"} <= set(
            config.unsupported
        )
        for principal in ("cluster.local/ns/shop/sa/gateway", "cluster.local/ns/x/sa/y", None):
            with pytest.raises(PermissionDeniedError):
                authorize(config.authorization, principal, "/shop.Cart/Add")

    def test_deny_rule_with_when_denies_without_its_conditions(self) -> None:
        """A DENY rule with `when` matches as if its conditions held (denies more)."""
        config = load_istio(DENY_WHEN)
        with pytest.raises(PermissionDeniedError):
            authorize(config.authorization, "cluster.local/ns/shop/sa/a", "/shop.Cart/Add")
        authorize(config.authorization, "cluster.local/ns/shop/sa/a", "/shop.Cart/Get")
