"""Outlier detection: eject misbehaving endpoints from any balancer for a while (Envoy style)."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, final

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import require
from meshkit.balancing._endpoint import Endpoint, LoadBalancer, Outcome, check_endpoints
from meshkit.balancing._outlierconfig import OutlierConfig
from meshkit.balancing._snapshot import Address, address, carry

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["OutlierDetector"]

_MAX_INTERVALS = float(2**53)
"""More intervals than any multiplier can need, and exact as a float."""


class _Host:
    """Mutable per-address counters, touched only under the detector's lock."""

    __slots__ = ("back", "consecutive", "ejections", "failures", "gateway", "successes")

    def __init__(self) -> None:
        self.consecutive = 0
        self.gateway = 0
        self.successes = 0
        self.failures = 0
        self.ejections = 0
        self.back = -math.inf  # when its last ejection ended

    def reset(self) -> None:
        self.consecutive = self.gateway = self.successes = self.failures = 0


@final
class OutlierDetector:
    """Wrap any `LoadBalancer` so that picks skip endpoints ejected for misbehaving.

    Outcomes reported through the detector (and forwarded to the inner balancer) feed four
    checks, as in Envoy's outlier detection and Istio's `outlierDetection`: consecutive errors
    and consecutive gateway errors eject at once; success-rate deviation and failure
    percentage are evaluated once per `interval` over the requests seen in it. An ejection
    lasts `base_ejection_time` times a multiplier (at most `max_ejection_time`) that each
    ejection raises by one until `base_ejection_time x multiplier` reaches
    `max_ejection_time` (as Envoy caps it), and that drops by one at each scheduled
    evaluation (one per `interval`) that finds the endpoint back for at least an `interval`,
    counted even when nothing called the detector meanwhile. At most
    `max_ejection_percent` of the endpoints are ejected at once (at least one may be), and
    when fewer than `panic_threshold` percent are healthy every endpoint is used again.

    Nothing runs in the background: the detector reads its clock on `pick()`, `report()` and
    the read-only properties, returning ejected endpoints exactly when their time is up and
    running the interval checks lazily once `interval` has elapsed since the last ones.
    `evaluate()` runs them now. The inner balancer sees only the healthy endpoints, through
    its own `update()` (so change the endpoint set through the detector's `update()`, not the
    inner balancer's); outcomes reported for an ejected endpoint are forwarded but not
    counted. A pick takes no lock unless it is the first to find a check due (an ejection
    ending or an interval over), which it then runs; reports take a short lock for the
    counters, and a change of the healthy set is pushed to the inner balancer under a second
    lock so the newest set wins.

    Args:
        inner: The balancer to protect; its current endpoints become the detector's.
        config: The thresholds (Envoy's defaults when omitted).
        clock: The time source for ejection times and intervals.

    Raises:
        ConfigurationError: If `inner` is not a `LoadBalancer` or `config` not an
            `OutlierConfig`.
    """

    __slots__ = (
        "_all",
        "_clock",
        "_config",
        "_ejected",
        "_hosts",
        "_inner",
        "_lock",
        "_next_check",
        "_next_eval",
        "_panic",
        "_push_lock",
        "_pushed",
        "_target",
    )

    _inner: LoadBalancer
    _config: OutlierConfig
    _clock: Clock
    _lock: threading.Lock
    _push_lock: threading.Lock
    _all: tuple[Endpoint, ...]
    _hosts: dict[Address, _Host]
    _ejected: dict[Address, float]
    _next_eval: float
    _next_check: float
    _target: tuple[Endpoint, ...]
    _pushed: tuple[Endpoint, ...]
    _panic: bool

    def __init__(
        self,
        inner: LoadBalancer,
        config: OutlierConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        require(isinstance(inner, LoadBalancer), "inner", inner, "must implement LoadBalancer")
        config = OutlierConfig() if config is None else config
        require(isinstance(config, OutlierConfig), "config", config, "must be an OutlierConfig")
        self._inner = inner
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._all = check_endpoints(inner.endpoints)
        self._hosts = carry({}, self._all, _Host)
        self._ejected = {}
        self._next_eval = clock.now() + config.interval
        self._next_check = self._next_eval
        self._target = self._pushed = self._all
        self._panic = False

    def __repr__(self) -> str:
        return f"OutlierDetector({self._inner!r}, {len(self._ejected)} ejected)"

    @property
    def inner(self) -> LoadBalancer:
        """The wrapped balancer."""
        return self._inner

    @property
    def config(self) -> OutlierConfig:
        """The thresholds in force."""
        return self._config

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every configured endpoint, ejected or not."""
        return self._all

    @property
    def ejected(self) -> tuple[Endpoint, ...]:
        """The endpoints ejected now, in endpoint order."""
        self._refresh()
        ejected = self._ejected
        return tuple(e for e in self._all if address(e) in ejected)

    @property
    def panic(self) -> bool:
        """Whether too few endpoints are healthy, so that all are being used."""
        self._refresh()
        return self._panic

    def ejected_until(self, endpoint: Endpoint) -> float | None:
        """Return when `endpoint`'s ejection ends on the clock, or None if it is not ejected."""
        self._refresh()
        return self._ejected.get(address(endpoint))

    def pick(self, key: str | bytes | None = None) -> Endpoint:
        """Pick from the inner balancer, which holds only the healthy endpoints.

        Raises:
            NoAvailableEndpointError: If there are no endpoints, or all are ejected and the
                panic threshold is 0.
        """
        if self._clock.now() >= self._next_check:
            self._refresh()
        try:
            return self._inner.pick(key)
        except NoAvailableEndpointError as exc:
            every = self._all
            if every and not self._target:
                reason = f"all {len(every)} endpoints ejected"
                raise NoAvailableEndpointError("OutlierDetector", reason) from exc
            raise

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; kept addresses keep their counters and ejections.

        If the smaller set would leave more than `max_ejection_percent` of it ejected, the
        ejections due to end soonest end now, so the limit holds for the new set too.

        Raises:
            ConfigurationError: If an item is not an `Endpoint` or two share an address.
        """
        checked = check_endpoints(endpoints)
        now = self._clock.now()
        with self._lock:
            self._all = checked
            self._hosts = carry(self._hosts, checked, _Host)
            self._ejected = {a: t for a, t in self._ejected.items() if a in self._hosts}
            self._release_excess(now)
            self._retarget()
        self._push()

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:
        """Forward the outcome to the inner balancer, then count it (it may eject now).

        Raises:
            ConfigurationError: If `outcome` is not an `Outcome` (nothing is forwarded or
                counted), or the inner balancer rejects the report.
        """
        require(isinstance(outcome, Outcome), "outcome", outcome, "must be an Outcome")
        self._inner.report(endpoint, outcome, latency)
        now = self._clock.now()
        with self._lock:
            changed = self._advance(now)
            key = address(endpoint)
            host = self._hosts.get(key)
            if host is not None and key not in self._ejected:
                changed = self._record(key, host, outcome, now) or changed
            if changed:
                self._retarget()
        if changed:
            self._push()

    def evaluate(self) -> None:
        """Run the interval checks (success rate, failure percentage) now, and restart it."""
        now = self._clock.now()
        with self._lock:
            returned = self._expire(now)
            changed = self._evaluate(now, returned, explicit=True) or bool(returned)
            self._retarget() if changed else self._reschedule()
        if changed:
            self._push()

    # ------------------------------------------------------------ under self._lock

    def _refresh(self) -> None:
        now = self._clock.now()
        with self._lock:
            changed = self._advance(now)
            if changed:
                self._retarget()
        if changed:
            self._push()

    def _advance(self, now: float) -> bool:
        if now < self._next_check:
            return False
        returned = self._expire(now)
        changed = bool(returned)
        if now >= self._next_eval:
            changed = self._evaluate(now, returned, explicit=False) or changed
        self._reschedule()
        return changed

    def _expire(self, now: float) -> list[Address]:
        """End the ejections that are due, noting when each ended; return their addresses."""
        due = [key for key, until in self._ejected.items() if until <= now]
        for key in due:
            host = self._hosts[key]
            host.back = self._ejected.pop(key)
            host.reset()
        return due

    def _release_excess(self, now: float) -> None:
        """End, at `now`, the soonest-ending ejections beyond what `max_ejection_percent` allows."""
        allowed = max(1, math.floor(self._config.max_ejection_percent * len(self._all) / 100))
        excess = len(self._ejected) - allowed
        if excess > 0:
            for key in sorted(self._ejected, key=self._ejected.__getitem__)[:excess]:
                del self._ejected[key]
                host = self._hosts[key]
                host.back = now
                host.reset()

    def _record(self, key: Address, host: _Host, outcome: Outcome, now: float) -> bool:
        if outcome is Outcome.SUCCESS:
            host.successes += 1
            host.consecutive = host.gateway = 0
            return False
        host.failures += 1
        config = self._config
        if outcome is Outcome.GATEWAY_ERROR:
            host.gateway += 1
            limit = config.consecutive_gateway_errors
            if limit is not None and host.gateway >= limit:
                host.gateway = 0
                if self._eject(key, now):
                    return True
        else:
            host.gateway = 0
        host.consecutive += 1
        limit = config.consecutive_errors
        if limit is not None and host.consecutive >= limit:
            host.consecutive = 0
            return self._eject(key, now)
        return False

    def _eject(self, key: Address, now: float) -> bool:
        ejected = len(self._ejected)
        if ejected and (ejected + 1) * 100 > self._config.max_ejection_percent * len(self._all):
            return False
        host = self._hosts[key]
        config = self._config
        # Envoy stops raising the multiplier once base x multiplier reaches the maximum, so a
        # host that flapped often is back to the base time after a few healthy intervals.
        if config.base_ejection_time * host.ejections < config.max_ejection_time:
            host.ejections += 1
        duration = min(config.base_ejection_time * host.ejections, config.max_ejection_time)
        self._ejected[key] = now + duration
        host.reset()
        return True

    def _evaluate(self, now: float, returned: list[Address], *, explicit: bool) -> bool:
        self._decay(now, returned, explicit=explicit)
        changed = self._check_success_rate(now)
        changed = self._check_failure_percentage(now) or changed
        for host in self._hosts.values():
            host.successes = host.failures = 0
        self._next_eval = now + self._config.interval
        return changed

    def _ticks(self, since: float, now: float) -> int:
        """Return how many scheduled evaluation times fall in `[since, now]`.

        Evaluations are due every `interval` from `_next_eval`; a lazy detector runs them in
        one go when it is next touched, and this counts the ones it stands for.
        """
        due = self._next_eval
        if now < due:
            return 0
        first = 0 if since <= due else self._intervals(since - due, up=True)
        return max(0, self._intervals(now - due) - first + 1)

    def _intervals(self, seconds: float, *, up: bool = False) -> int:
        """Return `seconds / interval` rounded down (or up), capped: a multiplier is small."""
        # A tiny interval (5e-324 s) makes the quotient infinite, which floor() cannot take.
        quotient = min(seconds / self._config.interval, _MAX_INTERVALS)
        return math.ceil(quotient) if up else math.floor(quotient)

    def _decay(self, now: float, returned: list[Address], *, explicit: bool) -> None:
        """Drop each healthy host's multiplier by one per evaluation due since the last check.

        As in Envoy, an evaluation counts for a host only once an `interval` has passed since
        its ejection ended; the end time is kept on the host, so this does not depend on
        whether anything looked at the detector in between. `evaluate()` counts as at least
        one evaluation for the hosts it does not itself return.
        """
        interval = self._config.interval
        for key, host in self._hosts.items():
            if host.ejections and key not in self._ejected:
                steps = self._ticks(host.back + interval, now)
                if explicit and key not in returned:
                    steps = max(steps, 1)
                host.ejections = max(0, host.ejections - steps)

    def _volumes(self, minimum: int) -> list[tuple[Address, _Host, int]]:
        hosts, ejected = self._hosts, self._ejected
        found = []
        for endpoint in self._all:
            key = address(endpoint)
            host = hosts[key]
            volume = host.successes + host.failures
            if volume >= minimum and key not in ejected:
                found.append((key, host, volume))
        return found

    def _check_success_rate(self, now: float) -> bool:
        config = self._config
        factor = config.success_rate_stdev_factor
        if factor is None:
            return False
        found = self._volumes(config.success_rate_request_volume)
        if len(found) < config.success_rate_minimum_hosts:
            return False
        rates = [100.0 * host.successes / volume for _, host, volume in found]
        mean = sum(rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
        threshold = mean - factor * stdev
        changed = False
        for (key, _, _), rate in zip(found, rates, strict=True):
            if rate < threshold:
                changed = self._eject(key, now) or changed
        return changed

    def _check_failure_percentage(self, now: float) -> bool:
        config = self._config
        threshold = config.failure_percentage_threshold
        if threshold is None:
            return False
        found = self._volumes(config.failure_percentage_request_volume)
        if len(found) < config.failure_percentage_minimum_hosts:
            return False
        changed = False
        for key, host, volume in found:
            if key not in self._ejected and host.failures * 100 >= threshold * volume:
                changed = self._eject(key, now) or changed
        return changed

    def _reschedule(self) -> None:
        self._next_check = min(self._next_eval, min(self._ejected.values(), default=math.inf))

    def _retarget(self) -> None:
        every = self._all
        healthy = tuple(e for e in every if address(e) not in self._ejected)
        self._panic = bool(every) and len(healthy) * 100 < self._config.panic_threshold * len(every)
        self._target = every if self._panic or len(healthy) == len(every) else healthy
        self._reschedule()

    def _push(self) -> None:
        """Give the inner balancer the latest target; serialised so the newest one wins."""
        with self._push_lock:
            target = self._target
            if target is not self._pushed:
                self._inner.update(target)
                self._pushed = target
