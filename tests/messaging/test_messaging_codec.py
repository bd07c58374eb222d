"""The wire format: events survive the envelope; bad bytes become a reason, never an error."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given
from hypothesis import strategies as st

from meshkit.eventsourcing import Event, JSONSerializer
from meshkit.messaging._codec import decode, decode_envelope, encode_envelope

SERIALIZER = JSONSerializer()


class TestEnvelope:
    def test_round_trip_keeps_every_field(self) -> None:
        """All envelope fields, optional ones included, come back equal."""
        event = Event(
            stream_id="order-\ud800-☃",
            version=3,
            type="OrderPlaced",
            data={"total": 1.5, "lines": [{"sku": "A"}], "note": "naïve"},
            schema_version=2,
            timestamp=dt.datetime(2024, 1, 2, 3, 4, 5, 6789, tzinfo=dt.UTC),
            correlation_id=uuid.uuid4(),
            causation_id=uuid.uuid4(),
            position=17,
        )
        assert decode_envelope(encode_envelope(event, SERIALIZER), SERIALIZER) == event

    def test_missing_metadata_line_is_a_reason(self) -> None:
        """A body without the metadata line decodes to a reason."""
        event, reason = decode(decode_envelope, b"just bytes", SERIALIZER)
        assert event is None
        assert reason == "ValueError: no metadata line"

    def test_metadata_that_is_not_an_object_is_a_reason(self) -> None:
        """A metadata line that is JSON but not an object decodes to a reason."""
        event, reason = decode(decode_envelope, b"[1]\n{}", SERIALIZER)
        assert event is None
        assert reason is not None
        assert reason.startswith("TypeError")

    def test_deep_nesting_is_a_reason(self) -> None:
        """A payload nested too deep for the JSON parser is a reason, not a RecursionError."""
        head = encode_envelope(Event(stream_id="s", version=1, type="T"), SERIALIZER)
        body = head.split(b"\n")[0] + b"\n" + b"[" * 100_000 + b"]" * 100_000
        event, reason = decode(decode_envelope, body, SERIALIZER)
        assert event is None
        assert reason is not None

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_raise(self, body: bytes) -> None:
        """Any bytes decode to an event or to a reason."""
        event, reason = decode(decode_envelope, body, SERIALIZER)
        assert (event is None) != (reason is None)

    @given(
        st.dictionaries(
            st.sampled_from(["event_id", "stream_id", "version", "type", "timestamp", "x"]),
            st.one_of(st.text(), st.integers(), st.none(), st.floats()),
        )
    )
    def test_malformed_metadata_never_raises(self, meta: dict[str, object]) -> None:
        """Metadata with wrong or missing fields decodes to a reason."""
        import json  # noqa: PLC0415

        body = json.dumps(meta).encode() + b"\n{}"
        event, reason = decode(decode_envelope, body, SERIALIZER)
        assert event is None
        assert reason is not None
