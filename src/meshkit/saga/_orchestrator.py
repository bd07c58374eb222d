"""The saga orchestrator: the thin async shell that executes the state machine's commands.

Every command is claimed by a durable append before it runs, and every append carries the
saga stream's expected version: of two orchestrators driving one saga, the one whose append
conflicts stops at once (it never runs another command). Records are appended in batches
(a step's outcome with the next step's claim), so a three-step saga costs four appends.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Self, final

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import (
    EventStoreUnavailableError,
    SagaAlreadyExistsError,
    SagaNotFoundError,
    SagaOwnershipLostError,
    SagaStateError,
    VersionConflictError,
)
from meshkit._validate import finite, ge, gt, instance_of, optional, require
from meshkit.eventsourcing import Event, EventStore
from meshkit.resilience import Backoff, ExponentialBackoff
from meshkit.saga._catalog import Catalog, clock_time_of
from meshkit.saga._core import (
    Command,
    Compensate,
    Finish,
    Record,
    RecordType,
    RunStep,
    SagaMachine,
    SagaState,
)
from meshkit.saga._definition import Saga, check_name
from meshkit.saga._json import describe, json_mapping
from meshkit.saga._options import Listener, listeners_of, sagas_by_name, status_of
from meshkit.saga._runner import StepRunner
from meshkit.saga._status import SagaStatistics, SagaStatus, SagaTransition

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

__all__ = ["SagaOrchestrator"]

_LOG = logging.getLogger("meshkit.saga")
_ACTIVE = (SagaState.RUNNING, SagaState.COMPENSATING)
_PAGE = 1000


@attrs.define(eq=False)
class _Drive:
    """A saga this orchestrator is driving; `done` is set when it stops."""

    done: anyio.Event = attrs.field(factory=anyio.Event)
    lost: bool = False
    version: int = 0
    history: list[Event] = attrs.field(factory=list)
    status: SagaStatus | None = None


class _LostError(Exception):
    """Internal: an append conflicted, another orchestrator drives the saga."""


@final
@attrs.define(eq=False, kw_only=True)
class SagaOrchestrator:
    """Run sagas durably on an `EventStore`, recovering unfinished ones when started.

    Use it as an async context manager: entering reads the store's global log to learn the
    sagas it holds and (with `recover=True`) drives every running or compensating saga to
    its end; leaving cancels the sagas still being driven (a compensation call under way
    finishes first, shielded) and they are recovered by the next orchestrator.

    Attributes:
        store: The event store holding one stream per saga.
        sagas: The saga definitions this orchestrator can run and recover.
        clock: The clock for timeouts, backoffs, stuck detection and ages.
        listeners: Plain (not async) callables, called with a `SagaTransition` for every
            record appended here; one that raises is logged on the `meshkit.saga` logger and
            otherwise ignored.
        stream_prefix: Prefix of the saga streams' ids (`<prefix><saga_id>`).
        recover: Whether entering drives the unfinished sagas found in the store.
        recover_after: Seconds this orchestrator must have seen a saga's log stand still
            (on its own clock, between its scans of the global log) before it takes the saga
            over. 0 (the default): every unfinished saga found on entering, right for one
            orchestrator restarting. With several orchestrators on one store, set it above
            the longest step: a saga whose driver is alive but inside a longer step would be
            taken over (that driver then stops at its next append, and the step runs once
            more: at least once, as promised).
        recovery_interval: Seconds between scans of the global log while running (default:
            `recover_after`, and no scan after entering when that is 0).
        max_recovering: How many recovered sagas are driven at once.
        store_backoff: The waits between appends retried after the store failed.
        owner: This orchestrator's name in the records it claims sagas with.
    """

    store: EventStore = attrs.field(validator=instance_of(EventStore))
    sagas: Mapping[str, Saga] = attrs.field(converter=sagas_by_name)
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    listeners: tuple[Listener, ...] = attrs.field(default=(), converter=listeners_of)
    stream_prefix: str = attrs.field(default="saga-", validator=instance_of(str))
    recover: bool = attrs.field(default=True, validator=instance_of(bool))
    recover_after: float = attrs.field(default=0.0, validator=[ge(0), finite])
    recovery_interval: float | None = attrs.field(
        default=None, validator=[optional(gt(0)), optional(finite)]
    )
    max_recovering: int = attrs.field(default=64, validator=[instance_of(int), ge(1)])
    store_backoff: Backoff = attrs.field(
        factory=lambda: ExponentialBackoff(base=0.05, cap=5.0), validator=instance_of(Backoff)
    )
    owner: str = attrs.field(factory=lambda: uuid.uuid4().hex, validator=instance_of(str))
    _catalog: Catalog = attrs.field(init=False, factory=Catalog)
    _drives: dict[str, _Drive] = attrs.field(init=False, factory=dict)
    _lost: dict[str, int] = attrs.field(init=False, factory=dict)
    _runner: StepRunner = attrs.field(init=False)
    _tasks: anyio.abc.TaskGroup | None = attrs.field(init=False, default=None)
    _limiter: anyio.CapacityLimiter | None = attrs.field(init=False, default=None)

    @_runner.default
    def _make_runner(self) -> StepRunner:
        return StepRunner(self.clock)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        self._limiter = anyio.CapacityLimiter(self.max_recovering)
        try:
            await self.refresh()
            if self.recover:
                self._recover_idle(tasks)
                interval = self.recovery_interval or self.recover_after
                if interval > 0:
                    tasks.start_soon(self._keep_recovering, interval)
        except BaseException:
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)  # only cancelled tasks to collect
            self._tasks = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tasks, self._tasks = self._tasks, None
        if tasks is None:
            return None
        tasks.cancel_scope.cancel()
        return await tasks.__aexit__(exc_type, exc, tb)

    def _recover_idle(self, tasks: anyio.abc.TaskGroup) -> None:
        for saga_id, version in self._catalog.idle(self.clock.now(), self.recover_after):
            if saga_id in self._drives:
                continue
            # Registered now, so that `wait()` right after entering waits for it.
            drive = self._drives[saga_id] = _Drive()
            tasks.start_soon(self._recover, saga_id, version, drive)

    async def _keep_recovering(self, interval: float) -> None:
        while True:
            await self.clock.sleep(interval)
            try:
                await self.refresh()
            except EventStoreUnavailableError as exc:
                _LOG.warning("saga recovery scan failed: %s", describe(exc))
                continue
            self._recover_idle(self._group())

    def _group(self) -> anyio.abc.TaskGroup:
        if self._tasks is None:
            raise SagaStateError("-", "not entered", "drive sagas with an orchestrator")
        return self._tasks

    # ------------------------------------------------------------------ public API

    async def start(
        self, saga: Saga, data: Mapping[str, Any], *, saga_id: str | None = None
    ) -> str:
        """Record a new saga durably and drive it in the background; return its id.

        Raises:
            ConfigurationError: If `saga` is not registered here, `saga_id` is not a valid
                name, or `data` is not a JSON-serializable mapping.
            SagaAlreadyExistsError: If a saga with `saga_id` was already started.
            SagaStateError: If the orchestrator is not entered.
            EventStoreUnavailableError: If the store failed (nothing is started then).
        """
        tasks = self._group()
        known = self.sagas.get(getattr(saga, "name", ""))
        require(known is saga, "saga", saga, "must be a Saga registered with this orchestrator")
        saga_id = uuid.uuid4().hex if saga_id is None else check_name("saga_id", saga_id)
        payload = json_mapping(data, "data")
        machine = SagaMachine(saga_id, saga.plan)
        started = Record(RecordType.STARTED, {"saga": saga.name, "data": payload})
        if saga_id in self._drives:
            raise SagaAlreadyExistsError(saga_id)
        conflict = SagaAlreadyExistsError(saga_id)
        await self._launch(tasks, saga, machine, started, drive=_Drive(), conflict=conflict)
        return saga_id

    async def run(
        self, saga: Saga, data: Mapping[str, Any], *, saga_id: str | None = None
    ) -> SagaStatus:
        """Start a saga and wait until it completes, is compensated or gets stuck.

        Raises:
            ConfigurationError: As `start`.
            SagaAlreadyExistsError: As `start`.
            SagaOwnershipLostError: If another orchestrator took the saga over meanwhile.
            SagaStateError: If the orchestrator is not entered.
            EventStoreUnavailableError: If the store failed.
        """
        return await self.wait(await self.start(saga, data, saga_id=saga_id))

    async def wait(self, saga_id: str) -> SagaStatus:
        """Wait until this orchestrator stops driving `saga_id`; return its status.

        A saga this orchestrator is not driving is not waited for: its current status is
        read from the store and returned at once.

        Raises:
            SagaNotFoundError: If the store has no such saga.
            SagaOwnershipLostError: If another orchestrator took it over.
            SagaStateError: If its definition is not registered here.
            EventStoreUnavailableError: If the store failed.
        """
        drive = self._drives.get(saga_id)
        if drive is not None:
            await drive.done.wait()
        if saga_id in self._lost:
            raise SagaOwnershipLostError(saga_id, self._lost[saga_id])
        if drive is not None and drive.status is not None:
            return drive.status  # what was just appended, without reading it back
        return await self.status(saga_id)

    async def status(self, saga_id: str) -> SagaStatus:
        """Return the saga's status and history, read from the store.

        Raises:
            SagaNotFoundError: If the store has no such saga.
            SagaStateError: If its definition is not registered here.
            EventStoreUnavailableError: If the store failed.
        """
        saga, machine, events = await self._load(saga_id)
        return status_of(saga, machine, events)

    async def resume(self, saga_id: str) -> None:
        """Drive a `STUCK` saga again (an operator's call, once the cause is fixed).

        Raises:
            SagaNotFoundError: If the store has no such saga.
            SagaStateError: If it is not stuck, its definition is not registered here, or the
                orchestrator is not entered.
            SagaOwnershipLostError: If another orchestrator resumed it first.
            EventStoreUnavailableError: If the store failed.
        """
        tasks = self._group()
        saga, machine, events = await self._load(saga_id)
        if machine.state is not SagaState.STUCK or saga_id in self._drives:
            raise SagaStateError(saga_id, machine.state.value, "resume")
        state = SagaState.COMPENSATING if machine.compensating else SagaState.RUNNING
        resumed = Record(RecordType.RESUMED, {"state": state.value, "owner": self.owner})
        drive, conflict = _Drive(history=events), SagaOwnershipLostError(saga_id, machine.version)
        await self._launch(tasks, saga, machine, resumed, drive=drive, conflict=conflict)

    async def _launch(
        self,
        tasks: anyio.abc.TaskGroup,
        saga: Saga,
        machine: SagaMachine,
        first: Record,
        *,
        drive: _Drive,
        conflict: Exception,
    ) -> None:
        """Append `first` with the first claims, then drive the saga in the background.

        `drive` is registered before the append, so that no second launch of the saga can
        start meanwhile; it is removed if the append fails, and `conflict` is raised if it
        conflicted.
        """
        saga_id = machine.saga_id
        self._drives[saga_id] = drive
        try:
            commands = await self._commit(saga, machine, [first], retry=False)
        except _LostError:
            del self._drives[saga_id]
            raise conflict from None
        except BaseException:
            del self._drives[saga_id]
            raise
        self._lost.pop(saga_id, None)
        tasks.start_soon(self._drive, saga, machine, commands, drive)

    async def refresh(self) -> None:
        """Read the global log on from where this orchestrator stopped.

        It learns of the sagas that other processes started or moved on (`saga_ids` and
        `statistics` show them).

        Raises:
            EventStoreUnavailableError: If the store failed.
        """
        prefix, skip = self.stream_prefix, len(self.stream_prefix)
        while True:
            events = await self.store.read_all(self._catalog.position, limit=_PAGE)
            for event in events:
                if event.stream_id.startswith(prefix):
                    now = self.clock.now()
                    started = clock_time_of(event.timestamp, now)
                    saga_id = event.stream_id[skip:]
                    self._catalog.note(
                        saga_id, event.version, event.type, event.data, now, started=started
                    )
                self._catalog.position = max(self._catalog.position, event.position or 0)
            if len(events) < _PAGE:
                return

    def saga_ids(self, state: SagaState | None = None) -> list[str]:
        """Return the ids of the known sagas in `state` (every known saga for `None`)."""
        return self._catalog.ids(state)

    def statistics(self) -> SagaStatistics:
        """Return the known sagas by state and the age of the oldest unfinished one."""
        return self._catalog.statistics(self.clock.now(), len(self._drives))

    # ------------------------------------------------------------------ driving

    async def _recover(self, saga_id: str, seen: int, drive: _Drive) -> None:
        assert self._limiter is not None  # noqa: S101 - set on entering, before any recovery
        async with self._limiter:
            try:
                saga, machine, drive.history = await self._load(saga_id)
            except Exception:  # noqa: BLE001 - logged; one bad saga must not stop the rest
                _LOG.exception("saga %r cannot be recovered", saga_id)
                self._stop(saga_id, drive)
                return
            if machine.version != seen or machine.state not in _ACTIVE:
                # Its log moved since the scan: another orchestrator is alive and driving it
                # (or it finished, or was parked). Only sagas whose log stands still are taken.
                self._stop(saga_id, drive)
                return
            claimed = Record(RecordType.CLAIMED, {"owner": self.owner})
            await self._drive(saga, machine, None, drive, [claimed])

    async def _drive(
        self,
        saga: Saga,
        machine: SagaMachine,
        commands: Sequence[Command] | None,
        drive: _Drive,
        claim: Sequence[Record] = (),
    ) -> None:
        try:
            if commands is None:  # recovering: claim the saga first
                commands = await self._commit(saga, machine, list(claim))
                self._lost.pop(machine.saga_id, None)  # an earlier loss is over: it is ours
            await self._loop(saga, machine, commands)
            drive.status = status_of(saga, machine, drive.history)
        except _LostError:
            drive.lost, drive.version = True, machine.version
            _LOG.info("saga %r: another orchestrator drives it now; stopped", machine.saga_id)
        except Exception:  # noqa: BLE001 - logged; a saga's bug must not end the others
            # The saga stays unfinished in the store; the next recovery drives it on.
            _LOG.exception("saga %r: driving failed; left for recovery", machine.saga_id)
        finally:
            self._stop(machine.saga_id, drive)

    def _stop(self, saga_id: str, drive: _Drive) -> None:
        if self._drives.get(saga_id) is drive:
            del self._drives[saga_id]
        if drive.lost:  # remembered, so that a later `wait()` still learns it
            self._lost[saga_id] = drive.version
        drive.done.set()

    async def _loop(self, saga: Saga, machine: SagaMachine, commands: Sequence[Command]) -> None:
        failing: dict[str, tuple[float, int]] = {}
        while commands and not isinstance(commands[0], Finish):
            if isinstance(commands[0], Compensate):
                step = saga.by_name[commands[0].step]
                outcomes = [await self._runner.compensate(saga.name, step, machine, commands[0])]
            else:
                runs = [c for c in commands if isinstance(c, RunStep)]
                outcomes = await self._runner.run_group(saga.name, saga.by_name, machine, runs)
            delay = self._judge(saga, machine, outcomes, failing)
            if delay > 0:
                await self._commit_only(saga, machine, outcomes)
                outcomes = []
                await self.clock.sleep(delay)
            commands = await self._commit(saga, machine, outcomes)

    def _judge(
        self,
        saga: Saga,
        machine: SagaMachine,
        outcomes: list[Record],
        failing: dict[str, tuple[float, int]],
    ) -> float:
        """Track persistent failures and return the backoff before the next call.

        Adds a `SagaStuck` record to `outcomes` once a failure has lasted `stuck_after` (and
        returns 0, as it does when nothing failed).
        """
        now, delay = self.clock.now(), 0.0
        for record in list(outcomes):
            step = record.step or ""
            if record.type in {RecordType.STEP_SUCCEEDED, RecordType.COMPENSATION_SUCCEEDED}:
                failing.pop(step, None)
                continue
            if not machine.is_persistent(step):
                continue
            since, failures = failing.get(step, (now, 0))
            failing[step] = (since, failures + 1)
            if now - since >= saga.stuck_after:
                error = record.data.get("error", "")
                outcomes.append(Record(RecordType.STUCK, {"step": step, "error": error}))
                return 0.0
            delay = max(delay, saga.by_name[step].backoff.delay(failures))
        return delay

    async def _commit_only(self, saga: Saga, machine: SagaMachine, records: list[Record]) -> None:
        expected = machine.version
        for record in records:
            machine.apply(record)
        await self._append(saga, machine, expected, records, retry=True)

    async def _commit(
        self, saga: Saga, machine: SagaMachine, records: list[Record], *, retry: bool = True
    ) -> tuple[Command, ...]:
        """Apply `records`, plan, claim the next commands, and append it all at once."""
        expected = machine.version
        for record in records:
            machine.apply(record)
        commands = machine.next_commands()
        claims = [machine.claim(command) for command in commands]
        for record in claims:
            machine.apply(record)
        batch = [*records, *claims]
        if batch:
            await self._append(saga, machine, expected, batch, retry=retry)
        return commands

    async def _append(
        self, saga: Saga, machine: SagaMachine, expected: int, records: list[Record], *, retry: bool
    ) -> None:
        stream = self.stream_prefix + machine.saga_id
        events = [
            Event(stream_id=stream, version=expected + n, type=r.type.value, data=r.data)
            for n, r in enumerate(records, start=1)
        ]
        failures = 0
        while True:
            # Shielded, so that an orchestrator leaving still records the outcome of the call
            # it just made (a compensation left unrecorded would be run again on recovery).
            # The backoff below stays cancellable: one store call is all the shield covers.
            try:
                with anyio.CancelScope(shield=True):
                    await self.store.append(stream, events, expected)
                break
            except VersionConflictError:
                raise _LostError from None
            except EventStoreUnavailableError as exc:
                if not retry:
                    raise
                _LOG.warning("saga %r: append failed, retrying: %s", machine.saga_id, describe(exc))
                await self.clock.sleep(self.store_backoff.delay(failures))
                failures += 1
        drive = self._drives.get(machine.saga_id)
        if drive is not None:
            drive.history.extend(events)
        self._publish(saga, machine, expected, records)

    def _publish(
        self, saga: Saga, machine: SagaMachine, expected: int, records: list[Record]
    ) -> None:
        now, saga_id = self.clock.now(), machine.saga_id
        for n, record in enumerate(records, start=1):
            self._catalog.note(saga_id, expected + n, record.type.value, record.data, now)
            if self.listeners:
                self._tell(saga, saga_id, expected + n, record)

    def _tell(self, saga: Saga, saga_id: str, version: int, record: Record) -> None:
        state = self._catalog.state_of(saga_id) or SagaState.RUNNING
        transition = SagaTransition(
            saga_id=saga_id,
            saga=saga.name,
            type=record.type.value,
            step=record.step,
            state=state,
            version=version,
        )
        for listener in self.listeners:
            try:
                listener(transition)
            except Exception:  # noqa: BLE001 - observing a saga must not change its course
                _LOG.exception("saga listener %r failed", listener)

    async def _load(self, saga_id: str) -> tuple[Saga, SagaMachine, list[Event]]:
        check_name("saga_id", saga_id)
        events = await self.store.read(self.stream_prefix + saga_id)
        if not events:
            raise SagaNotFoundError(saga_id)
        name = str(events[0].data.get("saga", ""))
        saga = self.sagas.get(name)
        if saga is None:
            raise SagaStateError(saga_id, f"of unknown type {name!r}", "load")
        machine = SagaMachine(saga_id, saga.plan)
        for event in events:
            try:
                kind = RecordType(event.type)
            except ValueError:
                raise SagaStateError(saga_id, f"logged {event.type!r}", "load") from None
            machine.apply(Record(kind, event.data))
        return saga, machine, events
