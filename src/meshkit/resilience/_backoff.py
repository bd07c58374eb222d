"""How long to wait before a retry: exponential backoff with full jitter."""

from __future__ import annotations

import random as _random
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import attrs

from meshkit._validate import instance_of, is_callable, positive_seconds, require
from meshkit.resilience._common import draw_unit

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Backoff", "ExponentialBackoff"]

# 2.0 ** 1024 overflows a float; past this exponent every ceiling is the cap anyway.
_MAX_EXPONENT = 1000


@runtime_checkable
class Backoff(Protocol):
    """Anything that says how long to wait before the `retry`-th retry (0-based)."""

    def delay(self, retry: int) -> float:
        """Return the seconds to wait before retry number `retry` (0 for the first retry)."""
        ...


@final
@attrs.frozen(kw_only=True)
class ExponentialBackoff:
    """Exponential backoff with "full jitter", as AWS recommends.

    The `n`-th retry (0-based) waits `random() * min(cap, base * 2**n)`: a uniform draw between
    0 and an exponentially growing, capped ceiling. Full jitter spreads the retries of many
    clients that failed together, which is the point of backing off. With `jitter=False` the
    wait is the ceiling itself (deterministic, handy in examples).

    Example:
        ```python
        from meshkit.resilience import ExponentialBackoff

        backoff = ExponentialBackoff(base=0.1, cap=1.0, random=lambda: 0.5)
        assert [backoff.ceiling(n) for n in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
        assert backoff.delay(3) == 0.4
        ```

    Attributes:
        base: The ceiling of the first retry's wait, in seconds (> 0, finite).
        cap: The largest ceiling, in seconds (>= base, finite).
        jitter: Draw uniformly below the ceiling (`True`) or wait the ceiling (`False`).
        random: A source of floats in `[0, 1)`; inject a fixed one in tests.
    """

    base: float = attrs.field(default=0.05, validator=positive_seconds)
    cap: float = attrs.field(default=5.0, validator=positive_seconds)
    jitter: bool = attrs.field(default=True, validator=instance_of(bool))
    random: Callable[[], float] = attrs.field(
        default=_random.random, eq=False, validator=is_callable
    )

    def __attrs_post_init__(self) -> None:
        require(self.cap >= self.base, "cap", self.cap, f"must be >= base ({self.base})")

    def ceiling(self, retry: int) -> float:
        """Return `min(cap, base * 2**retry)`, the largest wait before retry number `retry`."""
        return min(self.cap, self.base * 2.0 ** min(max(retry, 0), _MAX_EXPONENT))

    def delay(self, retry: int) -> float:
        """Return the wait before retry number `retry` (0-based), in `[0, ceiling(retry)]`.

        Raises:
            ConfigurationError: If `random` returned something other than a number in
                `[0, 1)` (checked at each draw, since it is a callable).
        """
        ceiling = self.ceiling(retry)
        if not self.jitter:
            return ceiling
        return draw_unit(self.random) * ceiling
