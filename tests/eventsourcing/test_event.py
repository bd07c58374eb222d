"""Tests for the stored event envelope and the default JSON serializer."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.eventsourcing import Event, JSONSerializer, Serializer, Snapshot

NAIVE = dt.datetime(2024, 1, 1)  # noqa: DTZ001 - the point: a timestamp without a zone


class _BrokenZone(dt.tzinfo):
    """A zone whose offset Python refuses (beyond a day, or not a timedelta)."""

    def __init__(self, offset: object) -> None:
        self.offset = offset

    def utcoffset(self, _stamp: dt.datetime | None) -> dt.timedelta:
        return self.offset  # type: ignore[return-value]

    def dst(self, _stamp: dt.datetime | None) -> None:
        return None

    def tzname(self, _stamp: dt.datetime | None) -> str:
        return "broken"


BROKEN_ZONES = [
    dt.datetime(2024, 1, 1, tzinfo=_BrokenZone(dt.timedelta(hours=25))),
    dt.datetime(2024, 1, 1, tzinfo=_BrokenZone("+01:00")),
]

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


class TestJSONSerializer:
    @given(st.dictionaries(st.text(), JSON_VALUES, max_size=5))
    def test_round_trip(self, data: dict[str, object]) -> None:
        """loads(dumps(x)) == x for any JSON object, non-ASCII text included."""
        serializer = JSONSerializer()
        assert isinstance(serializer, Serializer)
        assert serializer.loads(serializer.dumps(data)) == data

    @pytest.mark.parametrize("raw", [b"[1, 2]", b"3", b'"text"', b"null"])
    def test_rejects_non_objects(self, raw: bytes) -> None:
        """A payload that is valid JSON but not an object is a ValueError."""
        with pytest.raises(ValueError, match="expected a JSON object"):
            JSONSerializer().loads(raw)

    def test_rejects_corrupt_bytes(self) -> None:
        """Corrupt bytes are a ValueError, which stores turn into EventDecodeError."""
        with pytest.raises(ValueError, match="Expecting"):
            JSONSerializer().loads(b"{not json")


class TestEvent:
    def test_defaults_and_identity(self) -> None:
        """An event gets a fresh id and an aware UTC timestamp; position is unset."""
        a = Event(stream_id="order-1", version=1, type="OrderCreated")
        b = Event(stream_id="order-1", version=1, type="OrderCreated")
        assert a.event_id != b.event_id
        assert a.timestamp.tzinfo is not None
        assert a.position is None
        assert a.schema_version == 1

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("version", 0),
            ("schema_version", 0),
            ("stream_id", 7),
            ("data", [1, 2]),
            ("event_id", "not-a-uuid"),
            ("timestamp", NAIVE),
            ("timestamp", "2024-01-01T00:00:00+00:00"),
            ("timestamp", BROKEN_ZONES[0]),
            ("timestamp", BROKEN_ZONES[1]),
            ("correlation_id", "not-a-uuid"),
            ("causation_id", 5),
            ("position", "3"),
        ],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """Invalid envelope fields raise ConfigurationError naming them (none reach a store)."""
        kwargs: dict[str, object] = {"stream_id": "s", "version": 1, "type": "T", field: value}
        with pytest.raises(ConfigurationError) as info:
            Event(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


class TestSnapshot:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("state", [1]), ("timestamp", NAIVE), *[("timestamp", zone) for zone in BROKEN_ZONES]],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """A state not a mapping, or a time naive or in a broken zone, is refused."""
        kwargs: dict[str, object] = {"stream_id": "s", "version": 1, "type": "T", field: value}
        with pytest.raises(ConfigurationError) as info:
            Snapshot(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
