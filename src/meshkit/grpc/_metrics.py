"""Call metrics and traces: Prometheus under go-grpc-prometheus' names, and OpenTelemetry.

Both implement `CallObserver`: `started(side, kind, method)` when a call begins and
`handled(token, code)` when it ends. `ServerPolicy(observer=...)` and
`ClientPolicy(observer=...)` call them; the packages are optional extras, imported when an
observer is built. `kind` is go-grpc-prometheus' `grpc_type`: `unary`, `client_stream`,
`server_stream` or `bidi_stream`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, final, runtime_checkable

from meshkit.grpc._codes import Code

__all__ = ["GRPC_TYPES", "CallObserver", "OpenTelemetryObserver", "PrometheusObserver"]

GRPC_TYPES = {
    "unary_unary": "unary",
    "stream_unary": "client_stream",
    "unary_stream": "server_stream",
    "stream_stream": "bidi_stream",
}

# go-grpc-prometheus' default histogram buckets (Prometheus' defaults), in seconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@runtime_checkable
class CallObserver(Protocol):
    """Told when calls start and end (metrics, traces)."""

    def started(self, side: str, kind: str, method: str) -> Any:  # noqa: ANN401
        """Note a call's start; return a token for `handled`.

        Args:
            side: `"server"` or `"client"`.
            kind: `unary`, `client_stream`, `server_stream` or `bidi_stream`.
            method: The full method name, `/package.Service/Method`.
        """
        ...

    def handled(self, token: Any, code: Code) -> None:  # noqa: ANN401
        """Note the end of the call `token` came from, with its status."""
        ...


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


@final
class PrometheusObserver:
    """Prometheus metrics named as go-grpc-prometheus names them.

    `grpc_{server,client}_started_total`, `grpc_{server,client}_handled_total` (with
    `grpc_code`) and the `grpc_{server,client}_handling_seconds` histograms, labelled with
    `grpc_type`, `grpc_service` and `grpc_method`.

    Args:
        registry: The `prometheus_client` registry (its default registry if None).
    """

    def __init__(self, registry: Any = None) -> None:  # noqa: ANN401 - a CollectorRegistry
        import prometheus_client as prom  # noqa: PLC0415 - optional dependency

        registry = prom.REGISTRY if registry is None else registry
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self._started: dict[str, Any] = {}
        self._handled: dict[str, Any] = {}
        self._seconds: dict[str, Any] = {}
        self._cache: dict[tuple[str, str, str], tuple[Any, Any, dict[Code, Any]]] = {}
        for side, what in (
            ("server", "completed on the server"),
            ("client", "completed by the client"),
        ):
            self._started[side] = prom.Counter(
                f"grpc_{side}_started_total", f"RPCs started ({side}).", labels, registry=registry
            )
            self._handled[side] = prom.Counter(
                f"grpc_{side}_handled_total", f"RPCs {what}, by code.", [*labels, "grpc_code"],
                registry=registry,
            )  # fmt: skip
            self._seconds[side] = prom.Histogram(
                f"grpc_{side}_handling_seconds", f"Seconds to handle an RPC ({side}).", labels,
                buckets=_BUCKETS, registry=registry,
            )  # fmt: skip

    def _children(self, side: str, kind: str, method: str) -> tuple[Any, Any, dict[Code, Any]]:
        # `labels()` costs a lock and a tuple hash per use: keep each method's children.
        key = (side, kind, method)
        found = self._cache.get(key)
        if found is None:
            labels = (kind, *_split(method))
            handled = self._handled[side]
            found = (
                self._started[side].labels(*labels),
                self._seconds[side].labels(*labels),
                {code: handled.labels(*labels, code.name) for code in Code},
            )
            self._cache[key] = found
        return found

    def started(self, side: str, kind: str, method: str) -> Any:  # noqa: ANN401
        """Count a started call; return its token."""
        started, seconds, handled = self._children(side, kind, method)
        started.inc()
        return seconds, handled, time.perf_counter()

    def handled(self, token: Any, code: Code) -> None:  # noqa: ANN401
        """Count the handled call and observe its duration."""
        seconds, handled, start = token
        handled[code].inc()
        seconds.observe(time.perf_counter() - start)


@final
class OpenTelemetryObserver:
    """OpenTelemetry spans and `rpc.{server,client}.duration` histograms (milliseconds).

    Attributes follow OpenTelemetry's RPC conventions: `rpc.system=grpc`, `rpc.service`,
    `rpc.method`, `rpc.grpc.status_code`. Spans are children of the current OpenTelemetry
    context.

    Args:
        tracer_provider: The tracer provider (the global one if None).
        meter_provider: The meter provider (the global one if None).
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:  # noqa: ANN401
        from opentelemetry import metrics, trace  # noqa: PLC0415 - optional dependency

        self._trace = trace
        self._tracer = trace.get_tracer("meshkit.grpc", tracer_provider=tracer_provider)
        meter = metrics.get_meter("meshkit.grpc", meter_provider=meter_provider)
        self._duration = {
            side: meter.create_histogram(f"rpc.{side}.duration", unit="ms")
            for side in ("server", "client")
        }

    def started(self, side: str, kind: str, method: str) -> Any:  # noqa: ANN401
        """Start a span for the call; return the token."""
        service, name = _split(method)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        span_kind = self._trace.SpanKind.SERVER if side == "server" else self._trace.SpanKind.CLIENT
        span = self._tracer.start_span(method.lstrip("/"), kind=span_kind, attributes=attributes)
        del kind
        return side, attributes, span, time.perf_counter()

    def handled(self, token: Any, code: Code) -> None:  # noqa: ANN401
        """End the span with the status and record the duration."""
        side, attributes, span, start = token
        span.set_attribute("rpc.grpc.status_code", int(code))
        if code is not Code.OK:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, code.name))
        span.end()
        elapsed = (time.perf_counter() - start) * 1000.0
        self._duration[side].record(elapsed, {**attributes, "rpc.grpc.status_code": int(code)})
