"""Tests for the shared config validators."""

from __future__ import annotations

import re

import attrs
import pytest

from meshkit import ConfigurationError
from meshkit._validate import (
    count,
    exception_matcher,
    exception_predicate,
    finite,
    ge,
    gt,
    in_range,
    instance_of,
    is_callable,
    le,
    lt,
    non_empty_str,
    one_of,
    optional,
    positive_seconds,
    require,
    text_problem,
)


@attrs.frozen(kw_only=True)
class _Config:
    a: float = attrs.field(default=1, validator=gt(0))
    b: float = attrs.field(default=0, validator=ge(0))
    c: float = attrs.field(default=0, validator=lt(1))
    d: float = attrs.field(default=1, validator=le(1))
    e: float = attrs.field(default=0.5, validator=in_range(0, 1))
    f: float = attrs.field(default=1.0, validator=finite)
    g: int = attrs.field(default=1, validator=instance_of(int))
    h: int | None = attrs.field(default=None, validator=optional(gt(0)))


class TestValidators:
    def test_defaults_pass(self) -> None:
        """Valid values construct."""
        assert _Config(h=3).h == 3

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            ("a", 0, "> 0"),
            ("b", -1, ">= 0"),
            ("c", 1, "< 1"),
            ("d", 2, "<= 1"),
            ("e", 1.5, "in [0, 1]"),
            ("f", float("inf"), "finite"),
            ("g", True, "must be int"),
            ("g", "1", "must be int"),
            ("h", 0, "> 0"),
            ("a", float("nan"), "NaN"),
            ("e", float("nan"), "NaN"),
            ("a", "x", "number"),
            ("b", False, "number"),
        ],
    )
    def test_bad_value_names_field_and_value(self, field: str, value: object, reason: str) -> None:
        """A bad value raises ConfigurationError naming the field, the value and the rule."""
        with pytest.raises(ConfigurationError, match=re.escape(reason)) as info:
            _Config(**{field: value})  # type: ignore[arg-type]
        assert info.value.field == field
        assert info.value.value is value

    def test_require(self) -> None:
        """require() raises only when its condition is false."""
        require(True, "x", 1, "fine")
        with pytest.raises(ConfigurationError, match="invalid x=1: bad"):
            require(False, "x", 1, "bad")

    def test_bounds_print_as_given(self) -> None:
        """An int bound reads as an int in the message (>= 0, not >= 0.0)."""
        with pytest.raises(ConfigurationError) as info:
            _Config(b=-1)
        assert str(info.value) == "invalid b=-1: must be >= 0"

    def test_number_subclasses_are_numbers(self) -> None:
        """Subclasses of int and float (an IntEnum, a float subclass) pass numeric checks."""

        class Size(int):
            pass

        class Ratio(float):
            pass

        config = _Config(a=Size(3), e=Ratio(0.25))
        assert (config.a, config.e) == (3, 0.25)
        with pytest.raises(ConfigurationError, match="NaN"):
            _Config(a=Ratio("nan"))


@attrs.frozen(kw_only=True)
class _Vocabulary:
    seconds: float = attrs.field(default=1.0, validator=positive_seconds)
    n: int = attrs.field(default=1, validator=count(1, 10))
    name: str = attrs.field(default="x", validator=non_empty_str)
    fn: object = attrs.field(default=print, validator=is_callable)
    matcher: object = attrs.field(default=ValueError, validator=exception_matcher)
    mode: object = attrs.field(default="a", validator=one_of("a", "b"))


class TestVocabulary:
    def test_good_values_pass(self) -> None:
        """Every validator of the vocabulary accepts what its rule allows."""
        config = _Vocabulary(
            seconds=10**300, n=10, name="ok", fn=len, matcher=(KeyError, OSError), mode="b"
        )
        assert config.n == 10
        assert _Vocabulary(matcher=lambda exc: True).mode == "a"

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            ("seconds", 0, "> 0 seconds"),
            ("seconds", -1.0, "> 0 seconds"),
            ("seconds", float("inf"), "finite"),
            ("seconds", float("nan"), "NaN"),
            ("seconds", True, "number"),
            ("n", 0, ">= 1"),
            ("n", 11, "<= 10"),
            ("n", True, "must be int"),
            ("n", 1.0, "must be int"),
            ("name", "", "non-empty"),
            ("name", 3, "must be a str"),
            ("name", "a\x00b", "NUL"),
            ("name", "bad-\ud800", "lone surrogate"),
            ("fn", 3, "callable"),
            ("matcher", int, "exception type"),
            ("matcher", (ValueError, int), "exception type"),
            ("matcher", "ValueError", "exception type"),
            ("mode", "c", "one of 'a', 'b'"),
            ("mode", [], "one of"),
        ],
    )
    def test_bad_value_names_field_and_value(self, field: str, value: object, reason: str) -> None:
        """A bad value raises ConfigurationError naming the field, the value and the rule."""
        with pytest.raises(ConfigurationError, match=re.escape(reason)) as info:
            _Vocabulary(**{field: value})  # type: ignore[arg-type]
        assert info.value.field == field
        assert info.value.value is value

    def test_huge_int_is_not_finite(self) -> None:
        """An int past float range is refused as not finite (it would overflow later)."""
        assert _Config(f=10**300).f == 10**300
        with pytest.raises(ConfigurationError, match="finite"):
            _Config(f=10**400)
        with pytest.raises(ConfigurationError, match="finite"):
            _Vocabulary(seconds=10**400)

    def test_one_of_does_not_confuse_bool_and_int(self) -> None:
        """one_of compares by type too, so True is not accepted for 1."""
        validator = one_of(1, 2)
        attribute = attrs.fields(_Vocabulary).mode
        validator(None, attribute, 1)
        with pytest.raises(ConfigurationError):
            validator(None, attribute, True)

    def test_reprs_say_the_rule(self) -> None:
        """Each validator's repr says what it accepts, as attrs' validators do."""
        assert repr(gt(0)) == "<validator: number > 0>"
        assert repr(in_range(0, 1)) == "<validator: number in [0, 1]>"
        assert repr(finite) == "<validator: finite>"
        assert repr(positive_seconds) == "<validator: positive finite seconds>"
        assert repr(count(1, 5)) == "<validator: int >= 1, <= 5>"
        assert repr(count(0)) == "<validator: int >= 0>"
        assert repr(non_empty_str) == "<validator: non-empty str>"
        assert repr(is_callable) == "<validator: callable>"
        assert repr(exception_matcher) == "<validator: exception matcher>"
        assert repr(one_of("a")) == "<validator: one of 'a'>"
        assert repr(instance_of(int, str)) == "<validator: instance of int or str>"
        assert repr(optional([gt(0), finite])) == (
            "<validator: None or <validator: number > 0>, <validator: finite>>"
        )

    def test_exception_predicate(self) -> None:
        """Types compile to an isinstance predicate; a predicate is returned as it is."""
        assert exception_predicate((KeyError,))(KeyError()) is True
        assert exception_predicate(KeyError)(ValueError()) is False

        def predicate(exc: Exception) -> bool:
            return True

        assert exception_predicate(predicate) is predicate

    def test_text_problem(self) -> None:
        """text_problem says why a value is not storable text, or None when it is."""
        assert text_problem("fine") is None
        assert text_problem(b"x") == "must be a str"
