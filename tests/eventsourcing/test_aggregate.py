"""Tests for the Aggregate base class (the synchronous core) with the OrderAggregate example."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from es_orders import ItemAdded, OrderAggregate, OrderCreated, OrderError
from meshkit import ConfigurationError, UnhandledEventError
from meshkit.eventsourcing import Aggregate, applies


@attrs.frozen
class Bumped:
    by: int


class Counter(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.count = 0
        self._cache = "private"

    @applies(Bumped)
    def _bumped(self, event: Bumped) -> None:
        self.count += event.by


class LoudCounter(Counter):
    type_name = "Loud"


def _order_commands() -> st.SearchStrategy[list[tuple[str, str, int]]]:
    command = st.tuples(
        st.sampled_from(["add", "remove", "confirm", "cancel"]),
        st.sampled_from(["apple", "pear", "fig"]),
        st.integers(min_value=-1, max_value=5),
    )
    return st.lists(command, max_size=25)


def _run(order: OrderAggregate, name: str, sku: str, number: int) -> None:
    try:
        if name == "add":
            order.add_item(sku, number, unit_price=10 * number)
        elif name == "remove":
            order.remove_item(sku)
        elif name == "confirm":
            order.confirm()
        else:
            order.cancel(f"reason {number}")
    except OrderError:
        pass


class TestAggregate:
    def test_record_applies_and_keeps_pending(self) -> None:
        """record() changes state through apply, bumps the version and keeps the event."""
        order = OrderAggregate.create("o-1", "ada")
        order.add_item("apple", 2, unit_price=30)
        assert (order.status, order.lines, order.total, order.version) == (
            "open",
            {"apple": 2},
            60,
            2,
        )
        assert order.pending_events == (
            OrderCreated("ada"),
            ItemAdded(sku="apple", quantity=2, unit_price=30),
        )

    def test_rejected_command_records_nothing(self) -> None:
        """A command that breaks a rule raises before any event is recorded."""
        order = OrderAggregate.create("o-1", "ada")
        with pytest.raises(OrderError, match="empty order"):
            order.confirm()
        with pytest.raises(OrderError, match="quantity"):
            order.add_item("apple", 0, unit_price=1)
        order.cancel("changed my mind")
        with pytest.raises(OrderError, match="already cancelled"):
            order.cancel("again")
        with pytest.raises(OrderError, match="order is cancelled"):
            order.add_item("apple", 1, unit_price=1)
        assert order.version == 2

    def test_unhandled_event_is_an_error(self) -> None:
        """Applying an event class without an @applies method raises UnhandledEventError."""
        counter = Counter("c-1")
        with pytest.raises(UnhandledEventError, match="Counter has no @applies method for"):
            counter.record(OrderCreated("x"))
        assert counter.version == 0
        assert counter.pending_events == ()

    def test_type_name_defaults_to_class_name_and_appliers_inherit(self) -> None:
        """type_name is the class name unless set; subclasses keep their parents' appliers."""
        assert Counter.type_name == "Counter"
        assert LoudCounter.type_name == "Loud"
        loud = LoudCounter("c-2")
        loud.record(Bumped(3))
        assert loud.count == 3

    def test_an_overriding_method_applies_without_redecorating(self) -> None:
        """A subclass overriding an applier method by name is the one called."""

        class DoubleCounter(Counter):
            def _bumped(self, event: Bumped) -> None:
                self.count += 2 * event.by

        class Renamed(Counter):  # reuses the name `_bumped` for another event class
            @applies(OrderCreated)
            def _bumped(self, event: OrderCreated) -> None:  # type: ignore[override]
                self.count = -1

        double = DoubleCounter("c-3")
        double.record(Bumped(3))
        assert double.count == 6
        renamed = Renamed("c-4")
        renamed.record(Bumped(3))
        assert renamed.count == 3  # Counter._bumped still applies Bumped
        renamed.record(OrderCreated("x"))
        assert renamed.count == -1

    def test_two_appliers_for_one_event_class_are_refused(self) -> None:
        """Two methods of one class applying the same event class raise ConfigurationError."""
        with pytest.raises(ConfigurationError, match="Bumped"):

            class Confused(Aggregate):
                @applies(Bumped)
                def _one(self, event: Bumped) -> None:
                    """Never called."""  # pragma: no cover

                @applies(Bumped)
                def _other(self, event: Bumped) -> None:
                    """Never called."""  # pragma: no cover

    def test_snapshot_state_is_a_copy_of_public_state(self) -> None:
        """snapshot_state() skips private and base fields, and copies deeply."""
        order = OrderAggregate.create("o-1", "ada")
        order.add_item("fig", 1, unit_price=5)
        state = order.snapshot_state()
        assert state == {"customer": "ada", "status": "open", "lines": {"fig": 1}, "total": 5}
        order.add_item("fig", 1, unit_price=5)
        assert state["lines"] == {"fig": 1}
        copy = OrderAggregate("o-1")
        copy.restore_state(state)
        assert (copy.lines, copy.customer, copy.version) == ({"fig": 1}, "ada", 0)
        assert "_cache" not in Counter("c").snapshot_state()

    @given(_order_commands())
    def test_replay_reproduces_state(self, commands: list[tuple[str, str, int]]) -> None:
        """Replaying the recorded events into a fresh aggregate gives the same state."""
        order = OrderAggregate.create("o-1", "ada")
        for command in commands:
            _run(order, *command)
        replayed = OrderAggregate("o-1")
        for event in order.pending_events:
            replayed.apply(event)
        assert replayed.snapshot_state() == order.snapshot_state()
        assert replayed.version == order.version == len(order.pending_events)
