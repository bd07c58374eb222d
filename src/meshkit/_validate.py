"""The one validator vocabulary: attrs validators that raise `ConfigurationError`.

Every check a config or an argument needs is spelled once here, so a bad value is reported the
same way wherever it is caught: the field, the value and the rule. Use them on attrs fields
(`attrs.field(validator=[count(), le(100)])`) and `require()` for a plain function argument.
Each validator is a small frozen object with a `repr` saying its rule, as attrs' own are.

| validator | accepts |
| --- | --- |
| `gt(b)`, `ge(b)`, `lt(b)`, `le(b)`, `in_range(lo, hi)` | a number (not bool, not NaN) in bounds |
| `finite` | a finite number |
| `positive_seconds` | a duration in seconds: a finite number > 0 |
| `count(minimum, maximum)` | an int (not bool) in `[minimum, maximum]` |
| `non_empty_str` | a non-empty str that UTF-8 can encode (no lone surrogate) without NUL |
| `is_callable` | anything callable |
| `exception_matcher` | an exception type, a tuple of them, or a predicate on the exception |
| `one_of(*values)` | one of `values` |
| `instance_of(*types)` | an instance of `types` (bool is no int here) |
| `optional(v)` | `None`, or what `v` accepts |
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast, final

import attrs

from meshkit._errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ExceptionMatcher",
    "check",
    "count",
    "exception_matcher",
    "exception_predicate",
    "finite",
    "ge",
    "gt",
    "in_range",
    "instance_of",
    "is_callable",
    "le",
    "lt",
    "non_empty_str",
    "one_of",
    "optional",
    "positive_seconds",
    "require",
    "text_problem",
]

_T = TypeVar("_T")

Validator: TypeAlias = Callable[[Any, "attrs.Attribute[Any]", Any], None]

ExceptionMatcher: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[Exception], bool]
)
"""Exception types (one or a tuple, matched with `isinstance`) or a predicate on the exception."""


def require(ok: bool, field: str, value: object, reason: str) -> None:  # noqa: FBT001
    """Raise `ConfigurationError(field, value, reason)` unless `ok`.

    Raises:
        ConfigurationError: If `ok` is false.
    """
    if not ok:
        raise ConfigurationError(field, value, reason)


def _number(field: str, value: object) -> float:
    """Return `value` if it is a real number that is not NaN; bool is not a number here."""
    kind = type(value)
    if kind is int:  # the common case first: exact ints (never bool, never NaN)
        return value  # type: ignore[return-value]
    if kind is float and value == value:  # noqa: PLR0124 - NaN is the only x != x
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(field, value, "must be a number")
    if math.isnan(value):
        raise ConfigurationError(field, value, "must not be NaN")
    return value


def _is_finite(number: float) -> bool:
    # An int past float range counts as infinite: every knob ends up in float arithmetic,
    # where it would overflow later, far from the field that caused it.
    if isinstance(number, int):
        return -sys.float_info.max <= number <= sys.float_info.max
    return math.isfinite(number)


@final
@attrs.frozen(repr=False)
class _Compare:
    op: Callable[[float, float], bool]
    text: str
    bound: float

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not self.op(_number(attribute.name, value), self.bound):
            raise ConfigurationError(attribute.name, value, f"must be {self.text} {self.bound}")

    def __repr__(self) -> str:
        return f"<validator: number {self.text} {self.bound}>"


def gt(bound: float) -> Validator:
    """Require a number greater than `bound`."""
    return _Compare(operator.gt, ">", bound)


def ge(bound: float) -> Validator:
    """Require a number greater than or equal to `bound`."""
    return _Compare(operator.ge, ">=", bound)


def lt(bound: float) -> Validator:
    """Require a number less than `bound`."""
    return _Compare(operator.lt, "<", bound)


def le(bound: float) -> Validator:
    """Require a number less than or equal to `bound`."""
    return _Compare(operator.le, "<=", bound)


@final
@attrs.frozen(repr=False)
class _InRange:
    low: float
    high: float

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not self.low <= _number(attribute.name, value) <= self.high:
            reason = f"must be in [{self.low}, {self.high}]"
            raise ConfigurationError(attribute.name, value, reason)

    def __repr__(self) -> str:
        return f"<validator: number in [{self.low}, {self.high}]>"


def in_range(low: float, high: float) -> Validator:
    """Require a number in the closed interval `[low, high]`."""
    return _InRange(low, high)


@final
@attrs.frozen(repr=False)
class _Finite:
    positive: bool

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        number = _number(attribute.name, value)
        if not _is_finite(number):
            raise ConfigurationError(attribute.name, value, "must be finite")
        if self.positive and not number > 0:
            raise ConfigurationError(attribute.name, value, "must be > 0 seconds")

    def __repr__(self) -> str:
        return "<validator: positive finite seconds>" if self.positive else "<validator: finite>"


finite: Validator = _Finite(positive=False)
"""Require a finite number."""

positive_seconds: Validator = _Finite(positive=True)
"""Require a duration in seconds: a finite number greater than 0."""


@final
@attrs.frozen(repr=False)
class _Count:
    minimum: int
    maximum: int | None

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(attribute.name, value, "must be int")
        if value < self.minimum:
            raise ConfigurationError(attribute.name, value, f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigurationError(attribute.name, value, f"must be <= {self.maximum}")

    def __repr__(self) -> str:
        high = "" if self.maximum is None else f", <= {self.maximum}"
        return f"<validator: int >= {self.minimum}{high}>"


def count(minimum: int = 1, maximum: int | None = None) -> Validator:
    """Require an int (not bool) in `[minimum, maximum]` (no upper bound when `maximum` is None)."""
    return _Count(minimum, maximum)


def text_problem(value: object) -> str | None:
    """Return why `value` is not storable text (a str UTF-8 can encode, without NUL), or None."""
    if not isinstance(value, str):
        return "must be a str"
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


@final
@attrs.frozen(repr=False)
class _NonEmptyStr:
    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        problem = text_problem(value) or (None if value else "must be a non-empty str")
        if problem is not None:
            raise ConfigurationError(attribute.name, value, problem)

    def __repr__(self) -> str:
        return "<validator: non-empty str>"


non_empty_str: Validator = _NonEmptyStr()
"""Require a non-empty str that UTF-8 can encode and that holds no NUL (a name, an id)."""


@final
@attrs.frozen(repr=False)
class _IsCallable:
    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not callable(value):
            raise ConfigurationError(attribute.name, value, "must be callable")

    def __repr__(self) -> str:
        return "<validator: callable>"


is_callable: Validator = _IsCallable()
"""Require something callable."""


def _is_exception_type(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


@final
@attrs.frozen(repr=False)
class _ExceptionMatcher:
    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        is_types = isinstance(value, tuple) and all(_is_exception_type(k) for k in value)
        # A class that is not an exception type is not a predicate either.
        is_predicate = callable(value) and not isinstance(value, type)
        if not (_is_exception_type(value) or is_types or is_predicate):
            reason = "must be an exception type, a tuple of them, or a predicate"
            raise ConfigurationError(attribute.name, value, reason)

    def __repr__(self) -> str:
        return "<validator: exception matcher>"


exception_matcher: Validator = _ExceptionMatcher()
"""Require an `ExceptionMatcher`: an exception type, a tuple of them, or a predicate."""


def exception_predicate(matcher: ExceptionMatcher) -> Callable[[Exception], bool]:
    """Compile an `ExceptionMatcher` into a predicate (a predicate is returned as it is)."""
    if isinstance(matcher, type | tuple):
        types = matcher

        def matches(exc: Exception) -> bool:
            return isinstance(exc, types)

        return matches
    return matcher


@final
@attrs.frozen(repr=False)
class _OneOf:
    values: tuple[object, ...]

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        # `is` first: an unhashable or oddly-comparing value must not raise from inside here.
        if not any(value is v or (type(value) is type(v) and value == v) for v in self.values):
            raise ConfigurationError(attribute.name, value, f"must be one of {self._names()}")

    def _names(self) -> str:
        return ", ".join(repr(v) for v in self.values)

    def __repr__(self) -> str:
        return f"<validator: one of {self._names()}>"


def one_of(*values: object) -> Validator:
    """Require one of `values` (compared by type and equality, so `True` is not `1`)."""
    return _OneOf(values)


@final
@attrs.frozen(repr=False)
class _InstanceOf:
    types: tuple[type, ...]
    # isinstance against a runtime-checkable Protocol (`Clock`) inspects each of its members on
    # every call, several microseconds paid by each Timeout a gRPC call builds; a type that
    # passed once passes again, so remember it (the set only grows by the few types in use).
    _passed: set[type] = attrs.field(factory=set, init=False, eq=False)

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        kind = type(value)
        if kind in self._passed:
            return
        is_bad_bool = kind is bool and bool not in self.types
        if is_bad_bool or not isinstance(value, self.types):
            raise ConfigurationError(attribute.name, value, f"must be {self._names()}")
        self._passed.add(kind)

    def _names(self) -> str:
        return " or ".join(t.__name__ for t in self.types)

    def __repr__(self) -> str:
        return f"<validator: instance of {self._names()}>"


def instance_of(*types: type) -> Validator:
    """Require an instance of one of `types` (bool is not accepted where int is asked)."""
    return _InstanceOf(types)


@final
@attrs.frozen(repr=False)
class _Optional:
    validators: tuple[Validator, ...]

    def __call__(self, inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            for validator in self.validators:
                validator(inst, attribute, value)

    def __repr__(self) -> str:
        return f"<validator: None or {', '.join(map(repr, self.validators))}>"


def optional(validator: Validator | Iterable[Validator]) -> Validator:
    """Accept `None` or whatever `validator` (or every one of a list of them) accepts."""
    validators = tuple(validator) if not callable(validator) else (validator,)
    return _Optional(validators)


class _Argument:
    """What a `meshkit._validate` validator reads of the attrs field it checks: the name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def check(field: str, value: _T, *validators: Validator) -> _T:
    """Return `value` after running `meshkit._validate` validators on it as the field `field`.

    This applies the one validator vocabulary to a plain argument (a strategy's knob or a
    reported latency), which has no attrs field to hang the validators on.

    Raises:
        ConfigurationError: If a validator rejects `value`; it names `field`.
    """
    argument = cast("attrs.Attribute[Any]", _Argument(field))
    for validator in validators:
        validator(None, argument, value)
    return value
