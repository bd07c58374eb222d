"""Tests for exponential backoff with full jitter."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.resilience import Backoff, ExponentialBackoff

bases = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


class TestExponentialBackoff:
    def test_defaults(self) -> None:
        """The default backoff starts at 50 ms, caps at 5 s and jitters."""
        backoff = ExponentialBackoff()
        assert (backoff.base, backoff.cap, backoff.jitter) == (0.05, 5.0, True)
        assert isinstance(backoff, Backoff)

    def test_ceilings_double_up_to_the_cap(self) -> None:
        """Ceilings are base * 2**n, never above the cap."""
        backoff = ExponentialBackoff(base=1, cap=10)
        assert [backoff.ceiling(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]

    def test_without_jitter_the_delay_is_the_ceiling(self) -> None:
        """jitter=False makes the delay deterministic."""
        backoff = ExponentialBackoff(base=0.5, cap=3, jitter=False)
        assert [backoff.delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 3.0]

    def test_full_jitter_scales_the_random_draw(self) -> None:
        """The delay is random() times the ceiling."""
        backoff = ExponentialBackoff(base=1, cap=100, random=lambda: 0.25)
        assert backoff.delay(3) == 2.0

    def test_huge_retry_numbers_do_not_overflow(self) -> None:
        """A retry number far past the float range still yields the cap."""
        backoff = ExponentialBackoff(base=1, cap=7, jitter=False)
        assert backoff.delay(10**6) == 7
        assert backoff.ceiling(-3) == 1

    def test_out_of_range_random_sources_are_clamped(self) -> None:
        """A faulty random source cannot push a delay outside [0, ceiling]."""
        assert ExponentialBackoff(base=1, random=lambda: 2.0).delay(0) == 1
        assert ExponentialBackoff(base=1, random=lambda: -1.0).delay(0) == 0

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"base": 0}, "base"),
            ({"base": math.nan}, "base"),
            ({"base": math.inf, "cap": math.inf}, "base"),
            ({"cap": -1}, "cap"),
            ({"base": 2, "cap": 1}, "cap"),
            ({"jitter": 1}, "jitter"),
            ({"random": 0.5}, "random"),
        ],
    )
    def test_rejects_bad_config(self, kwargs: dict[str, object], field: str) -> None:
        """A bad value raises ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError) as info:
            ExponentialBackoff(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field

    @given(base=bases, factor=st.floats(1, 1e4), retry=st.integers(0, 5000), draw=unit)
    def test_delay_within_bounds(self, base: float, factor: float, retry: int, draw: float) -> None:
        """Every delay lies in [0, min(cap, base * 2**n)] and the cap is respected."""
        cap = base * factor
        backoff = ExponentialBackoff(base=base, cap=cap, random=lambda: draw)
        delay = backoff.delay(retry)
        assert 0.0 <= delay <= backoff.ceiling(retry) <= cap
        if retry < 60:
            assert backoff.ceiling(retry) == min(cap, base * 2**retry)

    @given(base=bases, retry=st.integers(0, 40))
    def test_default_random_stays_in_bounds(self, base: float, retry: int) -> None:
        """The default random source also stays within the ceiling."""
        backoff = ExponentialBackoff(base=base, cap=base * 100)
        assert 0.0 <= backoff.delay(retry) <= backoff.ceiling(retry)

    @given(base=bases, retry=st.integers(0, 100))
    def test_ceilings_never_decrease(self, base: float, retry: int) -> None:
        """The ceiling grows monotonically with the retry number."""
        backoff = ExponentialBackoff(base=base, cap=base * 1000)
        assert backoff.ceiling(retry) <= backoff.ceiling(retry + 1)


class TestRandomSource:
    @pytest.mark.parametrize("bad", [math.nan, "0.5", True, None])
    def test_misbehaving_source_is_named(self, bad: object) -> None:
        """A random source returning NaN or a non-number is refused when drawn, naming it."""
        backoff = ExponentialBackoff(random=lambda: bad)  # type: ignore[arg-type,return-value]
        with pytest.raises(ConfigurationError) as info:
            backoff.delay(0)
        assert info.value.field == "random"
