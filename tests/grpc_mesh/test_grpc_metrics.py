"""Prometheus (go-grpc-prometheus names) and OpenTelemetry observers on real calls."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import echo_pb2
import echo_pb2_grpc
from grpc_helpers import KINDS, aio_server, call_aio, call_sync, sync_server
from meshkit import RpcStatusError
from meshkit.grpc import ClientPolicy, OpenTelemetryObserver, PrometheusObserver, ServerPolicy
from meshkit.grpc._metrics import GRPC_TYPES

SERVICE = "meshkit.test.v1.Echo"


def _labels(kind: str, method: str, **extra: str) -> dict[str, str]:
    return {"grpc_type": GRPC_TYPES[kind], "grpc_service": SERVICE, "grpc_method": method, **extra}


class TestPrometheus:
    """The go-grpc-prometheus metric names."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_server_and_client_counters(self, kind: str) -> None:
        """Started/handled counters and the handling histogram, by kind and code."""
        registry = CollectorRegistry()
        observer = PrometheusObserver(registry)
        method = {"unary_unary": "Unary", "unary_stream": "ServerStream",
                  "stream_unary": "ClientStream", "stream_stream": "Bidi"}[kind]  # fmt: skip
        server = ServerPolicy(observer=observer)
        client = ClientPolicy(observer=observer)
        with (
            sync_server([server.interceptor()]) as (address, _),
            grpc.insecure_channel(address) as raw,
        ):
            stub = echo_pb2_grpc.EchoStub(grpc.intercept_channel(raw, client.interceptor()))
            call_sync(stub, kind, echo_pb2.EchoRequest(text="a"))
            with pytest.raises(RpcStatusError):
                call_sync(stub, kind, echo_pb2.EchoRequest(text="b", fail="conflict"))
        for side in ("server", "client"):
            started = registry.get_sample_value(f"grpc_{side}_started_total", _labels(kind, method))
            assert started == 2
            ok = _labels(kind, method, grpc_code="OK")
            aborted = _labels(kind, method, grpc_code="ABORTED")
            assert registry.get_sample_value(f"grpc_{side}_handled_total", ok) == 1
            assert registry.get_sample_value(f"grpc_{side}_handled_total", aborted) == 1
            count = registry.get_sample_value(
                f"grpc_{side}_handling_seconds_count", _labels(kind, method)
            )
            assert count == 2


class TestOpenTelemetry:
    """Spans and duration histograms."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("kind", KINDS)
    async def test_spans_and_durations(self, kind: str) -> None:
        """Each side makes one span per call, with the status code; durations are recorded."""
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        observer = OpenTelemetryObserver(tracer_provider, meter_provider)
        async with (
            aio_server([ServerPolicy(observer=observer).aio_interceptor()]) as (address, _),
            grpc.aio.insecure_channel(
                address, interceptors=ClientPolicy(observer=observer).aio_interceptors()
            ) as channel,
        ):
            stub: Any = echo_pb2_grpc.EchoStub(channel)
            await call_aio(stub, kind, echo_pb2.EchoRequest(text="a"))
            with pytest.raises(RpcStatusError):
                await call_aio(stub, kind, echo_pb2.EchoRequest(text="b", fail="notfound"))
        spans = exporter.get_finished_spans()
        assert len(spans) == 4
        codes = sorted(int(str((s.attributes or {})["rpc.grpc.status_code"])) for s in spans)
        assert codes == [0, 0, 5, 5]
        data = reader.get_metrics_data()
        assert data is not None
        names = {m.name for rm in data.resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics}  # fmt: skip
        assert names == {"rpc.server.duration", "rpc.client.duration"}
        tracer_provider.shutdown()
        meter_provider.shutdown()
