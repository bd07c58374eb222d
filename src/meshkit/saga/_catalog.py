"""The orchestrator's index of sagas: their states, built from the store's global log.

The `EventStore` protocol cannot list streams by prefix, so the catalog reads the global log
(`read_all`) from where it last stopped and keeps, for every saga stream it saw, the state
that `summarize` derives from the records. It also follows this orchestrator's own appends.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING, Any, final

import attrs

from meshkit.saga._core import SagaState
from meshkit.saga._status import SagaStatistics, summarize

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Catalog", "Entry"]

_UNFINISHED = (SagaState.RUNNING, SagaState.COMPENSATING, SagaState.STUCK)


@attrs.define
class Entry:
    """One saga in the catalog.

    Attributes:
        name: Its definition's name.
        state: Its state as of `version`.
        version: The last record of its stream applied here.
        started: When it started, on the orchestrator's clock (estimated for sagas found in
            the log, from their wall-clock timestamp).
        touched: When this orchestrator learnt of its last record, on the same clock.
    """

    name: str
    state: SagaState
    version: int
    started: float
    touched: float


@final
@attrs.define(eq=False)
class Catalog:
    """Saga states by id, and counts by state.

    Attributes:
        position: The last global-log position read.
    """

    position: int = 0
    _entries: dict[str, Entry] = attrs.field(factory=dict)
    _counts: Counter[SagaState] = attrs.field(factory=Counter)

    def note(
        self,
        saga_id: str,
        version: int,
        record_type: str,
        data: Mapping[str, Any],
        at: float,
        *,
        started: float | None = None,
    ) -> None:
        """Apply record `version` of saga `saga_id`, once: replays and gaps are ignored.

        `at` is when this orchestrator learnt of the record, on its own clock (so idleness
        is judged by what it observed, whatever the writers' wall clocks say); `started`
        estimates when a saga first seen in the log started (default: `at`).
        """
        entry = self._entries.get(saga_id)
        if entry is None:
            if version != 1 or record_type != "SagaStarted":
                return  # a saga whose start this catalog never saw (an older checkpoint)
            entry = Entry(
                name=str(data.get("saga", "")),
                state=SagaState.RUNNING,
                version=0,
                started=at if started is None else started,
                touched=at,
            )
            self._entries[saga_id] = entry
            self._counts[entry.state] += 1
        if version != entry.version + 1:
            return
        self._counts[entry.state] -= 1
        entry.state = summarize(entry.state, record_type, data)
        entry.version = version
        entry.touched = at
        self._counts[entry.state] += 1

    def state_of(self, saga_id: str) -> SagaState | None:
        """Return the saga's state, or `None` if the catalog does not know it."""
        entry = self._entries.get(saga_id)
        return None if entry is None else entry.state

    def ids(self, state: SagaState | None = None) -> list[str]:
        """Return the ids of the sagas in `state` (all of them for `None`), oldest first."""
        return [k for k, e in self._entries.items() if state is None or e.state is state]

    def idle(self, now: float, idle_for: float) -> list[tuple[str, int]]:
        """Return the ids and versions of the running or compensating sagas gone idle.

        Idle means their last record is at least `idle_for` seconds old.
        """
        active = (SagaState.RUNNING, SagaState.COMPENSATING)
        return [
            (k, e.version)
            for k, e in self._entries.items()
            if e.state in active and now - e.touched >= idle_for
        ]

    def statistics(self, now: float, driving: int) -> SagaStatistics:
        """Return the counts by state and the age of the oldest unfinished saga."""
        starts = [e.started for e in self._entries.values() if e.state in _UNFINISHED]
        return SagaStatistics(
            running=self._counts[SagaState.RUNNING],
            compensating=self._counts[SagaState.COMPENSATING],
            completed=self._counts[SagaState.COMPLETED],
            compensated=self._counts[SagaState.COMPENSATED],
            stuck=self._counts[SagaState.STUCK],
            driving=driving,
            oldest_unfinished_age=max(now - min(starts), 0.0) if starts else None,
        )


def clock_time_of(timestamp: dt.datetime, now: float) -> float:
    """Map a wall-clock `timestamp` from the log onto the orchestrator's clock.

    `now` is the clock's current reading; the result estimates the ages of sagas that other
    processes started.
    """
    elapsed = (dt.datetime.now(dt.UTC) - timestamp).total_seconds()
    return now - max(elapsed, 0.0)
