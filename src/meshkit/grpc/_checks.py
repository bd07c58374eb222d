"""Attrs fields for lists in `meshkit.grpc` configs (generic validators: `meshkit._validate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from meshkit._validate import instance_of, require

__all__ = ["callable_or_none", "list_of"]


def list_of(kind: type, field: str) -> Any:  # noqa: ANN401 - an attrs field
    """Return an attrs field holding a tuple of `kind` values, given any non-string iterable.

    A bad value raises `ConfigurationError` naming `field`.
    """

    def convert(value: object) -> tuple[Any, ...]:
        ok = isinstance(value, Iterable) and not isinstance(value, str | bytes)
        require(ok, field, value, f"must be a list of {kind.__name__}")
        return tuple(value)  # type: ignore[arg-type]

    check: Callable[[Any, Any, Any], None] = instance_of(kind)

    def validate(_inst: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        for item in value:
            check(None, attribute, item)

    return attrs.field(default=(), converter=convert, validator=validate)


def callable_or_none(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Require a callable or None."""
    require(value is None or callable(value), attribute.name, value, "must be callable or None")
