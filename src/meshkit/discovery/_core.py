"""The decisions of watches and registrations, free of I/O so hypothesis can drive them.

`WatchCore` follows Consul's rules for blocking queries (reset the index when it goes
backwards, never block on an index that is not > 0, rate-limit, back off with jitter on
errors and fail over to the next agent); `LeaseCore` decides when a registration is
refreshed, re-registered or moved to another agent; `endpoints_from_health` turns the health
endpoint's answer into a frozen, sorted endpoint snapshot.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import ge, in_range, instance_of
from meshkit.balancing import Endpoint

if TYPE_CHECKING:
    from meshkit.discovery._config import WatchQuery

__all__ = [
    "AgentBackoff",
    "LeaseAction",
    "LeaseCore",
    "WatchCore",
    "WatchPlan",
    "endpoints_from_health",
    "next_index",
]


def next_index(previous: int, returned: object) -> int:
    """Return the index to send with the next blocking query, by Consul's documented rules.

    The agent sends `X-Consul-Index` as a string. An index that went backwards (the servers'
    state was reset or restored, a dev agent restarted) restarts from 0, a plain read; an
    index that is not > 0 (or not a number at all) becomes 1, so the next query still blocks
    instead of returning at once in a loop.
    """
    try:
        index = int(str(returned))
    except ValueError:
        return 1
    if index <= 0:
        return 1
    return 0 if index < previous else index


@attrs.frozen(kw_only=True)
class AgentBackoff:
    """Exponential backoff with equal jitter: attempt `n` waits in `[c/2, c)`, `c = base*2**n`.

    Half of the delay is random, so clients that failed together do not retry together, and
    half is kept, so a broken agent is never hammered (full jitter may draw ~0).

    Attributes:
        base: The first ceiling, in seconds.
        cap: The largest ceiling, in seconds.

    Raises:
        ConfigurationError: If `base` or `cap` is not a finite number in `[0.001, 3600]`, or
            `cap < base`.
    """

    base: float = attrs.field(
        default=0.2, validator=[instance_of(int, float), in_range(0.001, 3600)]
    )
    cap: float = attrs.field(
        default=10.0, validator=[instance_of(int, float), in_range(0.001, 3600)]
    )

    def __attrs_post_init__(self) -> None:
        if self.cap < self.base:
            raise ConfigurationError("cap", self.cap, f"must be >= base ({self.base})")

    def delay(self, attempt: int, draw: float) -> float:
        """Return the delay before retry `attempt` (0-based), with `draw` uniform in [0, 1)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 64))
        return ceiling / 2 + ceiling / 2 * draw

    def failover(self, failures: int, agents: int, draw: float) -> float:
        """Return the pause after `failures` failed calls in a row, rotating over `agents`.

        None while some agent has not been tried in this round, then the backoff.
        """
        return 0.0 if failures < agents else self.delay(failures - agents, draw)


@attrs.frozen
class WatchPlan:
    """The next query of a watch: which agent, with which index, after how long a pause."""

    agent: int
    index: int
    delay: float


@attrs.define(eq=False)
class WatchCore:
    """One watch's state between two answers of the health endpoint.

    Use: `plan(now)` -> wait `delay` -> `started(now)` -> query -> `succeeded(...)` or
    `failed(...)`. A failure moves to the next agent at once until every agent has failed
    once in a row, then backs off; the last good snapshot stays in `snapshot` meanwhile.
    """

    agents: int = attrs.field(validator=[instance_of(int), ge(1)])
    query: WatchQuery
    backoff: AgentBackoff = attrs.field(factory=AgentBackoff)
    min_interval: float = attrs.field(default=0.1, validator=[instance_of(int, float), ge(0)])
    index: int = attrs.field(default=0, init=False)
    agent: int = attrs.field(default=0, init=False)
    failures: int = attrs.field(default=0, init=False)
    snapshot: tuple[Endpoint, ...] | None = attrs.field(default=None, init=False)
    _not_before: float = attrs.field(default=float("-inf"), init=False)

    def plan(self, now: float) -> WatchPlan:
        """Return the next query: rate-limited to one start per `min_interval`."""
        return WatchPlan(self.agent, self.index, max(0.0, self._not_before - now))

    def started(self, now: float) -> None:
        """Record that a query starts now (the rate limit counts from starts)."""
        self._not_before = now + self.min_interval

    def succeeded(self, returned_index: object, entries: object) -> tuple[Endpoint, ...] | None:
        """Take an answer; return the new snapshot, or None when it did not change."""
        self.failures = 0
        self.index = next_index(self.index, returned_index)
        snapshot = endpoints_from_health(entries, self.query)
        if snapshot == self.snapshot:
            return None
        self.snapshot = snapshot
        return snapshot

    def failed(self, now: float, draw: float) -> float:
        """Record a failed query; return the pause before the next one (next agent first)."""
        self.failures += 1
        self.agent = (self.agent + 1) % self.agents
        delay = self.backoff.failover(self.failures, self.agents, draw)
        self._not_before = max(self._not_before, now + delay)
        return delay


class LeaseAction(enum.Enum):
    """What a registration does next with its agent."""

    REGISTER = "register"
    """(Re-)register the service: first time, after a 404, or on another agent."""
    REFRESH = "refresh"
    """Heartbeat the TTL check, or verify that the agent still knows the service."""


@attrs.define(eq=False)
class LeaseCore:
    """A registration's state: which agent holds it and whether that agent still knows it.

    Use: `action()` (and `registering()` before a registration is sent) -> call the agent ->
    `succeeded()`, `forgotten()` or `failed(draw)`, each returning the pause before the next
    `action()`. `holders` are the agents to deregister from on exit.
    """

    agents: int = attrs.field(validator=[instance_of(int), ge(1)])
    interval: float
    backoff: AgentBackoff = attrs.field(factory=AgentBackoff)
    agent: int = attrs.field(default=0, init=False)
    registered: bool = attrs.field(default=False, init=False)
    failures: int = attrs.field(default=0, init=False)
    registrations: int = attrs.field(default=0, init=False)
    holders: set[int] = attrs.field(factory=set, init=False)

    def action(self) -> LeaseAction:
        """Return what to ask the current agent."""
        return LeaseAction.REFRESH if self.registered else LeaseAction.REGISTER

    def registering(self) -> None:
        """Record that a registration is sent to the current agent.

        From now on that agent may hold the service, even if its answer never arrives (a
        timeout after the agent did register it), so it is deregistered there on exit.
        """
        self.holders.add(self.agent)

    def succeeded(self) -> float:
        """Record a successful call; the next refresh is one interval later."""
        if not self.registered:
            self.registrations += 1
        self.registered = True
        self.failures = 0
        return self.interval

    def forgotten(self) -> float:
        """Record that the agent no longer knows the service: register again at once."""
        self.registered = False
        self.holders.discard(self.agent)
        return 0.0

    def failed(self, draw: float) -> float:
        """Record a failed call: register on the next agent, at once the first time round."""
        self.failures += 1
        self.registered = False
        self.agent = (self.agent + 1) % self.agents
        return self.backoff.failover(self.failures, self.agents, draw)


def _status(checks: object) -> str:
    """Return the worst status of a health entry's checks (maintenance counts as critical)."""
    statuses = {c.get("Status") for c in checks if isinstance(c, Mapping)}  # type: ignore[attr-defined]
    if statuses - {"passing", "warning"}:
        return "critical"
    return "warning" if "warning" in statuses else "passing"


def _mapping(value: object) -> Mapping[str, object]:
    """Return `value` if it is a JSON object; raise TypeError (a malformed entry) if not."""
    if not isinstance(value, Mapping):
        raise TypeError(value)
    return value


def _endpoint(entry: object, query: WatchQuery) -> Endpoint | None:
    """Return the entry as an endpoint, or None when a filter drops it."""
    entry = _mapping(entry)
    service = _mapping(entry["Service"])
    node = _mapping(entry.get("Node") or {})
    checks = entry.get("Checks") or []
    if not isinstance(checks, list):
        raise TypeError(checks)
    status = _status(checks)
    if status == "critical" or (query.passing_only and status == "warning"):
        return None
    tags = set(service.get("Tags") or ())  # type: ignore[call-overload]  # TypeError if not
    meta = {str(k): str(v) for k, v in _mapping(service.get("Meta") or {}).items()}
    if not tags.issuperset(query.tags) or any(meta.get(k) != v for k, v in query.meta):
        return None
    weights = _mapping(service.get("Weights") or {})
    weight = weights.get("Passing" if status == "passing" else "Warning", 1)
    return Endpoint(
        host=service.get("Address") or node.get("Address"),  # type: ignore[arg-type]
        port=service["Port"],  # type: ignore[arg-type]
        weight=weight,  # type: ignore[arg-type]
        zone=str(meta.get(query.zone_key, "")),
        metadata=meta,
    )


def endpoints_from_health(entries: object, query: WatchQuery) -> tuple[Endpoint, ...]:
    """Convert `GET /v1/health/service/<name>` entries into a sorted endpoint snapshot.

    Instances whose checks are critical (or warning, with `passing_only`) or that miss a tag
    or meta pair of `query` are dropped; weights come from Consul's `Weights`, the zone from
    the `query.zone_key` meta key, the metadata from the service's meta. Malformed entries are
    skipped rather than failing the whole snapshot; two instances on one address keep the
    first by service id.
    """
    if not isinstance(entries, list):
        return ()
    found: dict[tuple[str, int], tuple[str, Endpoint]] = {}
    for entry in entries:
        try:
            endpoint = _endpoint(entry, query)
            service_id = str(entry["Service"].get("ID", ""))
        except (KeyError, TypeError, AttributeError, ConfigurationError):
            continue
        if endpoint is None:
            continue
        key = (endpoint.host, endpoint.port)
        if key not in found or service_id < found[key][0]:
            found[key] = (service_id, endpoint)
    return tuple(found[key][1] for key in sorted(found))
