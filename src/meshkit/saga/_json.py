"""Saga data is logged, so it must survive a JSON round trip; check it where it enters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from meshkit._errors import ConfigurationError

__all__ = ["describe", "json_mapping"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_MAX_ERROR = 2000


def json_mapping(value: object, field: str) -> dict[str, Any]:
    """Return `value` as it will read back from the log: a JSON object, round-tripped.

    The round trip is what a recovering orchestrator sees (tuples become lists, non-str keys
    become str), so live and recovered runs hand steps the very same data.

    Raises:
        ConfigurationError: Naming `field`, if `value` is not a mapping or cannot be encoded
            (a non-JSON type, NaN or infinity, a lone surrogate, nesting too deep, two keys
            that become one str key).
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError(field, value, "must be a mapping (a JSON object)")
    try:
        text = _ENCODER.encode(dict(value))
        text.encode()
        # Decoding can fail where encoding did not (nesting just under the limit).
        decoded: dict[str, Any] = json.loads(text, object_pairs_hook=_unique_keys)
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        reason = f"must be JSON-serializable: {type(exc).__name__}: {exc}"
        raise ConfigurationError(field, _short(value), reason[:_MAX_ERROR]) from None
    return decoded


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key repeats only where two keys became one str ({True: 1, "true": 2}): merging them
    # would drop a value silently.
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            msg = f"two keys become the same str key {key!r}"
            raise ValueError(msg)
        result[key] = item
    return result


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return text[:200]


def describe(exc: BaseException) -> str:
    """Return `exc` as text that is safe to log as JSON (no lone surrogates), shortened."""
    text = f"{type(exc).__name__}: {exc}"
    return text.encode("utf-8", "backslashreplace").decode()[:_MAX_ERROR]
