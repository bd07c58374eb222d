"""Tests for BoundedLoadRing: the ceil(c * mean) bound, spill order, reports and updates."""

from __future__ import annotations

import math
import threading
from fractions import Fraction

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshkit import ConfigurationError, NoAvailableEndpointError
from meshkit.balancing import BoundedLoadRing, Endpoint, HashRing, LoadBalancer, Outcome


def ep(i: int, weight: int = 1) -> Endpoint:
    return Endpoint(host=f"10.2.0.{i}", port=7000, weight=weight)


def bound(c: float, total: int, n: int) -> int:
    """ceil(c * mean), computed exactly."""
    return math.ceil(Fraction(c) * total / n)


class TestConfiguration:
    def test_is_a_load_balancer(self) -> None:
        """BoundedLoadRing implements the LoadBalancer protocol."""
        assert isinstance(BoundedLoadRing([ep(1)]), LoadBalancer)

    @pytest.mark.parametrize("c", [1, 1.0, 0.5, True, math.inf, math.nan, "2"])
    def test_balance_factor_above_one(self, c: float) -> None:
        """c <= 1, infinite or not a number raises ConfigurationError naming balance_factor."""
        with pytest.raises(ConfigurationError) as info:
            BoundedLoadRing([ep(1)], balance_factor=c)
        assert info.value.field == "balance_factor"

    def test_ring_knobs_are_checked(self) -> None:
        """vnodes < 1 raises ConfigurationError naming vnodes."""
        with pytest.raises(ConfigurationError, match="vnodes"):
            BoundedLoadRing([ep(1)], vnodes=0)

    @pytest.mark.parametrize("key", [123, 1.5, ("a",), "\ud800"])
    def test_unhashable_keys_name_the_field(self, key: object) -> None:
        """A key neither str nor bytes (or not UTF-8) is a ConfigurationError; nothing counted."""
        lb = BoundedLoadRing([ep(1), ep(2)])
        for call in (lb.get, lb.pick):
            with pytest.raises(ConfigurationError) as info:
                call(key)  # type: ignore[arg-type]
            assert info.value.field == "key"
        assert lb.total_in_flight == 0

    def test_nothing_to_pick(self) -> None:
        """No endpoint with weight raises NoAvailableEndpointError."""
        for lb in (BoundedLoadRing(), BoundedLoadRing([ep(1, weight=0)])):
            with pytest.raises(NoAvailableEndpointError):
                lb.pick("k")
            with pytest.raises(NoAvailableEndpointError):
                lb.get("k")


class TestBehaviour:
    def test_idle_ring_keeps_keys_on_their_owner(self) -> None:
        """With nothing in flight a key goes to its plain ring owner."""
        eps = [ep(i) for i in range(8)]
        lb = BoundedLoadRing(eps, seed=4)
        plain = HashRing(eps, seed=4)
        for n in range(100):
            got = lb.pick(f"k{n}")
            assert got == plain.get(f"k{n}") == lb.get(f"k{n}")
            lb.report(got, Outcome.SUCCESS, 0.01)
        assert lb.total_in_flight == 0

    def test_hot_key_spills_clockwise_within_the_bound(self) -> None:
        """One hot key fills its owner to the bound, then spills to the ring's next owners."""
        eps = [ep(i) for i in range(5)]
        lb = BoundedLoadRing(eps, balance_factor=1.25)
        order = HashRing(eps).get_n("hot", 5)
        for total in range(1, 101):
            lb.pick("hot")
            for e in eps:
                assert lb.in_flight(e) <= bound(1.25, total, 5)
        assert lb.in_flight(order[0]) == bound(1.25, 100, 5)
        assert lb.total_in_flight == 100

    def test_capacity_is_weighted(self) -> None:
        """capacity() is ceil(c * total * weight / total_weight)."""
        heavy, light = ep(1, weight=3), ep(2, weight=1)
        lb = BoundedLoadRing([heavy, light], balance_factor=1.5)
        assert lb.capacity(heavy, 10) == math.ceil(1.5 * 10 * 3 / 4)
        assert lb.capacity(light, 10) == math.ceil(1.5 * 10 / 4)

    def test_pick_without_key_and_stray_reports(self) -> None:
        """pick() picks some endpoint; reports for unknown or idle endpoints are ignored."""
        eps = [ep(i) for i in range(3)]
        lb = BoundedLoadRing(eps)
        assert lb.pick() in eps
        lb.report(ep(9), Outcome.ERROR, 0.0)
        idle = next(e for e in eps if lb.in_flight(e) == 0)
        lb.report(idle, Outcome.ERROR, 0.0)
        assert lb.total_in_flight == 1

    def test_update_keeps_loads_of_endpoints_that_stay(self) -> None:
        """update() keeps in-flight counts of staying endpoints and drops the others'."""
        eps = [ep(i) for i in range(4)]
        lb = BoundedLoadRing(eps, balance_factor=3)
        picked = [lb.pick(f"k{n}") for n in range(20)]
        lb.update(eps[:2])
        assert lb.endpoints == tuple(eps[:2])
        assert lb.total_in_flight == sum(p in eps[:2] for p in picked)
        assert lb.in_flight(eps[3]) == 0


class BoundedMachine(RuleBasedStateMachine):
    """Picks and reports against a model of in-flight counts; the bound holds at every pick."""

    def __init__(self) -> None:
        super().__init__()
        self.c = 1.25
        self.eps = [ep(i) for i in range(6)]
        self.lb = BoundedLoadRing(self.eps, balance_factor=self.c, vnodes=8)
        self.model: dict[Endpoint, int] = dict.fromkeys(self.eps, 0)

    @rule(key=st.sampled_from(["a", "b", "hot", "hot", "hot", "c"]))
    def pick(self, key: str) -> None:
        chosen = self.lb.pick(key)
        self.model[chosen] += 1
        total = sum(self.model.values())
        assert self.model[chosen] <= bound(self.c, total, len(self.eps))

    @precondition(lambda self: sum(self.model.values()) > 0)
    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        busy = sorted((e for e, n in self.model.items() if n), key=lambda e: e.host)
        endpoint = data.draw(st.sampled_from(busy))
        self.lb.report(endpoint, Outcome.SUCCESS, 0.0)
        self.model[endpoint] -= 1

    @invariant()
    def counts_match(self) -> None:
        assert {e: self.lb.in_flight(e) for e in self.eps} == self.model
        assert self.lb.total_in_flight == sum(self.model.values())


TestBoundedMachine = BoundedMachine.TestCase
TestBoundedMachine.settings = settings(max_examples=40, stateful_step_count=40)


class TestConcurrency:
    def test_bound_holds_under_concurrent_picks(self) -> None:
        """Threads picking one hot key never push an endpoint past ceil(c * mean)."""
        eps = [ep(i) for i in range(4)]
        lb = BoundedLoadRing(eps)

        def work() -> None:
            for _ in range(300):
                lb.pick("hot")

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert lb.total_in_flight == 900
        assert max(lb.in_flight(e) for e in eps) <= bound(1.25, 900, 4)

    def test_readers_see_one_snapshot_or_the_other(self) -> None:
        """Threads picking while another updates only ever get endpoints of either set."""
        first = [ep(i) for i in range(6)]
        second = [ep(i) for i in range(4, 12)]
        lb = BoundedLoadRing(first)
        stop = threading.Event()
        seen: set[Endpoint] = set()

        def read() -> None:
            n = 0
            while not stop.is_set():
                chosen = lb.pick(f"k{n}")
                seen.add(chosen)
                lb.report(chosen, Outcome.SUCCESS, 0.0)
                n += 1

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        for turn in range(30):
            lb.update(second if turn % 2 == 0 else first)
        stop.set()
        for t in readers:
            t.join()
        assert seen <= set(first) | set(second)
        assert lb.total_in_flight == 0

    def test_racing_updates_keep_the_counts_of_the_final_set(self) -> None:
        """An update overtaken by another between its two steps cannot drop the winner's counts."""
        a, b, c = ep(1), ep(2), ep(3)
        lb = BoundedLoadRing([a, b, c])
        while lb.pick() != c:  # one request in flight on c
            pass
        in_flight_on_c = lb.in_flight(c)
        real_lock = lb._lock
        overtaken = [True]

        class OvertakingLock:
            """The lock, except that another update runs just before the first acquisition."""

            def __enter__(self) -> None:
                if overtaken.pop() if overtaken else False:
                    lb.update([a, b, c])  # the second writer, winning the ring
                real_lock.acquire()

            def __exit__(self, *exc: object) -> None:
                real_lock.release()

        lb._lock = OvertakingLock()  # type: ignore[assignment]
        lb.update([a, b])  # the first writer: its ring is replaced before it counts
        lb._lock = real_lock
        assert lb.endpoints == (a, b, c)
        assert lb.in_flight(c) == in_flight_on_c
