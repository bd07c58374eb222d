"""Slow start: ramp up the effective weight of a newly added endpoint (Envoy slow_start_config)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from meshkit._validate import finite, gt, in_range, positive_seconds
from meshkit.balancing._snapshot import FITS_FLOAT, address

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from meshkit.balancing._endpoint import Endpoint
    from meshkit.balancing._snapshot import Address

__all__ = ["SlowStart", "ramped", "start_times", "warm_until"]

WARM = -math.inf
"""The start time of an endpoint that is not ramping (present from the beginning)."""


@attrs.frozen(kw_only=True)
class SlowStart:
    """How a newly added endpoint's share of traffic ramps up, as Envoy's `slow_start_config`.

    An endpoint added by `update()` (not one present when the balancer was built) starts with
    a fraction of its weight that grows with the time since it was added:

        factor = max(min_weight_percent / 100, (elapsed / window) ** (1 / aggression))

    until `elapsed >= window`, when it gets its full weight. `aggression = 1` is a linear
    ramp; a larger value ramps faster at first. Supported by `Random` and `LeastRequest`,
    which pick in proportion to the ramped weights while a ramp lasts.

    Attributes:
        window: Length of the ramp in seconds (> 0).
        aggression: Shape of the ramp (> 0; 1 is linear).
        min_weight_percent: Floor of the factor, in percent of the weight (0-100).
    """

    window: float = attrs.field(validator=[positive_seconds, FITS_FLOAT])
    aggression: float = attrs.field(default=1.0, validator=[finite, gt(0), FITS_FLOAT])
    min_weight_percent: float = attrs.field(default=10.0, validator=in_range(0, 100))

    def factor(self, elapsed: float) -> float:
        """Return the fraction (0-1] of its weight an endpoint added `elapsed` seconds ago gets."""
        if elapsed >= self.window:
            return 1.0
        ramp = max(elapsed, 0.0) / self.window
        if self.aggression != 1.0:
            ramp **= 1.0 / self.aggression
        return max(ramp, self.min_weight_percent / 100.0)


def start_times(
    old: Mapping[Address, float], endpoints: tuple[Endpoint, ...], now: float
) -> dict[Address, float]:
    """Return when each endpoint was added: kept addresses keep theirs, new ones start `now`."""
    return {address(e): old.get(address(e), now) for e in endpoints}


def warm_until(slow_start: SlowStart | None, starts: tuple[float, ...], now: float) -> float | None:
    """Return when the last ramping endpoint reaches full weight, or None if none is ramping."""
    if slow_start is None or not starts:
        return None
    until = max(starts) + slow_start.window
    return until if until > now else None


def ramped(
    slow_start: SlowStart, now: float, weights: Sequence[float], starts: Sequence[float]
) -> list[float]:
    """Return each weight times its ramp factor at `now` (the weights if all come out 0).

    Endpoints that all sit at a zero floor together still share by weight, instead of a
    weighted draw over nothing giving every pick to the last one.
    """
    factor = slow_start.factor
    effective = [w * factor(now - t) for w, t in zip(weights, starts, strict=True)]
    return effective if any(effective) else list(weights)
