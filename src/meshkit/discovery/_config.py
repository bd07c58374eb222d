"""What a service registers: its address, labels, weights and one health check; watch filters."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import in_range, instance_of, optional, require

__all__ = [
    "GrpcCheck",
    "HttpCheck",
    "ServiceRegistration",
    "TtlCheck",
    "WatchQuery",
    "check_service_id",
    "check_service_name",
    "check_text",
    "consul_duration",
    "port_number",
]

# Consul's own rule for names that must also be valid DNS labels (agent/dns.go); ids may hold
# more, but a NUL, a slash or a control character breaks the URL paths that carry them.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_MAX_PORT = 65535
# Consul's limits on service meta (structs.ValidateServiceMetadata); beyond them the agent
# answers 400, which a registration would only meet at entry, or in a re-registration.
_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_META_VALUE_BYTES = 512
_META_PAIRS = 64
_META_RESERVED = "consul-"
_MAX_DURATION = 86_400.0 * 365  # Go's time.Duration holds ~292 years; a year is plenty


def check_text(field: str, value: object, *, allow_empty: bool = True) -> str:
    """Return `value` if it is a str that can travel in a request: UTF-8, no NUL.

    Raises:
        ConfigurationError: If it is not, naming `field`.
    """
    require(isinstance(value, str), field, value, "must be str")
    text: str = value  # type: ignore[assignment]  # checked just above
    require(allow_empty or bool(text), field, value, "must not be empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(field, value, "must be valid UTF-8 text") from None
    require("\x00" not in text, field, value, "must not contain NUL")
    return text


def port_number(digits: str) -> int | None:
    """Return `digits` as a TCP port (1-65535), or None if they are not one."""
    # The length check comes first: int() refuses strings of more than 4300 digits.
    ok = 0 < len(digits) <= len(str(_MAX_PORT)) and digits.isascii() and digits.isdecimal()
    port = int(digits) if ok else 0
    return port if 0 < port <= _MAX_PORT else None


def check_service_name(field: str, value: object) -> str:
    """Return `value` if it is a service name (a DNS label).

    Raises:
        ConfigurationError: If it is not, naming `field`.
    """
    text = check_text(field, value, allow_empty=False)
    require(bool(_NAME.fullmatch(text)), field, value, "must be a DNS label")
    return text


def check_service_id(field: str, value: object) -> str:
    """Return `value` if it can name a registered instance in a URL path.

    Looser than `ServiceRegistration.service_id`, since a default id holds the address; but a
    slash or a dot segment would make the agent's path point elsewhere.

    Raises:
        ConfigurationError: If it cannot, naming `field`.
    """
    text = check_text(field, value, allow_empty=False)
    ok = "/" not in text and text not in {".", ".."}
    require(ok, field, value, "must not hold '/' nor be a dot segment")
    return text


def _service_name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_service_name(attribute.name, value)


def _service_id(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        text = check_text(attribute.name, value, allow_empty=False)
        ok = bool(_ID.fullmatch(text))
        require(ok, attribute.name, value, "must be letters, digits and _ . : - (<= 128)")


def _to_tags(value: object) -> tuple[str, ...]:
    require(not isinstance(value, str | bytes), "tags", value, "must be a collection of str")
    require(isinstance(value, Iterable), "tags", value, "must be a collection of str")
    tags: tuple[object, ...] = tuple(value)  # type: ignore[arg-type]  # checked just above
    for tag in tags:
        check_text("tags", tag, allow_empty=False)
    return tuple(sorted({str(tag) for tag in tags}))


def _meta_key(field: str, value: object) -> str:
    key = check_text(field, value, allow_empty=False)
    ok = bool(_META_KEY.fullmatch(key)) and not key.lower().startswith(_META_RESERVED)
    require(ok, field, value, "must be 1-128 of A-Z a-z 0-9 _ - and not start with consul-")
    return key


def _to_meta(value: object) -> tuple[tuple[str, str], ...]:
    require(isinstance(value, Mapping), "meta", value, "must be a mapping of str to str")
    pairs: dict[str, str] = dict(value)  # type: ignore[call-overload]  # a Mapping, see above
    require(len(pairs) <= _META_PAIRS, "meta", value, f"must hold <= {_META_PAIRS} pairs")
    for key, item in pairs.items():
        _meta_key("meta", key)
        size = len(check_text("meta", item).encode())
        require(size <= _META_VALUE_BYTES, "meta", value, "values must be <= 512 bytes")
    return tuple(sorted(pairs.items()))


def _address(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    text = check_text(attribute.name, value)
    require(not any(c.isspace() for c in text), attribute.name, value, "must not hold spaces")


_SECONDS = [instance_of(int, float), in_range(0.001, _MAX_DURATION)]


def consul_duration(seconds: float) -> str:
    """Return `seconds` as a Go duration string in milliseconds (`1500ms`), Consul's format."""
    return f"{max(1, math.ceil(seconds * 1000))}ms"


@attrs.frozen(kw_only=True)
class TtlCheck:
    """The service reports its own health: meshkit marks the check passing every `ttl / 3`.

    If the heartbeat stops (the process hangs or dies), Consul marks the check critical after
    `ttl` seconds and watchers drop the instance.

    Attributes:
        ttl: Seconds without a heartbeat after which Consul marks the service critical.

    Raises:
        ConfigurationError: If `ttl` is not a finite number of seconds in `[0.001, 1 year]`.
    """

    ttl: float = attrs.field(validator=_SECONDS)

    @property
    def heartbeat(self) -> float:
        """Seconds between two heartbeats: a third of the TTL, so two may be lost."""
        return self.ttl / 3

    def definition(self) -> dict[str, object]:
        """Return the check as the agent's registration API spells it."""
        return {"TTL": consul_duration(self.ttl)}


@attrs.frozen(kw_only=True)
class HttpCheck:
    """Consul calls `url` every `interval`; a 2xx answer is passing, 429 warning, else critical.

    Attributes:
        url: The URL the agent calls (it must be reachable from the agent).
        interval: Seconds between two checks.
        timeout: Seconds the agent waits for an answer.
        method: The HTTP method.
        tls_skip_verify: Whether the agent skips verifying the server's certificate.

    Raises:
        ConfigurationError: If `url` is not an http(s) URL or a duration is not a positive
            finite number of seconds.
    """

    url: str = attrs.field()
    interval: float = attrs.field(default=10.0, validator=_SECONDS)
    timeout: float = attrs.field(default=5.0, validator=_SECONDS)
    method: str = attrs.field(default="GET")
    tls_skip_verify: bool = attrs.field(default=False, validator=instance_of(bool))

    @url.validator
    def _check_url(self, attribute: attrs.Attribute[str], value: object) -> None:
        text = check_text(attribute.name, value)
        ok = text.startswith(("http://", "https://")) and not any(c.isspace() for c in text)
        require(ok, attribute.name, value, "must be an http:// or https:// URL")

    @method.validator
    def _check_method(self, attribute: attrs.Attribute[str], value: object) -> None:
        ok = isinstance(value, str) and value in {"GET", "HEAD", "POST", "PUT", "OPTIONS"}
        require(ok, attribute.name, value, "must be GET, HEAD, POST, PUT or OPTIONS")

    def definition(self) -> dict[str, object]:
        """Return the check as the agent's registration API spells it."""
        return {
            "HTTP": self.url,
            "Method": self.method,
            "Interval": consul_duration(self.interval),
            "Timeout": consul_duration(self.timeout),
            "TLSSkipVerify": self.tls_skip_verify,
        }


@attrs.frozen(kw_only=True)
class GrpcCheck:
    """Consul calls the standard `grpc.health.v1.Health/Check` on `target` every `interval`.

    Consul's gRPC check cannot present a client certificate, so a server that requires
    mTLS needs a plaintext health port of its own (or a `TtlCheck`).

    Attributes:
        target: `host:port`, optionally followed by `/service` to check one service.
        interval: Seconds between two checks.
        timeout: Seconds the agent waits for an answer.
        use_tls: Whether the agent connects with TLS (server authentication only).

    Raises:
        ConfigurationError: If `target` is not `host:port[/service]` or a duration is not a
            positive finite number of seconds.
    """

    target: str = attrs.field()
    interval: float = attrs.field(default=10.0, validator=_SECONDS)
    timeout: float = attrs.field(default=5.0, validator=_SECONDS)
    use_tls: bool = attrs.field(default=False, validator=instance_of(bool))

    @target.validator
    def _check_target(self, attribute: attrs.Attribute[str], value: object) -> None:
        text = check_text(attribute.name, value)
        hostport = text.split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        ok = bool(host) and port_number(port) is not None
        require(ok, attribute.name, value, "must be host:port or host:port/service")

    def definition(self) -> dict[str, object]:
        """Return the check as the agent's registration API spells it."""
        return {
            "GRPC": self.target,
            "GRPCUseTLS": self.use_tls,
            "Interval": consul_duration(self.interval),
            "Timeout": consul_duration(self.timeout),
        }


Check = TtlCheck | HttpCheck | GrpcCheck


def _check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    ok = value is None or isinstance(value, TtlCheck | HttpCheck | GrpcCheck)
    require(ok, attribute.name, value, "must be a TtlCheck, HttpCheck, GrpcCheck or None")


@attrs.frozen(kw_only=True)
class ServiceRegistration:
    """One instance of a service, as it is registered with the registry.

    Attributes:
        name: The service name, a DNS label (`orders`).
        port: The TCP port the instance listens on, 1-65535.
        address: The address clients connect to; empty means the node address of the agent
            that holds the registration (so `ConsulRegistry` requires it with several agents).
        service_id: Unique per agent; defaults to `name-address-port`.
        tags: Labels for filtering (`canary`, `v2`), kept sorted and unique.
        meta: Key/value metadata; `zone` and `version` become endpoint fields for watchers.
        weight: Relative share of traffic while passing (Consul's `Weights.Passing`).
        warning_weight: Share while a check warns (Consul's `Weights.Warning`).
        check: The health check, or None for none (the instance is then always passing).
        deregister_critical_after: Seconds after which Consul removes an instance whose
            check stays critical (Consul reaps at most every 30 s, and not below 1 minute);
            None disables it. On by default so a crashed process does not linger.
        resync_interval: For HTTP/gRPC checks (no heartbeat), seconds between two
            verifications that the agent still knows the service (re-registered if not).

    Raises:
        ConfigurationError: If a field has the wrong type or is out of range (name not a
            DNS label, port outside 1-65535, NaN or negative durations, unknown check type).
    """

    name: str = attrs.field(validator=_service_name)
    port: int = attrs.field(validator=[instance_of(int), in_range(1, 65535)])
    address: str = attrs.field(default="", validator=_address)
    service_id: str | None = attrs.field(default=None, validator=_service_id)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
    meta: tuple[tuple[str, str], ...] = attrs.field(factory=dict, converter=_to_meta)
    weight: int = attrs.field(default=1, validator=[instance_of(int), in_range(1, 65535)])
    warning_weight: int = attrs.field(default=1, validator=[instance_of(int), in_range(0, 65535)])
    check: Check | None = attrs.field(default=None, validator=_check)
    deregister_critical_after: float | None = attrs.field(
        default=60.0, validator=optional(attrs.validators.and_(*_SECONDS))
    )
    resync_interval: float = attrs.field(default=10.0, validator=_SECONDS)

    @property
    def id(self) -> str:
        """The service id: `service_id`, or `name-address-port`."""
        if self.service_id is not None:
            return self.service_id
        return f"{self.name}-{self.address or 'agent'}-{self.port}".replace("/", "_")

    @property
    def check_id(self) -> str:
        """The id Consul gives the service's single check."""
        return f"service:{self.id}"

    def payload(self) -> dict[str, object]:
        """Return the body of `PUT /v1/agent/service/register` for this instance."""
        body: dict[str, object] = {
            "Name": self.name,
            "ID": self.id,
            "Port": self.port,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Weights": {"Passing": self.weight, "Warning": self.warning_weight},
        }
        if self.address:
            body["Address"] = self.address
        if self.check is not None:
            check = self.check.definition()
            if self.deregister_critical_after is not None:
                after = consul_duration(self.deregister_critical_after)
                check["DeregisterCriticalServiceAfter"] = after
            body["Check"] = check
        return body


@attrs.frozen(kw_only=True)
class WatchQuery:
    """Which instances of a service a watch keeps.

    Attributes:
        passing_only: Keep passing instances only (the default); otherwise warning instances
            are kept too, with their warning weight. Critical instances are always dropped.
        tags: Keep instances that carry every one of these tags.
        meta: Keep instances whose metadata holds every one of these pairs.
        zone_key: The metadata key that becomes `Endpoint.zone`.

    Raises:
        ConfigurationError: If a field has the wrong type.
    """

    passing_only: bool = attrs.field(default=True, validator=instance_of(bool))
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
    meta: tuple[tuple[str, str], ...] = attrs.field(factory=dict, converter=_to_meta)
    zone_key: str = attrs.field(default="zone")

    @zone_key.validator
    def _check_zone_key(self, attribute: attrs.Attribute[str], value: object) -> None:
        _meta_key(attribute.name, value)
