"""Tests for Endpoint values and the endpoint-set check every balancer uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.balancing import Endpoint
from meshkit.balancing._endpoint import check_endpoints


class TestEndpoint:
    def test_address_and_labels(self) -> None:
        """address joins host and port (bracketing IPv6); label() reads metadata."""
        v4 = Endpoint(host="10.0.0.1", port=8080, metadata={"version": "v2", "az": "a"})
        assert v4.address == "10.0.0.1:8080"
        assert v4.metadata == (("az", "a"), ("version", "v2"))
        assert v4.label("version") == "v2"
        assert v4.label("missing") is None
        assert v4.label("missing", "v1") == "v1"
        assert Endpoint(host="::1", port=53).address == "[::1]:53"

    def test_metadata_from_pairs_is_hashable(self) -> None:
        """Metadata given as pairs or a mapping makes equal, hashable endpoints."""
        a = Endpoint(host="h", port=1, metadata=[("b", "2"), ("a", "1")])
        b = Endpoint(host="h", port=1, metadata={"a": "1", "b": "2"})
        assert a == b
        assert len({a, b}) == 1

    @pytest.mark.parametrize(
        ("field", "value"),
        [("port", 70000), ("port", -1), ("weight", -1), ("port", True), ("host", 5)],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """A bad field raises ConfigurationError naming it."""
        kwargs: dict[str, object] = {"host": "h", "port": 1, field: value}
        with pytest.raises(ConfigurationError) as info:
            Endpoint(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field

    @pytest.mark.parametrize("metadata", [5, [("a",)], ["abc"], [("a", "1"), ("a", "2")]])
    def test_bad_metadata_names_the_field(self, metadata: object) -> None:
        """Metadata that is not (key, value) pairs with unique keys is a ConfigurationError."""
        with pytest.raises(ConfigurationError) as info:
            Endpoint(host="h", port=1, metadata=metadata)  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == ("metadata", metadata)

    @given(st.lists(st.integers(0, 20), max_size=10))
    def test_check_endpoints_rejects_exactly_duplicates(self, ports: list[int]) -> None:
        """check_endpoints accepts a set iff no two endpoints share an address."""
        endpoints = [Endpoint(host="h", port=p) for p in ports]
        if len(set(ports)) == len(ports):
            assert check_endpoints(endpoints) == tuple(endpoints)
        else:
            with pytest.raises(ConfigurationError, match="duplicate"):
                check_endpoints(endpoints)

    def test_check_endpoints_rejects_non_endpoints(self) -> None:
        """Something that is not an Endpoint is refused with a clear error."""
        with pytest.raises(ConfigurationError, match="Endpoint"):
            check_endpoints(["10.0.0.1:80"])  # type: ignore[list-item]

    @pytest.mark.parametrize("endpoints", [None, 5, Endpoint(host="h", port=1)])
    def test_check_endpoints_needs_an_iterable(self, endpoints: object) -> None:
        """A non-iterable endpoint set (even a lone Endpoint) is a ConfigurationError."""
        with pytest.raises(ConfigurationError) as info:
            check_endpoints(endpoints)  # type: ignore[arg-type]
        assert info.value.field == "endpoints"
