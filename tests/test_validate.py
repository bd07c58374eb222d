"""Tests for the shared config validators."""

from __future__ import annotations

import re

import attrs
import pytest

from meshkit import ConfigurationError
from meshkit._validate import finite, ge, gt, in_range, instance_of, le, lt, optional, require


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
