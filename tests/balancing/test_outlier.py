"""OutlierDetector and OutlierConfig: ejection rules, timing, limits, panic, any inner balancer."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from meshkit import ConfigurationError, NoAvailableEndpointError
from meshkit.balancing import (
    Endpoint,
    HashRing,
    LeastRequest,
    LoadBalancer,
    Maglev,
    Outcome,
    OutlierConfig,
    OutlierDetector,
    Random,
    RoundRobin,
)
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterable

S, E, G = Outcome.SUCCESS, Outcome.ERROR, Outcome.GATEWAY_ERROR


def endpoints(n: int, host: str = "10.0.0.1") -> list[Endpoint]:
    """Return `n` endpoints of weight 1 on consecutive ports."""
    return [Endpoint(host=host, port=9000 + i) for i in range(n)]


def detector(
    n: int, clock: FakeClock, inner: LoadBalancer | None = None, **config: float | None
) -> OutlierDetector:
    """Return a detector over `n` endpoints (RoundRobin unless `inner` is given)."""
    balancer = RoundRobin(endpoints(n)) if inner is None else inner
    return OutlierDetector(balancer, OutlierConfig(**config), clock=clock)  # type: ignore[arg-type]


def panic(d: OutlierDetector) -> bool:
    """Return whether the detector panics (a call, so mypy does not narrow it)."""
    return d.panic


def ejected(d: OutlierDetector) -> tuple[Endpoint, ...]:
    """Return the detector's ejected endpoints (a call, so mypy does not narrow it)."""
    return d.ejected


def report(d: OutlierDetector, e: Endpoint, outcome: Outcome, times: int = 1) -> None:
    """Report `outcome` for `e` `times` times."""
    for _ in range(times):
        d.report(e, outcome, 0.01)


@attrs.define
class Recording:
    """A minimal LoadBalancer that records what it is given, to wrap through the protocol."""

    current: tuple[Endpoint, ...]
    updates: list[tuple[Endpoint, ...]] = attrs.field(factory=list)
    reports: list[tuple[Endpoint, Outcome]] = attrs.field(factory=list)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.current

    def pick(self, key: str | bytes | None = None) -> Endpoint:
        if not self.current:
            raise NoAvailableEndpointError("Recording")
        return self.current[0]

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        self.current = tuple(endpoints)
        self.updates.append(self.current)

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:
        self.reports.append((endpoint, outcome))


class TestOutlierConfig:
    def test_envoy_defaults(self) -> None:
        """Defaults follow Envoy: 5 consecutive 5xx, 10 s interval, 30 s base, 10%, panic 50%."""
        config = OutlierConfig()
        assert (config.consecutive_errors, config.consecutive_gateway_errors) == (5, None)
        assert (config.interval, config.base_ejection_time, config.max_ejection_time) == (
            10.0,
            30.0,
            300.0,
        )
        assert (config.max_ejection_percent, config.panic_threshold) == (10.0, 50.0)
        assert config.success_rate_stdev_factor == 1.9
        assert config.failure_percentage_threshold is None

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("consecutive_errors", 0),
            ("consecutive_gateway_errors", 1.5),
            ("interval", 0),
            ("base_ejection_time", math.inf),
            ("max_ejection_percent", 120),
            ("success_rate_stdev_factor", -1),
            ("success_rate_request_volume", 0),
            ("failure_percentage_threshold", 101),
            ("panic_threshold", -1),
            ("max_ejection_time", 1.0),
        ],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """An invalid knob is a ConfigurationError naming it and its value."""
        with pytest.raises(ConfigurationError) as info:
            OutlierConfig(**{field: value})  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == (field, value)

    def test_bad_inner_and_config(self) -> None:
        """The wrapped object must be a LoadBalancer and the config an OutlierConfig."""
        with pytest.raises(ConfigurationError, match="inner"):
            OutlierDetector(object())  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="config"):
            OutlierDetector(RoundRobin(), {"interval": 1})  # type: ignore[arg-type]


class TestConsecutive:
    def test_fifth_error_ejects_and_picks_skip(self, clock: FakeClock) -> None:
        """Five consecutive errors eject at once; picks then avoid the endpoint."""
        d = detector(10, clock)
        bad = d.endpoints[0]
        report(d, bad, E, 4)
        assert ejected(d) == ()
        report(d, bad, G)
        assert ejected(d) == (bad,)
        assert d.ejected_until(bad) == 30.0
        assert bad not in {d.pick() for _ in range(30)}
        assert bad not in d.inner.endpoints

    def test_success_resets_the_count(self, clock: FakeClock) -> None:
        """A success between errors restarts the consecutive count."""
        d = detector(10, clock)
        bad = d.endpoints[0]
        report(d, bad, E, 4)
        report(d, bad, S)
        report(d, bad, E, 4)
        assert ejected(d) == ()

    def test_gateway_errors(self, clock: FakeClock) -> None:
        """Consecutive gateway errors eject on their own threshold; a plain error resets it."""
        d = detector(10, clock, consecutive_gateway_errors=2, consecutive_errors=None)
        one, two = d.endpoints[:2]
        report(d, one, G)
        report(d, one, E)
        report(d, one, G)
        assert ejected(d) == ()
        report(d, two, G, 2)
        assert ejected(d) == (two,)

    def test_refused_gateway_ejection_still_counts_as_errors(self, clock: FakeClock) -> None:
        """Gateway errors refused ejection by the limit count towards consecutive errors."""
        d = detector(10, clock, consecutive_gateway_errors=2, consecutive_errors=3)
        first, second = d.endpoints[:2]
        report(d, first, E, 3)
        report(d, second, G, 2)  # limit reached, but 2 of 10 would exceed 10%
        assert ejected(d) == (first,)
        clock.advance(30)  # `first` comes back
        report(d, second, E)  # the third consecutive error
        assert ejected(d) == (second,)

    @pytest.mark.parametrize("outcome", ["success", None, 200, True])
    def test_outcome_must_be_an_outcome(self, clock: FakeClock, outcome: object) -> None:
        """A non-Outcome is a ConfigurationError, not a failure that ejects a healthy endpoint."""
        inner = Recording(tuple(endpoints(10)))
        d = detector(10, clock, inner=inner, consecutive_errors=2)
        for _ in range(3):
            with pytest.raises(ConfigurationError) as info:
                d.report(d.endpoints[0], outcome, 0.01)  # type: ignore[arg-type]
            assert info.value.field == "outcome"
        assert ejected(d) == ()
        assert inner.reports == []

    def test_ejection_time_grows_and_is_capped(self, clock: FakeClock) -> None:
        """The n-th ejection lasts n x base, at most max_ejection_time; it ends on time."""
        d = detector(10, clock, base_ejection_time=10, max_ejection_time=25, interval=1000)
        bad = d.endpoints[0]
        for expected in (10.0, 20.0, 25.0):
            report(d, bad, E, 5)
            start = clock.now()
            assert d.ejected_until(bad) == start + expected
            clock.advance(expected - 0.5)
            assert ejected(d) == (bad,)
            clock.advance(0.5)
            assert ejected(d) == ()
            assert bad in d.inner.endpoints

    def test_multiplier_decays_on_healthy_intervals(self, clock: FakeClock) -> None:
        """Each evaluation finding it healthy (not returning it) takes one off its multiplier."""
        d = detector(10, clock, base_ejection_time=10, interval=100)
        bad = d.endpoints[0]
        report(d, bad, E, 5)
        clock.advance(10)
        report(d, bad, E, 5)
        assert d.ejected_until(bad) == 30.0
        clock.advance(20)
        d.evaluate()  # returns it from its ejection: no decay yet
        d.evaluate()
        report(d, bad, E, 5)
        assert d.ejected_until(bad) == clock.now() + 20.0
        clock.advance(20)
        for _ in range(3):
            d.evaluate()
        report(d, bad, E, 5)
        assert d.ejected_until(bad) == clock.now() + 10.0

    def test_ejected_reports_are_forwarded_not_counted(self, clock: FakeClock) -> None:
        """Outcomes for an ejected endpoint reach the inner balancer but count for nothing."""
        eps = tuple(endpoints(10))
        inner = Recording(eps)
        d = detector(10, clock, inner=inner)
        report(d, eps[0], E, 10)
        assert len(inner.reports) == 10
        assert d.ejected_until(eps[0]) == 30.0


class TestLimits:
    def test_max_ejection_percent(self, clock: FakeClock) -> None:
        """No more than max_ejection_percent of the endpoints are ejected at once."""
        d = detector(10, clock, max_ejection_percent=20)
        for e in d.endpoints:
            report(d, e, E, 5)
        assert len(ejected(d)) == 2

    def test_at_least_one_may_be_ejected(self, clock: FakeClock) -> None:
        """As in Envoy, one endpoint can be ejected whatever the percentage."""
        d = detector(3, clock, max_ejection_percent=0)
        for e in d.endpoints:
            report(d, e, E, 5)
        assert ejected(d) == d.endpoints[:1]

    def test_panic_uses_every_endpoint(self, clock: FakeClock) -> None:
        """Below panic_threshold percent healthy, the inner balancer gets all endpoints."""
        d = detector(4, clock, max_ejection_percent=100, panic_threshold=50)
        eps = d.endpoints
        report(d, eps[0], E, 5)
        report(d, eps[1], E, 5)
        assert not panic(d)
        assert d.inner.endpoints == eps[2:]
        report(d, eps[2], E, 5)
        assert panic(d)
        assert d.inner.endpoints == eps
        clock.advance(30)
        assert not panic(d)
        assert ejected(d) == ()

    def test_all_ejected_without_panic_raises(self, clock: FakeClock) -> None:
        """With panic disabled and everything ejected, pick() raises NoAvailableEndpointError."""
        d = detector(2, clock, max_ejection_percent=100, panic_threshold=0)
        for e in d.endpoints:
            report(d, e, E, 5)
        with pytest.raises(NoAvailableEndpointError, match="all 2 endpoints ejected"):
            d.pick()
        clock.advance(30)
        assert d.pick() in d.endpoints

    def test_empty_raises_the_inner_error(self, clock: FakeClock) -> None:
        """With no endpoints at all, the inner balancer's error propagates."""
        d = detector(0, clock)
        with pytest.raises(NoAvailableEndpointError, match="RoundRobin"):
            d.pick()


class TestIntervalChecks:
    def test_success_rate_outlier_ejected_lazily(self, clock: FakeClock) -> None:
        """A success rate below mean - 1.9 stdev is ejected once the interval has elapsed."""
        d = detector(6, clock, consecutive_errors=None, max_ejection_percent=50)
        for e in d.endpoints[1:]:
            report(d, e, S, 100)
        bad = d.endpoints[0]
        for _ in range(50):
            report(d, bad, S)
            report(d, bad, E)
        assert ejected(d) == ()
        clock.advance(10)
        d.pick()
        assert ejected(d) == (bad,)

    def test_success_rate_needs_volume_and_hosts(self, clock: FakeClock) -> None:
        """Too few requests or too few hosts with enough requests means no verdict."""
        d = detector(6, clock, consecutive_errors=None, max_ejection_percent=50)
        for e in d.endpoints[1:]:
            report(d, e, S, 99)
        report(d, d.endpoints[0], E, 100)
        d.evaluate()
        assert ejected(d) == ()
        d = detector(6, clock, consecutive_errors=None, success_rate_stdev_factor=None)
        for e in d.endpoints:
            report(d, e, E, 100)
        d.evaluate()
        assert ejected(d) == ()

    def test_failure_percentage(self, clock: FakeClock) -> None:
        """An endpoint failing at least the threshold percentage is ejected at evaluation."""
        d = detector(
            5,
            clock,
            consecutive_errors=None,
            success_rate_stdev_factor=None,
            failure_percentage_threshold=50,
            max_ejection_percent=100,
            panic_threshold=0,
        )
        eps = d.endpoints
        for e in eps:
            for k in range(60):
                d.report(e, E if (e is eps[0] and k % 3 == 0) else S, 0.01)
        report(d, eps[1], E, 60)
        d.evaluate()
        assert ejected(d) == (eps[1],)
        for e in eps[:4]:
            report(d, e, S, 10)
        d.evaluate()
        assert ejected(d) == (eps[1],)

    def test_counts_restart_each_interval(self, clock: FakeClock) -> None:
        """An evaluation clears the interval's counts, so old failures are forgotten."""
        d = detector(
            5,
            clock,
            consecutive_errors=None,
            success_rate_stdev_factor=None,
            failure_percentage_threshold=50,
            failure_percentage_request_volume=10,
        )
        report(d, d.endpoints[0], E, 9)
        clock.advance(10)
        report(d, d.endpoints[0], E, 1)
        for e in d.endpoints:
            report(d, e, S, 10)
        d.evaluate()
        assert ejected(d) == ()


class TestWrapping:
    def test_update_keeps_state_by_address(self, clock: FakeClock) -> None:
        """update() keeps counters and ejections of kept addresses and drops the rest."""
        d = detector(10, clock, max_ejection_percent=50)
        eps = d.endpoints
        report(d, eps[0], E, 5)
        report(d, eps[1], E, 4)
        reweighted = Endpoint(host=eps[1].host, port=eps[1].port, weight=3)
        d.update([eps[0], reweighted, *eps[3:]])
        assert ejected(d) == (eps[0],)
        assert d.inner.endpoints == (reweighted, *eps[3:])
        report(d, reweighted, E)
        assert ejected(d) == (eps[0], reweighted)
        d.update(eps[2:])
        assert ejected(d) == ()
        report(d, Endpoint(host="nobody", port=1), E, 10)
        assert ejected(d) == ()

    def test_shrinking_update_keeps_within_max_ejection_percent(self, clock: FakeClock) -> None:
        """A smaller set never leaves more than max_ejection_percent ejected: soonest return."""
        d = detector(20, clock, max_ejection_percent=10)
        eps = d.endpoints
        report(d, eps[0], E, 5)
        clock.advance(1)
        report(d, eps[1], E, 5)
        assert ejected(d) == eps[:2]
        d.update(eps[:10])  # 2 of 10 would be 20%: eps[0], ejected first, comes back
        assert ejected(d) == (eps[1],)
        assert d.inner.endpoints == (eps[0], *eps[2:10])
        d.update(eps[:2])  # one may always stay ejected
        assert ejected(d) == (eps[1],)
        report(d, eps[0], E, 5)  # a second ejection would be 2 of 2
        assert ejected(d) == (eps[1],)

    def test_any_balancer_through_the_protocol(self, clock: FakeClock) -> None:
        """A plain LoadBalancer sees only healthy snapshots via update(), and every report."""
        eps = tuple(endpoints(10))
        inner = Recording(eps)
        d = OutlierDetector(inner, clock=clock)
        report(d, eps[0], E, 5)
        assert inner.updates == [eps[1:]]
        assert d.pick() == eps[1]
        clock.advance(30)
        assert d.pick() == eps[0]
        assert inner.updates == [eps[1:], eps]
        assert "OutlierDetector" in repr(d)
        assert d.config == OutlierConfig()

    @pytest.mark.parametrize("factory", [LeastRequest, Random, RoundRobin])
    def test_wraps_strategies(self, factory: type[LoadBalancer], clock: FakeClock) -> None:
        """Built-in strategies work under the detector, with reports forwarded."""
        d = OutlierDetector(factory(endpoints(10)), clock=clock)  # type: ignore[call-arg]
        bad = d.endpoints[0]
        report(d, bad, E, 5)
        for _ in range(100):
            chosen = d.pick()
            assert chosen != bad
            d.report(chosen, S, 0.01)

    @pytest.mark.parametrize("factory", [HashRing, Maglev])
    def test_wraps_hash_balancers(self, factory: type[LoadBalancer], clock: FakeClock) -> None:
        """Keys of an ejected endpoint move to healthy ones and come back after the ejection."""
        d = OutlierDetector(factory(endpoints(10)), clock=clock)  # type: ignore[call-arg]
        keys = [f"user-{k}" for k in range(200)]
        before = {k: d.pick(k) for k in keys}
        bad = before[keys[0]]
        report(d, bad, E, 5)
        during = {k: d.pick(k) for k in keys}
        assert bad not in during.values()
        if factory is HashRing:  # consistent hashing moves only the ejected endpoint's keys
            assert all(during[k] == before[k] for k in keys if before[k] != bad)
        clock.advance(30)
        assert {k: d.pick(k) for k in keys} == before

    def test_threads_report_and_pick(self, clock: FakeClock) -> None:
        """Concurrent reports and picks leave the inner snapshot equal to the healthy set."""
        d = detector(10, clock, max_ejection_percent=50)
        eps = d.endpoints

        def worker(offset: int) -> None:
            for k in range(300):
                e = eps[(k + offset) % 10]
                d.report(e, E if e.port % 2 else S, 0.01)
                d.pick()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out = ejected(d)
        assert len(out) == 5
        assert d.inner.endpoints == tuple(e for e in eps if e not in out)


# ------------------------------------------------------------------ state machine


@attrs.define
class _ModelHost:
    consecutive: int = 0
    gateway: int = 0
    successes: int = 0
    failures: int = 0
    multiplier: int = 0

    def clear(self) -> None:
        self.consecutive = self.gateway = self.successes = self.failures = 0


class Model:
    """The specification of outlier detection as plain Python, checked against the real one."""

    def __init__(self, config: OutlierConfig, eps: list[Endpoint], now: float) -> None:
        self.config = config
        self.eps = eps
        self.hosts = {e: _ModelHost() for e in eps}
        self.until: dict[Endpoint, float] = {}
        self.next_eval = now + config.interval

    def expire(self, now: float) -> set[Endpoint]:
        """End the ejections that are due; return the endpoints that came back."""
        back = {e for e, until in self.until.items() if until <= now}
        for e in back:
            del self.until[e]
            self.hosts[e].clear()
        return back

    def catch_up(self, now: float) -> None:
        """Apply what the passage of time does: expiries, then a due interval evaluation."""
        back = self.expire(now)
        if now >= self.next_eval:
            self.evaluate(now, back)

    def evaluate(self, now: float, back: set[Endpoint]) -> None:
        """One interval: decay multipliers, success-rate and failure-percentage checks."""
        for e, host in self.hosts.items():
            if e not in self.until and e not in back and host.multiplier > 0:
                host.multiplier -= 1
        self._success_rate(now)
        self._failure_percentage(now)
        for host in self.hosts.values():
            host.successes = host.failures = 0
        self.next_eval = now + self.config.interval

    def _eligible(self, volume: int) -> list[Endpoint]:
        return [
            e
            for e in self.eps
            if e not in self.until and self.hosts[e].successes + self.hosts[e].failures >= volume
        ]

    def _success_rate(self, now: float) -> None:
        c = self.config
        if c.success_rate_stdev_factor is None:
            return
        found = self._eligible(c.success_rate_request_volume)
        if len(found) < c.success_rate_minimum_hosts:
            return
        rates = {
            e: 100.0 * self.hosts[e].successes / (self.hosts[e].successes + self.hosts[e].failures)
            for e in found
        }
        mean = sum(rates.values()) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates.values()) / len(rates))
        for e in found:
            if rates[e] < mean - c.success_rate_stdev_factor * stdev:
                self.eject(e, now)

    def _failure_percentage(self, now: float) -> None:
        c = self.config
        if c.failure_percentage_threshold is None:
            return
        found = self._eligible(c.failure_percentage_request_volume)
        if len(found) < c.failure_percentage_minimum_hosts:
            return
        for e in found:
            h = self.hosts[e]
            total = h.successes + h.failures
            if e not in self.until and h.failures * 100 >= c.failure_percentage_threshold * total:
                self.eject(e, now)

    def eject(self, e: Endpoint, now: float) -> bool:
        """Eject `e` if the percentage limit allows it (always allowing the first one)."""
        k = len(self.until)
        if k and (k + 1) * 100 > self.config.max_ejection_percent * len(self.eps):
            return False
        host = self.hosts[e]
        host.multiplier += 1
        c = self.config
        self.until[e] = now + min(c.base_ejection_time * host.multiplier, c.max_ejection_time)
        host.clear()
        return True

    def report(self, e: Endpoint, outcome: Outcome, now: float) -> None:
        """Count one outcome (ignored while `e` is ejected)."""
        self.catch_up(now)
        if e in self.until:
            return
        h = self.hosts[e]
        if outcome is S:
            h.successes += 1
            h.consecutive = h.gateway = 0
            return
        h.failures += 1
        c = self.config
        if outcome is G:
            h.gateway += 1
            if c.consecutive_gateway_errors and h.gateway >= c.consecutive_gateway_errors:
                h.gateway = 0
                if self.eject(e, now):
                    return
        else:
            h.gateway = 0
        h.consecutive += 1
        if c.consecutive_errors and h.consecutive >= c.consecutive_errors:
            h.consecutive = 0
            self.eject(e, now)

    def panic(self) -> bool:
        """Whether fewer than panic_threshold percent of the endpoints are healthy."""
        healthy = len(self.eps) - len(self.until)
        return healthy * 100 < self.config.panic_threshold * len(self.eps)

    def target(self) -> tuple[Endpoint, ...]:
        """What the inner balancer must hold: the healthy endpoints, or all in panic."""
        if self.panic():
            return tuple(self.eps)
        return tuple(e for e in self.eps if e not in self.until)


class OutlierMachine(RuleBasedStateMachine):
    """Drive an OutlierDetector over RoundRobin with a FakeClock against `Model`."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()

    @initialize(
        n=st.integers(2, 6),
        percent=st.sampled_from([0, 34, 50, 100]),
        panic=st.sampled_from([0, 50]),
        consecutive=st.sampled_from([None, 2, 3]),
        gateway=st.sampled_from([None, 2]),
        factor=st.sampled_from([None, 0.5, 1.0]),
        failure=st.sampled_from([None, 50, 80]),
        max_time=st.sampled_from([5, 12, 20]),
    )
    def setup(
        self,
        *,
        n: int,
        percent: int,
        panic: int,
        consecutive: int | None,
        gateway: int | None,
        factor: float | None,
        failure: float | None,
        max_time: float,
    ) -> None:
        config = OutlierConfig(
            consecutive_errors=consecutive,
            consecutive_gateway_errors=gateway,
            interval=10,
            base_ejection_time=5,
            max_ejection_time=max_time,
            max_ejection_percent=percent,
            success_rate_stdev_factor=factor,
            success_rate_minimum_hosts=2,
            success_rate_request_volume=3,
            failure_percentage_threshold=failure,
            failure_percentage_minimum_hosts=2,
            failure_percentage_request_volume=3,
            panic_threshold=panic,
        )
        self.eps = endpoints(n)
        self.detector = OutlierDetector(RoundRobin(self.eps), config, clock=self.clock)
        self.model = Model(config, self.eps, self.clock.now())

    @rule(data=st.data(), outcome=st.sampled_from(Outcome), times=st.integers(1, 4))
    def report(self, data: st.DataObject, outcome: Outcome, times: int) -> None:
        e = data.draw(st.sampled_from(self.eps))
        for _ in range(times):
            self.detector.report(e, outcome, 0.01)
            self.model.report(e, outcome, self.clock.now())

    @rule(seconds=st.sampled_from([0.5, 1, 2.5, 4, 5, 9.5, 10, 12]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def evaluate(self) -> None:
        self.detector.evaluate()
        self.model.evaluate(self.clock.now(), self.model.expire(self.clock.now()))

    @rule()
    def pick(self) -> None:
        self.model.catch_up(self.clock.now())
        target = self.model.target()
        if target:
            assert self.detector.pick() in target
        else:
            with pytest.raises(NoAvailableEndpointError):
                self.detector.pick()

    @invariant()
    def same_ejections(self) -> None:
        self.model.catch_up(self.clock.now())
        assert self.detector.ejected == tuple(e for e in self.eps if e in self.model.until)
        for e in self.eps:
            assert self.detector.ejected_until(e) == self.model.until.get(e)

    @invariant()
    def within_max_ejection_percent(self) -> None:
        limit = max(1, math.floor(self.model.config.max_ejection_percent * len(self.eps) / 100))
        assert len(self.detector.ejected) <= limit

    @invariant()
    def inner_holds_the_target(self) -> None:
        # The detector is lazy: it catches up with the clock when touched (here by `panic`).
        self.model.catch_up(self.clock.now())
        assert self.detector.panic == self.model.panic()
        assert self.detector.inner.endpoints == self.model.target()


OutlierMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestOutlierMachine = OutlierMachine.TestCase
