"""A saga's shape without its callables: what the pure state machine needs to decide."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, final

import attrs

from meshkit._validate import require

if TYPE_CHECKING:
    from collections.abc import Mapping
    from collections.abc import Set as AbstractSet

__all__ = ["SagaPlan", "StepKind"]


class StepKind(enum.Enum):
    """The three kinds of saga step (Richardson, *Microservices Patterns*, ch. 4)."""

    COMPENSATABLE = "compensatable"
    """May be undone: runs before the pivot, and has a compensation."""
    PIVOT = "pivot"
    """The go/no-go step: once it has succeeded, the saga only goes forward."""
    RETRIABLE = "retriable"
    """Runs after the pivot and is retried until it succeeds; never compensated."""


_RANK = {StepKind.COMPENSATABLE: 0, StepKind.PIVOT: 1, StepKind.RETRIABLE: 2}


@final
@attrs.frozen(kw_only=True)
class SagaPlan:
    """The order, kinds and compensations of a saga's steps, already validated.

    Attributes:
        groups: The steps in order; a group of more than one name runs in parallel.
        kinds: Each step's kind.
        compensated: The steps that have a compensation.
        order: Every step name, flattened in definition order.
    """

    groups: tuple[tuple[str, ...], ...]
    kinds: Mapping[str, StepKind]
    compensated: AbstractSet[str]
    order: tuple[str, ...]

    @classmethod
    def build(
        cls,
        *,
        groups: tuple[tuple[str, ...], ...],
        kinds: Mapping[str, StepKind],
        compensated: AbstractSet[str],
    ) -> SagaPlan:
        """Return the plan, after checking the rules of the saga model.

        Raises:
            ConfigurationError: If a step name repeats, there is more than one pivot, or the
                kinds are out of order (compensatable, pivot, retriable); it names the step.
        """
        order = tuple(name for group in groups for name in group)
        seen: set[str] = set()
        rank = 0
        for name in order:
            field = f"steps[{name}]"
            require(name not in seen, field, name, "duplicate step name")
            seen.add(name)
            kind = kinds[name]
            if kind is StepKind.PIVOT:
                require(rank < 1, field, kind.value, "a saga has at most one pivot")
            reason = f"a {kind.value} step cannot come after a {_name_of(rank)} step"
            require(_RANK[kind] >= rank, field, kind.value, reason)
            rank = _RANK[kind]
        return cls(
            groups=groups, kinds=dict(kinds), compensated=frozenset(compensated), order=order
        )


def _name_of(rank: int) -> str:
    return next(kind.value for kind, value in _RANK.items() if value == rank)
