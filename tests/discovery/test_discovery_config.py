"""Registration, check and registry configs: payloads, and every bad value a ConfigurationError."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.discovery import (
    ConsulRegistry,
    GrpcCheck,
    HttpCheck,
    ServiceRegistration,
    TtlCheck,
    WatchQuery,
)
from meshkit.discovery._agent import parse_agent
from meshkit.discovery._config import consul_duration

NASTY = [
    None, True, -1, 0, 2**80, float("nan"), float("inf"), -0.5, "", "\ud800", "a\x00b",
    b"bytes", [], {}, object(),
]  # fmt: skip


VALID_NASTY = [("service_id", None), ("check", None), ("address", NASTY[8])]  # NASTY[8] == ""


class TestServiceRegistration:
    def test_payload(self) -> None:
        """The agent's registration body carries weights, meta, tags and the check."""
        reg = ServiceRegistration(
            name="orders", port=8080, address="10.0.0.5", tags=["b", "a", "a"],
            meta={"zone": "z1"}, weight=4, warning_weight=1, check=TtlCheck(ttl=9),
        )  # fmt: skip
        assert reg.id == "orders-10.0.0.5-8080"
        assert reg.check_id == "service:orders-10.0.0.5-8080"
        assert reg.payload() == {
            "Name": "orders",
            "ID": "orders-10.0.0.5-8080",
            "Port": 8080,
            "Address": "10.0.0.5",
            "Tags": ["a", "b"],
            "Meta": {"zone": "z1"},
            "Weights": {"Passing": 4, "Warning": 1},
            "Check": {"TTL": "9000ms", "DeregisterCriticalServiceAfter": "60000ms"},
        }

    def test_no_check_and_no_reaping(self) -> None:
        """Without a check there is no Check; deregister_critical_after=None omits it."""
        reg = ServiceRegistration(name="a", port=1, service_id="a-1")
        assert "Check" not in reg.payload()
        assert "Address" not in reg.payload()
        assert reg.id == "a-1"
        http = HttpCheck(url="http://h:1/health", interval=2, timeout=1)
        reg = ServiceRegistration(name="a", port=1, check=http, deregister_critical_after=None)
        assert reg.payload()["Check"] == {
            "HTTP": "http://h:1/health", "Method": "GET", "Interval": "2000ms",
            "Timeout": "1000ms", "TLSSkipVerify": False,
        }  # fmt: skip

    def test_grpc_definition(self) -> None:
        """A gRPC check names the target and the TLS choice."""
        check = GrpcCheck(target="127.0.0.1:50051/orders.v1.Orders", interval=0.5, use_tls=True)
        assert check.definition() == {
            "GRPC": "127.0.0.1:50051/orders.v1.Orders", "GRPCUseTLS": True,
            "Interval": "500ms", "Timeout": "5000ms",
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("name", "has space"), ("name", "-lead"), ("name", "x" * 64), ("name", "\ud800"),
            ("name", "a\x00"), ("name", ""), ("name", 5), ("port", 0), ("port", 65536),
            ("port", True), ("port", 2**80), ("port", 1.5), ("address", "a b"), ("address", 3),
            ("service_id", "a/b"), ("service_id", ""), ("tags", "abc"), ("tags", [1]),
            ("tags", [""]), ("tags", 5), ("meta", [("a", "b")]), ("meta", {"": "x"}),
            ("meta", {"k": 1}), ("meta", {"k": "\ud800"}), ("weight", 0), ("weight", -1),
            ("meta", {"a b": "x"}), ("meta", {"zoné": "x"}), ("meta", {"k" * 129: "x"}),
            ("meta", {"k": "v" * 513}), ("meta", {f"k{i}": "v" for i in range(65)}),
            ("meta", {"consul-version": "x"}),
            ("warning_weight", -1), ("check", "ttl"), ("check", {"TTL": "10s"}),
            ("deregister_critical_after", -1), ("deregister_critical_after", float("nan")),
            ("resync_interval", float("inf")), ("resync_interval", 0),
        ],
    )  # fmt: skip
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """Each bad value raises ConfigurationError naming its field."""
        kwargs: dict[str, Any] = {"name": "orders", "port": 80, field: value}
        with pytest.raises(ConfigurationError) as info:
            ServiceRegistration(**kwargs)
        assert info.value.field == field

    @given(
        st.sampled_from(["name", "port", "address", "service_id", "weight", "check"]),
        st.sampled_from(NASTY),
    )
    def test_nasty_input_is_a_configuration_error(self, field: str, value: object) -> None:
        """Nothing but ConfigurationError escapes, whatever the value."""
        kwargs: dict[str, Any] = {"name": "orders", "port": 80, field: value}
        valid = any(field == f and value is v for f, v in VALID_NASTY)
        if valid:
            assert ServiceRegistration(**kwargs).port == 80
            return
        with pytest.raises(ConfigurationError) as info:
            ServiceRegistration(**kwargs)
        assert info.value.field == field


class TestChecks:
    @pytest.mark.parametrize("ttl", [-1, 0, float("nan"), float("inf"), "10s", True, None, 1e12])
    def test_bad_ttl(self, ttl: object) -> None:
        """A TTL must be a positive finite number of seconds."""
        with pytest.raises(ConfigurationError, match="ttl"):
            TtlCheck(ttl=ttl)  # type: ignore[arg-type]

    def test_heartbeat_is_a_third(self) -> None:
        """The heartbeat runs every ttl/3."""
        assert TtlCheck(ttl=9).heartbeat == 3

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"url": "ftp://x"}, {"url": "http://a b"}, {"url": 3},
            {"url": "http://x", "method": "DROP"}, {"url": "http://x", "interval": 0},
            {"url": "http://x", "tls_skip_verify": 1}, {"url": "http://x", "method": 5},
            {"url": "http://x", "method": None},
        ],
    )  # fmt: skip
    def test_bad_http(self, kwargs: dict[str, Any]) -> None:
        """An HTTP check needs an http(s) URL, a known method, positive durations."""
        with pytest.raises(ConfigurationError):
            HttpCheck(**kwargs)

    @pytest.mark.parametrize(
        "target", ["host", ":80", "h:0", "h:70000", "h:x", "h:٣", 5, "h:" + "9" * 5000]
    )
    def test_bad_grpc_target(self, target: object) -> None:
        """A gRPC target is host:port[/service]."""
        with pytest.raises(ConfigurationError, match="target"):
            GrpcCheck(target=target)  # type: ignore[arg-type]

    @given(st.floats(0.001, 1e6))
    def test_duration_rounds_up_to_milliseconds(self, seconds: float) -> None:
        """A Go duration in whole milliseconds, never shorter than asked."""
        text = consul_duration(seconds)
        assert text.endswith("ms")
        assert int(text[:-2]) >= seconds * 1000 - 1e-6


class TestRegistryConfig:
    def test_addresses(self) -> None:
        """Addresses take host:port, URLs and IPv6 literals."""
        reg = ConsulRegistry(addresses=["10.0.0.1:8500", "https://c.example:8501", "[::1]:8500"])
        assert [a.url for a in reg.addresses] == [
            "http://10.0.0.1:8500",
            "https://c.example:8501",
            "http://[::1]:8500",
        ]
        assert ConsulRegistry(addresses="127.0.0.1:8500").addresses == (
            parse_agent("127.0.0.1:8500"),
        )
        assert "token" not in repr(ConsulRegistry(token="s3cret"))  # noqa: S106 - not a secret

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"addresses": []}, {"addresses": 8500}, {"addresses": ["nohost"]},
            {"addresses": ["ftp://h:1"]}, {"addresses": ["h:0"]}, {"addresses": ["h:99999"]},
            {"addresses": ["\ud800:1"]}, {"addresses": [":80"]}, {"addresses": [None]},
            {"wait": 0}, {"wait": 601}, {"wait": float("nan")}, {"request_timeout": -1},
            {"min_interval": -0.1}, {"max_threads": 0}, {"token": "a\nb"}, {"token": 5},
            {"verify": None}, {"cert": 5}, {"backoff": 1.0}, {"clock": "now"}, {"rng": 4},
            {"addresses": ["h:" + "9" * 5000]}, {"cert": ("a", "b", "c")}, {"cert": ("a",)},
            {"cert": (1, 2)}, {"cert": "a\x00"}, {"verify": "\ud800"},
        ],
    )  # fmt: skip
    def test_bad_registry_config(self, kwargs: dict[str, Any]) -> None:
        """Every bad knob raises ConfigurationError at construction."""
        with pytest.raises(ConfigurationError):
            ConsulRegistry(**kwargs)

    def test_watch_query(self) -> None:
        """Queries keep tags sorted and meta as pairs; bad types are refused."""
        query = WatchQuery(tags=["b", "a"], meta={"zone": "z"})
        assert (query.tags, query.meta) == (("a", "b"), (("zone", "z"),))
        with pytest.raises(ConfigurationError):
            WatchQuery(passing_only="yes")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="zone_key"):
            WatchQuery(zone_key="a\x00")

    def test_meta_within_consul_limits(self) -> None:
        """Meta at Consul's limits (64 pairs, 128-char keys, 512-char values) is accepted."""
        meta = {f"k{i}_-" + "x" * 120: "v" * 512 for i in range(64)}
        assert len(ServiceRegistration(name="a", port=1, meta=meta).meta) == 64
