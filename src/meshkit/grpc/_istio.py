"""Istio resources in their own YAML shape, loaded into what meshkit enforces.

`load_istio(text)` reads VirtualService, DestinationRule, PeerAuthentication and
AuthorizationPolicy documents (any order, `---` separated) into an `IstioConfig`. Every field
is one of three things (the table is in docs/istio-config.md): enforced; an Istio field meshkit
does not enforce, reported by its path in `IstioConfig.unsupported` (and logged), never
silently ignored; or not a field at all, which is a `ConfigurationError` naming its path, as is
any malformed value (`spec.http[0].route[1].weight`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, final

import attrs

from meshkit._errors import ConfigurationError
from meshkit.balancing import OutlierConfig
from meshkit.grpc._authz import Action, AuthorizationPolicy, Operation, Rule, Source
from meshkit.grpc._client import RetryPolicy
from meshkit.grpc._codes import Code
from meshkit.grpc._routing import (
    Destination,
    Fault,
    HeaderMatch,
    HttpRoute,
    LoadBalancerKind,
    MeshConfig,
    RouteMatch,
    Subset,
    TrafficPolicy,
)
from meshkit.grpc._server import ServerPolicy
from meshkit.grpc._yaml import Node

if TYPE_CHECKING:
    from meshkit.resilience import RateLimiter

__all__ = ["IstioConfig", "load_istio"]

_LOG = logging.getLogger("meshkit.grpc")
_F = frozenset
_MAX_DOCUMENT = 1 << 20  # bytes: a config file, not a data set

# Istio's retryOn tokens as gRPC status codes (Envoy's x-envoy-retry-grpc-on and retry-on).
_RETRY_ON: dict[str, tuple[Code, ...]] = {
    "cancelled": (Code.CANCELLED,),
    "deadline-exceeded": (Code.DEADLINE_EXCEEDED,),
    "internal": (Code.INTERNAL,),
    "resource-exhausted": (Code.RESOURCE_EXHAUSTED,),
    "unavailable": (Code.UNAVAILABLE,),
    "connect-failure": (Code.UNAVAILABLE,),
    "refused-stream": (Code.UNAVAILABLE,),
    "reset": (Code.UNAVAILABLE,),
    "gateway-error": (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED),
    "5xx": (Code.UNAVAILABLE, Code.INTERNAL, Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.DATA_LOSS),
}
# An HTTP abort status as the gRPC status a client sees (Envoy's mapping).
_HTTP_TO_GRPC = {400: Code.INTERNAL, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
                 404: Code.UNIMPLEMENTED, 429: Code.UNAVAILABLE, 502: Code.UNAVAILABLE,
                 503: Code.UNAVAILABLE, 504: Code.UNAVAILABLE}  # fmt: skip


@final
@attrs.frozen(kw_only=True)
class IstioConfig:
    """What a set of Istio documents asks meshkit to enforce.

    Attributes:
        services: One `MeshConfig` per host (VirtualService + DestinationRule merged).
        authorization: The AuthorizationPolicies.
        mtls_mode: PeerAuthentication's mode (`"STRICT"`, ...), None without one.
        unsupported: Paths of Istio fields present but not enforced by meshkit.
    """

    services: tuple[MeshConfig, ...] = ()
    authorization: tuple[AuthorizationPolicy, ...] = ()
    mtls_mode: str | None = None
    unsupported: tuple[str, ...] = ()

    def mesh_config(self, host: str) -> MeshConfig:
        """Return the config of `host` (defaults if no document names it)."""
        for config in self.services:
            if _short(config.host) == _short(host):
                return config
        return MeshConfig(host=host)

    def server_policy(self, *, rate_limiter: RateLimiter | None = None) -> ServerPolicy:
        """Return a `ServerPolicy` enforcing the AuthorizationPolicies."""
        return ServerPolicy(authorization=self.authorization, rate_limiter=rate_limiter)


def _short(host: str) -> str:
    return host.split(".", 1)[0]


# ---------------------------------------------------------------- VirtualService


def _headers(node: Node) -> tuple[HeaderMatch, ...]:
    if not isinstance(node.value, dict):
        raise node.error("must be a mapping of header names")
    matches = []
    for name, value in node.value.items():
        child = node.child(name, value)
        fields = child.fields(_F({"exact", "prefix", "regex"}))
        given = {k: v.text() for k, v in fields.items()}
        if len(given) != 1:
            raise child.error("needs exactly one of exact, prefix, regex")
        try:
            matches.append(HeaderMatch(name=str(name).lower(), **given))
        except ConfigurationError as exc:
            raise child.error(exc.reason) from exc
    return tuple(matches)


_MATCH_UNSUPPORTED = _F({"uri", "scheme", "method", "authority", "port", "queryParams",
                         "sourceLabels", "withoutHeaders", "ignoreUriCase", "name",
                         "sourceNamespace", "statPrefix", "gateways"})  # fmt: skip


def _match(node: Node) -> RouteMatch:
    fields = node.fields(_F({"headers"}), _MATCH_UNSUPPORTED)
    headers = fields.get("headers")
    return RouteMatch(headers=() if headers is None else _headers(headers))


def _destination(node: Node) -> Destination:
    fields = node.fields(_F({"destination", "weight"}), _F({"headers"}))
    if "destination" not in fields:
        raise node.error("needs a destination")
    target = fields["destination"].fields(_F({"host", "subset"}), _F({"port"}))
    if "host" in target:
        target["host"].text()
    subset = target["subset"].text() if "subset" in target else None
    weight = fields["weight"].integer(0, 100) if "weight" in fields else 100
    return Destination(subset=subset, weight=weight)


def _retries(node: Node) -> RetryPolicy:
    fields = node.fields(
        _F({"attempts", "perTryTimeout", "retryOn"}), _F({"retryRemoteLocalities"})
    )
    codes: set[Code] = set()
    if "retryOn" in fields:
        for token in fields["retryOn"].text().split(","):
            if token.strip() not in _RETRY_ON:
                raise fields["retryOn"].error(f"unknown retryOn condition {token.strip()!r}")
            codes.update(_RETRY_ON[token.strip()])
    return RetryPolicy(
        attempts=fields["attempts"].integer(0, 100) if "attempts" in fields else 2,
        per_try_timeout=fields["perTryTimeout"].seconds() or None
        if "perTryTimeout" in fields
        else None,
        retry_on=frozenset(codes) if codes else frozenset({Code.UNAVAILABLE, Code.CANCELLED}),
    )


def _fault(node: Node) -> Fault:
    fields = node.fields(_F({"delay", "abort"}))
    delay, delay_percent, abort, abort_percent = None, 100.0, None, 100.0
    if "delay" in fields:
        d = fields["delay"].fields(
            _F({"fixedDelay", "percentage"}), _F({"exponentialDelay", "percent"})
        )
        delay = d["fixedDelay"].seconds() if "fixedDelay" in d else None
        delay_percent = d["percentage"].percentage() if "percentage" in d else 100.0
    if "abort" in fields:
        a = fields["abort"].fields(
            _F({"grpcStatus", "httpStatus", "percentage"}), _F({"http2Error"})
        )
        if "grpcStatus" in a:
            abort = Code[a["grpcStatus"].choice(tuple(Code.__members__))]
        elif "httpStatus" in a:
            status = a["httpStatus"].integer(200, 599)
            abort = _HTTP_TO_GRPC.get(status, Code.UNKNOWN)
        abort_percent = a["percentage"].percentage() if "percentage" in a else 100.0
    return Fault(delay=delay, delay_percent=delay_percent, abort=abort, abort_percent=abort_percent)


_HTTP_UNSUPPORTED = _F({"redirect", "directResponse", "delegate", "rewrite", "mirror", "mirrors",
                        "mirrorPercentage", "mirrorPercent", "corsPolicy", "headers"})  # fmt: skip


def _http_route(node: Node) -> HttpRoute:
    fields = node.fields(
        _F({"name", "match", "route", "timeout", "retries", "fault"}), _HTTP_UNSUPPORTED
    )
    if "route" not in fields:
        raise node.error("needs a route")
    try:
        return HttpRoute(
            name=fields["name"].text() if "name" in fields else "",
            match=tuple(_match(m) for m in fields["match"].items()) if "match" in fields else (),
            destinations=tuple(_destination(d) for d in fields["route"].items()),
            timeout=fields["timeout"].seconds() if "timeout" in fields else None,
            retries=_retries(fields["retries"]) if "retries" in fields else None,
            fault=_fault(fields["fault"]) if "fault" in fields else None,
        )
    except ConfigurationError as exc:
        if exc.field.startswith("spec."):
            raise
        raise ConfigurationError(f"{node.path}.{exc.field}", exc.value, exc.reason) from exc


def _virtual_service(spec: Node) -> tuple[str, tuple[HttpRoute, ...]]:
    fields = spec.fields(_F({"hosts", "http"}), _F({"gateways", "tcp", "tls", "exportTo"}))
    if "hosts" not in fields:
        raise spec.error("needs hosts")
    hosts = fields["hosts"].texts()
    if not hosts:
        raise fields["hosts"].error("needs at least one host")
    routes = tuple(_http_route(r) for r in fields["http"].items()) if "http" in fields else ()
    return hosts[0], routes


# ---------------------------------------------------------------- DestinationRule


def _load_balancer(node: Node) -> tuple[LoadBalancerKind, str | None]:
    fields = node.fields(
        _F({"simple", "consistentHash"}), _F({"localityLbSetting", "warmupDurationSecs", "warmup"})
    )
    if "consistentHash" in fields:
        ch = fields["consistentHash"].fields(
            _F({"httpHeaderName", "ringHash", "maglev"}),
            _F({"httpCookie", "useSourceIp", "httpQueryParameterName", "minimumRingSize"}),
        )
        header = ch["httpHeaderName"].text().lower() if "httpHeaderName" in ch else None
        kind = LoadBalancerKind.MAGLEV if "maglev" in ch else LoadBalancerKind.RING_HASH
        for key in ("ringHash", "maglev"):
            if key in ch:
                ch[key].fields(_F(), _F({"minimumRingSize", "tableSize"}))
        return kind, header
    if "simple" in fields:
        simple = fields["simple"].choice(
            ("LEAST_REQUEST", "LEAST_CONN", "ROUND_ROBIN", "RANDOM", "UNSPECIFIED", "PASSTHROUGH")
        )
        if simple == "PASSTHROUGH":
            raise fields["simple"].error("PASSTHROUGH needs a proxy; meshkit always balances")
        if simple in {"LEAST_REQUEST", "LEAST_CONN", "UNSPECIFIED"}:
            return LoadBalancerKind.LEAST_REQUEST, None
        return LoadBalancerKind[simple], None
    return LoadBalancerKind.LEAST_REQUEST, None


def _outlier(node: Node) -> OutlierConfig:
    fields = node.fields(
        _F({"consecutive5xxErrors", "consecutiveErrors", "consecutiveGatewayErrors", "interval",
            "baseEjectionTime", "maxEjectionPercent", "minHealthPercent"}),
        _F({"splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"}),
    )  # fmt: skip
    errors = fields.get("consecutive5xxErrors") or fields.get("consecutiveErrors")
    consecutive = 5 if errors is None else errors.integer(0)
    gateway = (
        fields["consecutiveGatewayErrors"].integer(0) if "consecutiveGatewayErrors" in fields else 0
    )
    base = fields["baseEjectionTime"].seconds() if "baseEjectionTime" in fields else 30.0
    interval = fields["interval"].seconds() if "interval" in fields else 10.0
    percent = (
        fields["maxEjectionPercent"].number(0, 100) if "maxEjectionPercent" in fields else 10.0
    )
    health = fields["minHealthPercent"].number(0, 100) if "minHealthPercent" in fields else 0.0
    try:
        return OutlierConfig(
            consecutive_errors=consecutive or None,
            consecutive_gateway_errors=gateway or None,
            interval=interval,
            base_ejection_time=base,
            max_ejection_time=max(base, 300.0),
            max_ejection_percent=percent,
            panic_threshold=health,
        )
    except ConfigurationError as exc:
        raise node.error(f"{exc.field}: {exc.reason}") from exc


def _traffic_policy(node: Node) -> TrafficPolicy:
    fields = node.fields(
        _F({"loadBalancer", "connectionPool", "outlierDetection"}),
        _F({"tls", "portLevelSettings", "tunnel", "proxyProtocol"}),
    )
    kind, header = (
        _load_balancer(fields["loadBalancer"])
        if "loadBalancer" in fields
        else (LoadBalancerKind.LEAST_REQUEST, None)
    )
    max_requests, max_pending = None, 1024
    if "connectionPool" in fields:
        pool = fields["connectionPool"].fields(_F({"http"}), _F({"tcp"}))
        if "http" in pool:
            http = pool["http"].fields(
                _F({"http2MaxRequests", "http1MaxPendingRequests"}),
                _F({"maxRequestsPerConnection", "maxRetries", "idleTimeout", "h2UpgradePolicy",
                    "useClientProtocol", "maxConcurrentStreams"}),
            )  # fmt: skip
            if "http2MaxRequests" in http:
                max_requests = http["http2MaxRequests"].integer(1)
            if "http1MaxPendingRequests" in http:
                max_pending = http["http1MaxPendingRequests"].integer(0)
    outlier = _outlier(fields["outlierDetection"]) if "outlierDetection" in fields else None
    return TrafficPolicy(load_balancer=kind, hash_header=header, max_requests=max_requests,
                         max_pending=max_pending, outlier=outlier)  # fmt: skip


def _labels(node: Node) -> dict[str, str]:
    if not isinstance(node.value, dict):
        raise node.error("must be a mapping of label names to values")
    return {str(k): node.child(k, v).text() for k, v in node.value.items()}


def _destination_rule(spec: Node) -> tuple[str, tuple[Subset, ...], TrafficPolicy]:
    fields = spec.fields(
        _F({"host", "subsets", "trafficPolicy"}), _F({"exportTo", "workloadSelector"})
    )
    if "host" not in fields:
        raise spec.error("needs a host")
    subsets = []
    for item in fields["subsets"].items() if "subsets" in fields else []:
        s = item.fields(_F({"name", "labels"}), _F({"trafficPolicy"}))
        if "name" not in s:
            raise item.error("needs a name")
        labels = _labels(s["labels"]) if "labels" in s else {}
        subsets.append(Subset(name=s["name"].text(), labels=labels))
    policy = (
        _traffic_policy(fields["trafficPolicy"]) if "trafficPolicy" in fields else TrafficPolicy()
    )
    return fields["host"].text(), tuple(subsets), policy


# ---------------------------------------------------------------- security


def _authorization(name: str, spec: Node) -> AuthorizationPolicy:
    fields = spec.fields(
        _F({"action", "rules"}), _F({"selector", "targetRef", "targetRefs", "provider"})
    )
    action = fields["action"].choice(("ALLOW", "DENY")) if "action" in fields else "ALLOW"
    rules = []
    for rule in fields["rules"].items() if "rules" in fields else []:
        mark = rule.reported()
        r = rule.fields(_F({"from", "to"}), _F({"when"}))
        sources = []
        for item in r["from"].items() if "from" in r else []:
            src = item.fields(_F({"source"}))["source"].fields(
                _F({"principals", "notPrincipals"}),
                _F({"requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
                    "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"}),
            )  # fmt: skip
            sources.append(Source(
                principals=src["principals"].texts() if "principals" in src else (),
                not_principals=src["notPrincipals"].texts() if "notPrincipals" in src else (),
            ))  # fmt: skip
        operations = []
        for item in r["to"].items() if "to" in r else []:
            op = item.fields(_F({"operation"}))["operation"].fields(
                _F({"methods", "notMethods", "paths", "notPaths"}),
                _F({"hosts", "notHosts", "ports", "notPorts"}),
            )
            operations.append(Operation(**{
                attr: op[key].texts()
                for key, attr in (("methods", "methods"), ("notMethods", "not_methods"),
                                  ("paths", "paths"), ("notPaths", "not_paths"))
                if key in op
            }))  # fmt: skip
        rules.append(Rule(
            sources=tuple(sources),
            operations=tuple(operations),
            unenforced=rule.reported_since(mark),
        ))  # fmt: skip
    return AuthorizationPolicy(name=name, action=Action(action), rules=tuple(rules))


def _peer_authentication(spec: Node) -> str:
    fields = spec.fields(_F({"mtls"}), _F({"selector", "portLevelMtls"}))
    if "mtls" not in fields:
        return "UNSET"
    mtls = fields["mtls"].fields(_F({"mode"}))
    return (
        mtls["mode"].choice(("STRICT", "PERMISSIVE", "DISABLE", "UNSET"))
        if "mode" in mtls
        else "UNSET"
    )


# ---------------------------------------------------------------- documents

_KINDS = ("VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy")


def load_istio(text: str) -> IstioConfig:
    """Load Istio documents (YAML, `---` separated) into an `IstioConfig`.

    Raises:
        ConfigurationError: If the YAML is malformed, a document is not one of the four
            kinds, or a field is unknown or has a bad value (the error names its path,
            e.g. `spec.http[0].route[1].weight`).
    """
    unsupported: list[str] = []
    services: dict[str, dict[str, object]] = {}
    policies: list[AuthorizationPolicy] = []
    mode: str | None = None
    for kind, name, spec in _documents(text, unsupported):
        if kind == "VirtualService":
            host, routes = _virtual_service(spec)
            services.setdefault(_short(host), {"host": host})["routes"] = routes
        elif kind == "DestinationRule":
            host, subsets, traffic = _destination_rule(spec)
            entry = services.setdefault(_short(host), {"host": host})
            entry.update(subsets=subsets, traffic_policy=traffic)
        elif kind == "PeerAuthentication":
            mode = _peer_authentication(spec)
        else:
            policies.append(_authorization(name, spec))
    for path in unsupported:
        _LOG.warning("Istio field %s is not enforced by meshkit", path, extra={"istio_field": path})
    return IstioConfig(
        services=tuple(_mesh(entry) for entry in services.values()),
        authorization=tuple(policies),
        mtls_mode=mode,
        unsupported=tuple(unsupported),
    )


def _documents(text: str, unsupported: list[str]) -> list[tuple[str, str, Node]]:
    """Parse the YAML; return each document's kind, name and spec node."""
    import yaml  # noqa: PLC0415 - optional dependency (the grpc extra)

    given: object = text  # checked at run time: untyped callers may pass bytes or None
    if not isinstance(given, str) or len(text) > _MAX_DOCUMENT:
        reason = f"must be YAML text of at most {_MAX_DOCUMENT} bytes"
        raise ConfigurationError("text", str(text)[:80], reason)
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise ConfigurationError("yaml", text[:80], f"is not valid YAML: {exc}") from exc
    result = []
    for index, document in enumerate(documents):
        root = Node(document, f"doc[{index}]", unsupported).fields(
            _F({"apiVersion", "kind", "metadata", "spec"}), _F({"status"})
        )
        if "kind" not in root:
            reason = f"must be one of {', '.join(_KINDS)}"
            raise ConfigurationError(f"doc[{index}].kind", None, reason)
        kind = root["kind"].choice(_KINDS)
        spec = root["spec"].value if "spec" in root else {}
        # Paths inside a document read `spec.http[0]...`, as Istio's own validation prints.
        result.append((kind, _name(root), Node(spec, "spec", unsupported)))
    return result


def _name(root: dict[str, Node]) -> str:
    if "metadata" not in root or not isinstance(root["metadata"].value, dict):
        return "policy"
    name = root["metadata"].value.get("name", "policy")
    return name if isinstance(name, str) else "policy"


def _mesh(entry: dict[str, Any]) -> MeshConfig:
    # A subset is checked here, once the VirtualService meets its DestinationRule, and named
    # by its place in the VirtualService (MeshConfig's own check knows no indices).
    names = {subset.name for subset in entry.get("subsets", ())}
    for i, route in enumerate(entry.get("routes", ())):
        for j, destination in enumerate(route.destinations):
            if destination.subset is not None and destination.subset not in names:
                raise ConfigurationError(
                    f"spec.http[{i}].route[{j}].destination.subset",
                    destination.subset,
                    "is not defined by the DestinationRule",
                )
    return MeshConfig(**entry)
