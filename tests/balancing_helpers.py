"""Helpers the balancing strategy tests share: endpoints, a scripted rng, the P2C draw."""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING

from meshkit.balancing import Endpoint

if TYPE_CHECKING:
    from collections.abc import Sequence


def endpoints(*weights: int, host: str = "10.0.0.1") -> list[Endpoint]:
    """Return one endpoint per weight, on consecutive ports."""
    return [Endpoint(host=host, port=8000 + i, weight=w) for i, w in enumerate(weights)]


class Scripted(random.Random):
    """A Random whose `random()` returns the scripted values, in a loop."""

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(0)
        self._values = itertools.cycle(values)

    def random(self) -> float:
        return next(self._values)


def candidates(rng: random.Random, n: int) -> tuple[int, int]:
    """Replay the documented two-candidate draw of LeastRequest and PeakEwma."""
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    return i, j + 1 if j >= i else j
