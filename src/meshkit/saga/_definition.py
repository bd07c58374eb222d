"""Saga definitions: typed steps (compensatable, pivot, retriable), parallel groups, validation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast, final

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import finite, gt, instance_of, optional, require
from meshkit.resilience import Backoff, ExponentialBackoff, Retry
from meshkit.saga._plan import SagaPlan, StepKind

__all__ = ["Action", "Compensation", "Parallel", "Saga", "Step", "StepContext"]

_MAX_NAME = 200


@final
@attrs.frozen(kw_only=True)
class StepContext:
    """What an action or a compensation is told about the call it serves.

    Attributes:
        saga_id: The saga's id.
        step: The step's name.
        idempotency_key: `"<saga_id>:<step>"`: the same for every attempt of the action and
            of its compensation, in every process, so a participant can deduplicate.
        attempt: The 1-based number of this call of the action (or of the compensation) for
            this step, counting the calls the log knows of (crashed runs included).
        compensating: `True` when the call is the compensation.
    """

    saga_id: str
    step: str
    idempotency_key: str
    attempt: int
    compensating: bool = False


def idempotency_key(saga_id: str, step: str) -> str:
    """Return the idempotency key of `step` in saga `saga_id` (see `StepContext`)."""
    return f"{saga_id}:{step}"


Action = Callable[[Mapping[str, Any], StepContext], Awaitable[Mapping[str, Any] | None]]
"""An action: `await action(data, context)` returns updates merged into the saga's data."""

Compensation = Callable[[Mapping[str, Any], StepContext], Awaitable[object]]
"""A compensation: `await compensation(data, context)`; what it returns is ignored."""


def check_name(field: str, value: object) -> str:
    """Return `value` if it is a usable name (saga, step or saga id).

    Raises:
        ConfigurationError: If it is not a non-empty str of at most 200 characters, holds a NUL
            character, or cannot be encoded as UTF-8 (a lone surrogate).
    """
    if not isinstance(value, str):
        raise ConfigurationError(field, value, "must be a str")
    text = value
    require(0 < len(text) <= _MAX_NAME, field, value, f"must have 1 to {_MAX_NAME} characters")
    require("\0" not in text, field, value, "must not contain a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ConfigurationError(
            field, value, "must be valid Unicode (no lone surrogate)"
        ) from None
    return text


def _name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_name(attribute.name, value)


def _callable(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    require(callable(value), attribute.name, value, "must be an async callable")


def _optional_callable(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _callable(inst, attribute, value)


@final
@attrs.frozen(kw_only=True)
class Step:
    """One step of a saga: an action and, where it has one, its compensation.

    Attributes:
        name: Unique within the saga; part of the idempotency key.
        action: `await action(data, context)`; returns a mapping merged into the saga's data
            (or `None`). It is called at least once; give it the idempotency key's effect.
        compensation: Undoes the action's effect (required for compensatable steps, optional
            for the pivot, refused for retriable ones). Called for every step that was
            *started*, even one whose action failed or was cancelled (its effect may have
            happened), so it must be a no-op when the action had no effect.
        kind: `COMPENSATABLE` (before the pivot), `PIVOT` (the go/no-go step) or `RETRIABLE`
            (after it; retried until it succeeds).
        timeout: Seconds each call of the action or compensation may take (`None`: no limit).
        retry: How the action is retried before the step counts as failed (default: one
            attempt). A retriable step that fails is started again after `backoff`.
        backoff: The waits between calls of a compensation (and between the rounds of a
            retriable step), which go on until they succeed or the saga is stuck.
    """

    name: str = attrs.field(validator=_name)
    action: Action = attrs.field(validator=_callable)
    compensation: Compensation | None = attrs.field(default=None, validator=_optional_callable)
    kind: StepKind = attrs.field(default=StepKind.COMPENSATABLE, validator=instance_of(StepKind))
    timeout: float | None = attrs.field(default=None, validator=[optional(gt(0)), optional(finite)])
    retry: Retry = attrs.field(factory=lambda: Retry(max_attempts=1), validator=instance_of(Retry))
    backoff: Backoff = attrs.field(
        factory=lambda: ExponentialBackoff(base=0.1, cap=30.0), validator=instance_of(Backoff)
    )

    def __attrs_post_init__(self) -> None:
        field = f"steps[{self.name}].compensation"
        if self.kind is StepKind.COMPENSATABLE:
            require(self.compensation is not None, field, None, "a compensatable step needs one")
        if self.kind is StepKind.RETRIABLE:
            ok = self.compensation is None
            require(ok, field, self.compensation, "a retriable step is never compensated")


def _steps_of_group(value: object) -> tuple[Step, ...]:
    items = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else ()
    require(len(items) >= 1, "Parallel.steps", value, "must be a non-empty sequence of Step")
    for item in items:
        require(isinstance(item, Step), "Parallel.steps", item, "must hold Step values")
    return items


@final
@attrs.frozen
class Parallel:
    """Steps that run at the same time, in one task group.

    When one fails, the siblings still running are cancelled and every started sibling is
    compensated, in reverse order of listing. All steps of a group are of one kind, and a
    group never holds the pivot.

    Attributes:
        steps: The steps of the group (at least one).
    """

    steps: tuple[Step, ...] = attrs.field(converter=_steps_of_group)

    def __attrs_post_init__(self) -> None:
        kinds = {step.kind for step in self.steps}
        names = [step.name for step in self.steps]
        field = f"steps[{names[0]}]"
        require(StepKind.PIVOT not in kinds, field, names, "a parallel group cannot hold the pivot")
        require(len(kinds) == 1, field, names, "a parallel group's steps must be of one kind")


def _saga_steps(value: object) -> tuple[Step | Parallel, ...]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
    require(ok, "steps", value, "must be a non-empty sequence of Step or Parallel")
    items: list[Step | Parallel] = []
    for item in cast("Sequence[object]", value):
        if not isinstance(item, Step | Parallel):
            raise ConfigurationError("steps", item, "must hold Step or Parallel")
        items.append(item)
    return tuple(items)


@final
@attrs.frozen(kw_only=True)
class Saga:
    """A saga definition: its name and its steps, checked when built.

    The steps run in order: compensatable steps, at most one pivot, then retriable steps
    (Richardson's model). Before the pivot has succeeded, a failed step turns the saga
    around and every started step is compensated in reverse order; once it has succeeded,
    the saga only goes forward.

    Attributes:
        name: The saga type's name, recorded in its log (a recovering orchestrator finds the
            definition by it).
        steps: `Step`s and `Parallel` groups, in order.
        stuck_after: Seconds that a compensation (or a retriable step) may keep failing before
            the saga is marked `STUCK`, parked until an operator resumes it (inf: never).

    Raises:
        ConfigurationError: If a name is repeated, there are two pivots, a compensatable step
            comes after the pivot or a retriable step, or a step lacks (or has a forbidden)
            compensation; the error names the step.
    """

    name: str = attrs.field(validator=_name)
    steps: tuple[Step | Parallel, ...] = attrs.field(converter=_saga_steps)
    stuck_after: float = attrs.field(default=300.0, validator=gt(0))
    plan: SagaPlan = attrs.field(init=False, eq=False, repr=False)
    by_name: Mapping[str, Step] = attrs.field(init=False, eq=False, repr=False)

    @plan.default
    def _make_plan(self) -> SagaPlan:
        groups = tuple(
            tuple(s.name for s in item.steps) if isinstance(item, Parallel) else (item.name,)
            for item in self.steps
        )
        flat = [s for item in self.steps for s in _members(item)]
        return SagaPlan.build(
            groups=groups,
            kinds={s.name: s.kind for s in flat},
            compensated={s.name for s in flat if s.compensation is not None},
        )

    @by_name.default
    def _make_by_name(self) -> Mapping[str, Step]:
        return {s.name: s for item in self.steps for s in _members(item)}


def _members(item: Step | Parallel) -> tuple[Step, ...]:
    return item.steps if isinstance(item, Parallel) else (item,)
