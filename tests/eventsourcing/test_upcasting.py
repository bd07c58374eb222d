"""Tests for the EventRegistry: domain events <-> envelopes, upcaster chains, decode errors."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from es_orders import ItemAdded, events
from meshkit import ConfigurationError, EventDecodeError, UnknownEventTypeError
from meshkit.eventsourcing import Event, EventRegistry


@attrs.frozen
class Renamed:
    new_name: str


class Money:
    """Not an attrs class: converts itself."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def to_data(self) -> dict[str, Any]:
        return {"cents": self.cents}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Money:
        return cls(int(data["cents"]))


@attrs.frozen
class Price:
    """Converts itself; a non-numeric amount raises `decimal.InvalidOperation`."""

    amount: Decimal

    def to_data(self) -> dict[str, Any]:
        return {"amount": str(self.amount)}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Price:
        return cls(Decimal(data["amount"]))


def _stored(type_: str, data: dict[str, Any], schema_version: int = 1) -> Event:
    return Event(stream_id="o-7", version=3, type=type_, data=data, schema_version=schema_version)


class TestRegistry:
    def test_round_trip(self) -> None:
        """to_event wraps a domain event with its type and schema; decode gives it back."""
        correlation = uuid.uuid4()
        item = ItemAdded(sku="fig", quantity=2, unit_price=7)
        event = events.to_event(item, stream_id="o-1", version=4, correlation_id=correlation)
        assert (event.type, event.schema_version, event.version) == ("ItemAdded", 2, 4)
        assert event.data == {"sku": "fig", "quantity": 2, "unit_price": 7}
        assert event.correlation_id == correlation
        assert events.decode(event) == item
        assert events.type_name(ItemAdded) == "ItemAdded"
        assert events.is_registered(ItemAdded)
        assert not events.is_registered(Renamed)

    def test_custom_conversion(self) -> None:
        """A class with to_data/from_data converts itself; the name defaults to the class's."""
        registry = EventRegistry()
        registry.add(Money)
        event = registry.to_event(Money(250), stream_id="m", version=1)
        assert (event.type, event.data) == ("Money", {"cents": 250})
        decoded = registry.decode(event)
        assert isinstance(decoded, Money)
        assert decoded.cents == 250

    def test_old_events_are_upcast_on_read(self) -> None:
        """A v1 ItemAdded (no price) loads into today's class through the upcaster."""
        old = _stored("ItemAdded", {"sku": "fig", "quantity": 1}, schema_version=1)
        assert events.decode(old) == ItemAdded(sku="fig", quantity=1, unit_price=0)

    def test_unknown_type_names_stream_version_and_type(self) -> None:
        """An unregistered type raises UnknownEventTypeError with stream, version, type."""
        with pytest.raises(UnknownEventTypeError) as info:
            events.decode(_stored("Teleported", {}))
        assert (info.value.stream_id, info.value.version, info.value.event_type) == (
            "o-7",
            3,
            "Teleported",
        )
        assert "'Teleported' at 'o-7' version 3" in str(info.value)

    @pytest.mark.parametrize(
        "data",
        [{"sku": "fig"}, {"sku": "fig", "quantity": 1, "unit_price": 1, "colour": "red"}],
    )
    def test_corrupt_payload_names_the_event(self, data: dict[str, Any]) -> None:
        """A payload that does not fit the class raises EventDecodeError naming the event."""
        with pytest.raises(EventDecodeError, match=r"'ItemAdded' at 'o-7' version 3: corrupt"):
            events.decode(_stored("ItemAdded", data, schema_version=2))

    def test_schema_problems_are_decode_errors(self) -> None:
        """A too-new schema, a missing or a failing upcaster raise EventDecodeError."""
        registry = EventRegistry()
        registry.add(Renamed, "Renamed", version=3)
        with pytest.raises(EventDecodeError, match="newer than 3"):
            registry.decode(_stored("Renamed", {"new_name": "x"}, schema_version=4))
        with pytest.raises(EventDecodeError, match="no upcaster from schema version 1"):
            registry.decode(_stored("Renamed", {"name": "x"}, schema_version=1))

        @registry.upcaster("Renamed", from_version=2)
        def _broken(data: dict[str, Any]) -> dict[str, Any]:
            return {"new_name": data["name"]}

        with pytest.raises(EventDecodeError, match="upcaster from version 2 failed"):
            registry.decode(_stored("Renamed", {"old": "x"}, schema_version=2))
        assert registry.decode(_stored("Renamed", {"name": "x"}, schema_version=2)) == Renamed("x")

    def test_any_error_of_user_conversion_code_names_the_event(self) -> None:
        """An upcaster or `from_data` failing in any way is an EventDecodeError naming the event."""
        registry = EventRegistry()
        registry.add(Renamed, "Renamed", version=2)
        registry.add(Price)

        @registry.upcaster("Renamed", from_version=1)
        def _upper(data: dict[str, Any]) -> dict[str, Any]:
            return {"new_name": data["name"].upper()}

        with pytest.raises(EventDecodeError, match=r"'Renamed' at 'o-7' version 3: upcaster"):
            registry.decode(_stored("Renamed", {"name": None}))
        with pytest.raises(EventDecodeError, match=r"'Price' at 'o-7' version 3: corrupt"):
            registry.decode(_stored("Price", {"amount": "a lot"}))
        assert registry.decode(_stored("Price", {"amount": "1.50"})) == Price(Decimal("1.50"))

    def test_bad_registrations_are_configuration_errors(self) -> None:
        """Duplicates, bad versions, plain classes and unregistered classes are rejected."""
        registry = EventRegistry()
        registry.add(Renamed)
        with pytest.raises(ConfigurationError, match="already registered"):
            registry.add(Renamed, "Other")
        with pytest.raises(ConfigurationError, match="already registered"):
            registry.add(ItemAdded, "Renamed")
        with pytest.raises(ConfigurationError, match="version"):
            registry.add(ItemAdded, version=0)
        with pytest.raises(ConfigurationError, match="name"):
            registry.add(ItemAdded, "")
        with pytest.raises(ConfigurationError, match="attrs class"):
            registry.add(uuid.UUID)
        with pytest.raises(ConfigurationError, match="not registered"):
            registry.to_event(ItemAdded("a", 1, 1), stream_id="s", version=1)
        registry.add_upcaster("Renamed", 1, dict)
        with pytest.raises(ConfigurationError, match="has an upcaster"):
            registry.add_upcaster("Renamed", 1, dict)
        with pytest.raises(ConfigurationError, match="from_version"):
            registry.add_upcaster("Renamed", 0, dict)

    def test_upcast_helper(self) -> None:
        """upcast() runs a chain on raw data; an unknown type name is reported."""
        assert events.upcast("ItemAdded", {"sku": "a", "quantity": 1}, 1) == {
            "sku": "a",
            "quantity": 1,
            "unit_price": 0,
        }
        assert events.upcast("ItemAdded", {"x": 1}, 2) == {"x": 1}
        with pytest.raises(UnknownEventTypeError):
            events.upcast("Nope", {}, 1)

    @given(
        steps=st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=6),
        start=st.data(),
        value=st.integers(),
    )
    def test_upcaster_chains_compose(
        self, steps: list[int], start: st.DataObject, value: int
    ) -> None:
        """Decoding from schema k applies upcasters k, k+1, ... in order, once each."""

        @attrs.frozen
        class Tally:
            n: int
            trail: tuple[int, ...]

        registry = EventRegistry()
        registry.add(Tally, "Tally", version=len(steps) + 1)
        for number, delta in enumerate(steps, start=1):

            def step(data: dict[str, Any], delta: int = delta, number: int = number) -> Any:
                return {"n": data["n"] + delta, "trail": (*data["trail"], number)}

            registry.add_upcaster("Tally", number, step)
        first = start.draw(st.integers(min_value=1, max_value=len(steps) + 1))
        stored = _stored("Tally", {"n": value, "trail": ()}, schema_version=first)
        decoded = registry.decode(stored)
        assert decoded == Tally(
            n=value + sum(steps[first - 1 :]), trail=tuple(range(first, len(steps) + 1))
        )
