"""Small attrs validators that raise `ConfigurationError` naming the field and the value.

Use them on config classes (`attrs.field(validator=gt(0))`) and `require()` for plain
function arguments, so that every bad value is reported the same way wherever it is caught.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshkit._errors import ConfigurationError

if TYPE_CHECKING:
    import attrs

__all__ = ["finite", "ge", "gt", "in_range", "instance_of", "le", "lt", "optional", "require"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def require(ok: bool, field: str, value: object, reason: str) -> None:  # noqa: FBT001
    """Raise `ConfigurationError(field, value, reason)` unless `ok`.

    Raises:
        ConfigurationError: If `ok` is false.
    """
    if not ok:
        raise ConfigurationError(field, value, reason)


def _number(attribute: attrs.Attribute[Any], value: object) -> float:
    kind = type(value)
    if kind is int:  # the common case first: exact ints (never bool, never NaN)
        return value  # type: ignore[return-value]
    if kind is float and value == value:  # noqa: PLR0124 - NaN is the only x != x
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(attribute.name, value, "must be a number")
    if math.isnan(value):
        raise ConfigurationError(attribute.name, value, "must not be NaN")
    return value


def _compare(op: Callable[[float, float], bool], text: str, bound: float) -> Validator:
    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        number = _number(attribute, value)
        if not op(number, bound):
            raise ConfigurationError(attribute.name, value, f"must be {text} {bound}")

    return validate


def gt(bound: float) -> Validator:
    """Require a number greater than `bound`."""
    return _compare(operator.gt, ">", bound)


def ge(bound: float) -> Validator:
    """Require a number greater than or equal to `bound`."""
    return _compare(operator.ge, ">=", bound)


def lt(bound: float) -> Validator:
    """Require a number less than `bound`."""
    return _compare(operator.lt, "<", bound)


def le(bound: float) -> Validator:
    """Require a number less than or equal to `bound`."""
    return _compare(operator.le, "<=", bound)


def in_range(low: float, high: float) -> Validator:
    """Require a number in the closed interval `[low, high]`."""

    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        number = _number(attribute, value)
        if not low <= number <= high:
            raise ConfigurationError(attribute.name, value, f"must be in [{low}, {high}]")

    return validate


def finite(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Require a finite number."""
    if not math.isfinite(_number(attribute, value)):
        raise ConfigurationError(attribute.name, value, "must be finite")


def instance_of(*types: type) -> Validator:
    """Require an instance of one of `types` (bool is not accepted where int is asked)."""
    names = " or ".join(t.__name__ for t in types)

    def validate(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        is_bad_bool = isinstance(value, bool) and bool not in types
        if is_bad_bool or not isinstance(value, types):
            raise ConfigurationError(attribute.name, value, f"must be {names}")

    return validate


def optional(validator: Validator) -> Validator:
    """Accept `None` or whatever `validator` accepts."""

    def validate(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            validator(inst, attribute, value)

    return validate
