"""What travels with a call from hop to hop: correlation id, W3C trace context, idempotency key.

The values live in context variables: a server interceptor sets them from the incoming
metadata for the handler's duration, and a client interceptor reads them for the outgoing
calls that handler makes, so a chain `client -> A -> B` shares one correlation id and one
trace. Incoming values are checked; a malformed one is replaced (correlation id, trace) or
refused (idempotency key), never passed on.
"""

from __future__ import annotations

import contextvars
import re
import secrets
import uuid
from typing import TYPE_CHECKING, final

import attrs

from meshkit._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CORRELATION_HEADER",
    "IDEMPOTENCY_HEADER",
    "TRACEPARENT_HEADER",
    "TraceContext",
    "check_idempotency_key",
    "check_metadata",
    "current_correlation_id",
    "current_trace",
    "new_correlation_id",
    "parse_correlation_id",
]

CORRELATION_HEADER = "x-correlation-id"
TRACEPARENT_HEADER = "traceparent"
IDEMPOTENCY_HEADER = "idempotency-key"

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TOKEN = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_MAX_KEY = 128
# What gRPC accepts (PROTOCOL-HTTP2.md): lowercase keys; `-bin` values are bytes, other values
# printable ASCII. grpcio itself fails on anything else with a raw TypeError,
# UnicodeEncodeError or its internal ExecuteBatchError.
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")
_METADATA_TEXT = re.compile(r"[\x20-\x7e]*")


@final
@attrs.frozen
class TraceContext:
    """A W3C trace context: the trace, this hop's span, and the sampled flag.

    Attributes:
        trace_id: 32 lowercase hex digits, not all zero.
        span_id: 16 lowercase hex digits, not all zero.
        flags: The trace flags byte (bit 0: sampled).
    """

    trace_id: str
    span_id: str
    flags: int = 1

    @classmethod
    def new(cls) -> TraceContext:
        """Return the root of a new trace."""
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @classmethod
    def parse(cls, header: str) -> TraceContext | None:
        """Return the context a `traceparent` header carries, or None if it is malformed."""
        match = _TRACEPARENT.fullmatch(header)
        if match is None:
            return None
        trace_id, span_id, flags = match.groups()
        if trace_id == "0" * 32 or span_id == "0" * 16:
            return None
        return cls(trace_id, span_id, int(flags, 16))

    def child(self) -> TraceContext:
        """Return the context of an outgoing call: same trace, a new span."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    def header(self) -> str:
        """Return the `traceparent` header value."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "meshkit_grpc_correlation_id", default=None
)
TRACE: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "meshkit_grpc_trace", default=None
)


def current_correlation_id() -> str | None:
    """Return the correlation id of the call being served, or None outside one."""
    return CORRELATION_ID.get()


def current_trace() -> TraceContext | None:
    """Return the trace context of the call being served, or None outside one."""
    return TRACE.get()


def new_correlation_id() -> str:
    """Return a fresh correlation id."""
    return uuid.uuid4().hex


def parse_correlation_id(value: str | None) -> str:
    """Return `value` if it is a well-formed correlation id, else a fresh one."""
    if value is not None and _TOKEN.fullmatch(value):
        return value
    return new_correlation_id()


def check_metadata(pairs: Sequence[tuple[object, object]]) -> None:
    """Check outgoing metadata the way gRPC will, before grpcio fails on it obscurely.

    Raises:
        ConfigurationError: If a key is not lowercase letters, digits and `_.-`, a `-bin`
            value is not bytes, or another value is not a string of printable ASCII.
    """
    for key, value in pairs:
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise ConfigurationError("metadata", key, "keys must be lowercase a-z, 0-9, _.-")
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                raise ConfigurationError(key, value, "a -bin value must be bytes")
        elif not isinstance(value, str) or not _METADATA_TEXT.fullmatch(value):
            raise ConfigurationError(key, value, "must be a string of printable ASCII")


def check_idempotency_key(value: str) -> str:
    """Return `value` if it is a usable idempotency key.

    Raises:
        ConfigurationError: If it is empty, longer than 128 characters, or holds anything
            but letters, digits and `._:@/+=-`.
    """
    if not _TOKEN.fullmatch(value):
        reason = f"must be 1-{_MAX_KEY} characters of letters, digits and ._:@/+=-"
        raise ConfigurationError(IDEMPOTENCY_HEADER, value, reason)
    return value
