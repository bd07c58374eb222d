"""The pure cores: index rules, backoff, health entries -> endpoints, watch and lease machines."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshkit import ConfigurationError
from meshkit.balancing import Endpoint
from meshkit.discovery import AgentBackoff, WatchQuery
from meshkit.discovery._core import (
    LeaseAction,
    LeaseCore,
    WatchCore,
    endpoints_from_health,
    next_index,
)

STATUSES = st.sampled_from(["passing", "warning", "critical", "maintenance"])
TAGS = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)
ZONES = st.sampled_from(["", "eu-1", "us-2"])


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    """One well-formed entry of `GET /v1/health/service/<name>`."""
    zone = draw(ZONES)
    meta = {"zone": zone} if zone else {}
    return {
        "Node": {"Address": draw(st.sampled_from(["10.0.0.1", "10.0.0.2"]))},
        "Service": {
            "ID": draw(st.text("abc", min_size=1, max_size=3)),
            "Address": draw(st.sampled_from(["", "10.0.1.1", "10.0.1.2"])),
            "Port": draw(st.integers(1, 4)),
            "Tags": draw(TAGS),
            "Meta": meta,
            "Weights": {"Passing": draw(st.integers(1, 9)), "Warning": draw(st.integers(0, 9))},
        },
        "Checks": [{"Status": s} for s in draw(st.lists(STATUSES, max_size=3))],
    }


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
QUERIES = st.builds(
    WatchQuery,
    passing_only=st.booleans(),
    tags=st.lists(st.sampled_from(["a", "b"]), max_size=2),
    meta=st.dictionaries(st.just("zone"), ZONES, max_size=1),
)


def _status(entry: dict[str, Any]) -> str:
    statuses = {c["Status"] for c in entry["Checks"]}
    if statuses - {"passing", "warning"}:
        return "critical"
    return "warning" if "warning" in statuses else "passing"


class TestNextIndex:
    @given(st.integers(0, 2**64), st.integers(1, 2**64))
    def test_forward_or_same_is_kept(self, previous: int, step: int) -> None:
        """An index that did not go backwards is used as is."""
        assert next_index(previous, str(previous + step)) == previous + step
        assert next_index(previous, str(max(previous, 1))) == max(previous, 1)

    @given(st.integers(2, 2**64), st.data())
    def test_backwards_resets_to_zero(self, previous: int, data: st.DataObject) -> None:
        """An index that went backwards restarts with a plain (non-blocking) read."""
        lower = data.draw(st.integers(1, previous - 1))
        assert next_index(previous, str(lower)) == 0

    @given(st.sampled_from(["0", "-5", "", "abc", None, "1.5", "\ud800"]))
    def test_not_positive_becomes_one(self, returned: object) -> None:
        """An index that is not > 0 (or not a number) becomes 1, so the next query blocks."""
        assert next_index(0, returned) == 1


class TestBackoff:
    @given(
        st.floats(0.001, 10),
        st.floats(10, 3600),
        st.integers(0, 10_000),
        st.floats(0, 1, exclude_max=True),
    )
    def test_delay_is_half_fixed_half_jitter(
        self, base: float, cap: float, attempt: int, draw: float
    ) -> None:
        """Attempt n waits in [c/2, c) with c = min(cap, base * 2**n)."""
        ceiling = min(cap, base * 2.0 ** min(attempt, 64))
        delay = AgentBackoff(base=base, cap=cap).delay(attempt, draw)
        assert ceiling / 2 <= delay <= ceiling

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"base": 0},
            {"base": float("nan")},
            {"cap": float("inf")},
            {"base": 5, "cap": 1},
            {"base": True},
        ],
    )
    def test_bad_values(self, kwargs: dict[str, object]) -> None:
        """Bad bounds raise ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError):
            AgentBackoff(**kwargs)  # type: ignore[arg-type]


class TestEndpointsFromHealth:
    @given(st.lists(entries(), max_size=8), QUERIES)
    def test_filters_weights_and_order(
        self, items: list[dict[str, Any]], query: WatchQuery
    ) -> None:
        """Kept instances match the query, carry Consul's weight and zone, sorted and unique."""
        snapshot = endpoints_from_health(items, query)
        addresses = [(e.host, e.port) for e in snapshot]
        assert addresses == sorted(set(addresses))
        expected = set()
        for item in items:
            service, status = item["Service"], _status(item)
            if status == "critical" or (query.passing_only and status == "warning"):
                continue
            if not set(service["Tags"]) >= set(query.tags):
                continue
            if any(service["Meta"].get(k) != v for k, v in query.meta):
                continue
            host = service["Address"] or item["Node"]["Address"]
            expected.add((host, service["Port"]))
        assert set(addresses) == expected
        for endpoint in snapshot:
            assert endpoint.zone == endpoint.label("zone", "")

    @given(JUNK)
    def test_malformed_answers_never_raise(self, junk: object) -> None:
        """Whatever the agent sends, the conversion returns a (possibly empty) snapshot."""
        assert isinstance(endpoints_from_health(junk, WatchQuery()), tuple)
        assert isinstance(endpoints_from_health([junk, {"Service": junk}], WatchQuery()), tuple)

    def test_warning_weight_and_meta(self) -> None:
        """A warning instance gets Weights.Warning; meta becomes metadata and zone."""
        entry = {
            "Node": {"Address": "10.0.0.9"},
            "Service": {"ID": "x", "Port": 80, "Meta": {"zone": "z", "version": "v3"},
                        "Weights": {"Passing": 10, "Warning": 3}},
            "Checks": [{"Status": "passing"}, {"Status": "warning"}],
        }  # fmt: skip
        (endpoint,) = endpoints_from_health([entry], WatchQuery(passing_only=False))
        assert endpoint == Endpoint(
            host="10.0.0.9", port=80, weight=3, zone="z", metadata={"zone": "z", "version": "v3"}
        )
        assert endpoints_from_health([entry], WatchQuery()) == ()
        assert endpoints_from_health([entry | {"Checks": "passing"}], WatchQuery()) == ()


class WatchMachine(RuleBasedStateMachine):
    """Drive WatchCore with answers and failures; check Consul's rules hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.core = WatchCore(3, WatchQuery(), AgentBackoff(base=0.1, cap=2.0), min_interval=0.5)
        self.now = 0.0
        self.good: tuple[Endpoint, ...] | None = None
        self.last_index = 0

    @rule(elapsed=st.floats(0, 5))
    def time_passes(self, elapsed: float) -> None:
        """Time moves on."""
        self.now += elapsed

    @rule(index=st.integers(-3, 50), items=st.lists(entries(), max_size=4))
    def answer(self, index: int, items: list[dict[str, Any]]) -> None:
        """The agent answers; the snapshot is replaced only when it changed."""
        plan = self.core.plan(self.now)
        self.now += plan.delay
        self.core.started(self.now)
        previous = self.core.index
        changed = self.core.succeeded(str(index), items)
        expected = endpoints_from_health(items, self.core.query)
        assert changed == (None if expected == self.good else expected)
        self.good = expected
        assert self.core.index == (1 if index <= 0 else 0 if index < previous else index)
        assert self.core.failures == 0
        assert self.core.plan(self.now).delay <= 0.5 + 1e-9  # float rounding of now + 0.5 - now

    @rule(draw=st.floats(0, 1, exclude_max=True))
    def failure(self, draw: float) -> None:
        """A query fails: next agent at once the first time round, then backoff."""
        agent, failures = self.core.agent, self.core.failures
        delay = self.core.failed(self.now, draw)
        assert self.core.agent == (agent + 1) % 3
        assert (delay == 0) == (failures + 1 < 3)
        assert delay <= 2.0
        assert self.core.plan(self.now).delay >= delay - 1e-9

    @invariant()
    def snapshot_is_last_good(self) -> None:
        """Failures never change the snapshot; the index is never negative."""
        assert self.core.snapshot == self.good
        assert self.core.index >= 0
        assert 0 <= self.core.agent < 3


class LeaseMachine(RuleBasedStateMachine):
    """Drive LeaseCore: register first, refresh while known, move agents on errors."""

    def __init__(self) -> None:
        super().__init__()
        self.core = LeaseCore(2, 5.0, AgentBackoff(base=0.1, cap=1.0))
        self.registrations = 0
        self.holders: set[int] = set()

    def send(self) -> None:
        """Send the next call: a registration makes its agent a holder."""
        if self.core.action() is LeaseAction.REGISTER:
            self.core.registering()
            self.holders.add(self.core.agent)

    @rule()
    def ok(self) -> None:
        """The agent accepted the call."""
        if self.core.action() is LeaseAction.REGISTER:
            self.registrations += 1
        self.send()
        assert self.core.succeeded() == 5.0
        assert self.core.action() is LeaseAction.REFRESH
        assert self.core.agent in self.core.holders

    @precondition(lambda self: self.core.registered)
    @rule()
    def forgotten(self) -> None:
        """The agent answered 404: register again at once."""
        assert self.core.forgotten() == 0.0
        self.holders.discard(self.core.agent)
        assert self.core.action() is LeaseAction.REGISTER

    @rule(draw=st.floats(0, 1, exclude_max=True))
    def error(self, draw: float) -> None:
        """The agent failed: switch agents, register there."""
        failures = self.core.failures
        self.send()  # it may have landed: a timeout says nothing
        delay = self.core.failed(draw)
        assert (delay == 0.0) == (failures + 1 < 2)
        assert self.core.action() is LeaseAction.REGISTER

    @invariant()
    def counts(self) -> None:
        """Registrations are counted once each."""
        assert self.core.registrations == self.registrations

    @invariant()
    def holders_known(self) -> None:
        """Every agent sent a registration it was not known to forget is deregistered on exit."""
        assert self.core.holders == self.holders


TestWatchMachine = WatchMachine.TestCase
TestLeaseMachine = LeaseMachine.TestCase
