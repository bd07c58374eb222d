"""Subscriptions: catch up on the global log from a checkpoint, then follow it live.

A `Subscription` reads the store's global log in batches after its saved checkpoint, calls
the handler for each event in order, and saves the checkpoint after each handled batch; when
it has caught up it waits on `store.wait_for_new()` and goes on. It is an async context
manager that owns its task group.

Each batch runs inside one *transaction* of the checkpoint store. A plain `CheckpointStore`
gets a trivial transaction that just saves the checkpoint at the end of the batch. A store
that also implements `TransactionalCheckpointStore` (the SQL backends do) opens a real
database transaction: the handler receives it as its second argument, writes its projection
through it, and the checkpoint is saved in the same transaction, so the projection and its
checkpoint can never disagree (exactly-once effects within that database).

When the handler raises, the batch's transaction is rolled back and its events are handled
again one per transaction (with a plain checkpoint store nothing is rolled back, so only the
failing event and those after it are); the failing event is retried with exponential
backoff (through the injected clock) up to `max_attempts` times in all, then parked as a
`DeadLetter` in the dead-letter store, reported to `on_dead_letter`, and skipped.

One runner per name: when the checkpoint store keeps leases (the SQL stores do, see
`_lease.py`), a subscription runs only while it holds its name's lease. Replicas that do not
hold it stand by and take over within about `lease_duration` once the holder dies (at once
when it exits cleanly), and every checkpoint write is fenced with the lease's token in the
same transaction, so a runner that lost its lease cannot commit progress.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Protocol,
    Self,
    TypeVar,
    cast,
    final,
    runtime_checkable,
)

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import ConfigurationError, LeaseLostError
from meshkit._validate import (
    finite,
    ge,
    in_range,
    instance_of,
    is_callable,
    non_empty_str,
    optional,
    require,
)
from meshkit.eventsourcing._deadletter import DeadLetter, DeadLetterStore, MemoryDeadLetterStore
from meshkit.eventsourcing._lease import (
    MAX_LEASE_SECONDS,
    LeaseCore,
    LeaseKeeper,
    LeaseStore,
    LeasingCheckpointStore,
    new_owner,
)
from meshkit.eventsourcing._sql_lease import SQLLeaseStore
from meshkit.eventsourcing._store import CheckpointStore, EventStore

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from anyio.abc import TaskStatus

    from meshkit.eventsourcing._event import Event

__all__ = [
    "Handler",
    "Subscription",
    "Transaction",
    "TransactionalCheckpointStore",
]

_LOG = logging.getLogger("meshkit.eventsourcing")

MAX_NAME_BYTES = 1_000
"""The longest subscription name (UTF-8 bytes) that every backend can key a row by."""


@runtime_checkable
class Transaction(Protocol):
    """One unit of work of a subscription: a batch of handler calls plus its checkpoint."""

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save the checkpoint of subscription `name` as part of this unit of work."""
        ...


_TxT = TypeVar("_TxT")
_TxT_co = TypeVar("_TxT_co", covariant=True)


@runtime_checkable
class TransactionalCheckpointStore(CheckpointStore, Protocol[_TxT_co]):
    """A checkpoint store that can save a checkpoint with a projection's own writes.

    `transaction()` returns an async context manager that begins a transaction and yields
    an object with `save_checkpoint(name, position)` (plus whatever the projection needs to
    write, such as a connection); it commits when the block exits normally and rolls back
    when it raises.
    """

    def transaction(self) -> AbstractAsyncContextManager[_TxT_co]:
        """Begin a unit of work."""
        ...


Handler = Callable[["Event", _TxT], Awaitable[None]]
"""`async def handler(event, tx)`: handle one event inside the transaction `tx`."""


class _HandlerFailedError(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


@final
@attrs.frozen
class _PlainTransaction:
    store: CheckpointStore

    async def save_checkpoint(self, name: str, position: int) -> None:
        await self.store.save_checkpoint(name, position)


def _position(event: Event) -> int:
    if event.position is None:
        raise ConfigurationError("event.position", None, "events read from a store need one")
    return event.position


def _default_leases(subscription: Subscription[Any]) -> LeaseStore | None:
    checkpoints = subscription.checkpoints
    return checkpoints.leases() if isinstance(checkpoints, LeasingCheckpointStore) else None


@final
@attrs.define(eq=False, kw_only=True)
class Subscription(Generic[_TxT]):
    """Deliver every event of the global log to `handler`, in order, from a checkpoint.

    Attributes:
        name: The subscription's name; its checkpoint (and lease) is saved under it.
        store: The event store to read.
        handler: `async def handler(event, tx)`; `tx` is the checkpoint store's transaction
            (see the module docs); raise to have the event retried.
        checkpoints: Where the position is saved (transactional or not).
        dead_letters: Where events are parked once retries are exhausted.
        on_dead_letter: Awaited with each parked letter (e.g. to alert), once the
            checkpoint has moved past it; if it raises, the error is logged (logger
            `meshkit.eventsourcing`) and the subscription goes on.
        batch_size: Events read and handled per transaction.
        max_attempts: Handler calls per event before it is parked (`None`: retry forever,
            never park, as an outbox relay must to keep order).
        backoff_initial: Seconds before the first retry; doubled per attempt.
        backoff_max: The cap on the backoff.
        clock: Time source for the backoff and the lease.
        leases: Where the lease of `name` is kept, so that one runner at a time handles
            events. Defaults to the checkpoint store's own leases (`checkpoints.leases()`,
            which the SQL stores offer); `None` runs without a lease (one replica only).
            Tests pass a `MemoryLeaseStore`.
        lease_duration: Seconds a runner's lease lasts without renewal: how long a standby
            waits, once the runner stopped renewing, before taking over.
        renew_interval: Seconds between renewals by the runner, and between a standby's
            looks at the lease; less than `lease_duration`.
    """

    name: str = attrs.field(validator=non_empty_str)
    store: EventStore = attrs.field(validator=instance_of(EventStore))
    handler: Handler[_TxT] = attrs.field(validator=is_callable)
    checkpoints: CheckpointStore = attrs.field(validator=instance_of(CheckpointStore))
    dead_letters: DeadLetterStore = attrs.field(
        factory=MemoryDeadLetterStore, validator=instance_of(DeadLetterStore)
    )
    on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = attrs.field(
        default=None, validator=optional(is_callable)
    )
    batch_size: int = attrs.field(default=100, validator=[instance_of(int), ge(1)])
    max_attempts: int | None = attrs.field(
        default=5, validator=[optional(instance_of(int)), optional(ge(1))]
    )
    backoff_initial: float = attrs.field(default=0.1, validator=[finite, ge(0)])
    backoff_max: float = attrs.field(default=30.0, validator=[finite, ge(0)])
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    leases: LeaseStore | None = attrs.field(
        default=attrs.Factory(_default_leases, takes_self=True),
        validator=optional(instance_of(LeaseStore)),
    )
    lease_duration: float = attrs.field(default=10.0, validator=in_range(0.01, MAX_LEASE_SECONDS))
    renew_interval: float = attrs.field(default=2.0, validator=in_range(0.005, MAX_LEASE_SECONDS))
    _position: int = attrs.field(init=False, default=0)
    _progress: anyio.Event | None = attrs.field(init=False, default=None)
    _waiters: int = attrs.field(init=False, default=0)
    _context: AbstractAsyncContextManager[Self] | None = attrs.field(init=False, default=None)
    _owner: str = attrs.field(init=False, factory=new_owner)
    _keeper: LeaseKeeper | None = attrs.field(init=False, default=None)
    _active: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        # The name keys a checkpoint row and a lease row: PostgreSQL refuses an index entry
        # past ~2,700 bytes, which would surface only at the first write, as "unavailable".
        size = len(self.name.encode())
        require(size <= MAX_NAME_BYTES, "name", self.name, f"must be <= {MAX_NAME_BYTES} bytes")
        # A SQL lease is fenced inside the checkpoint's transaction, so it must be that
        # database's: another store's transaction would fence (or miss) another table.
        if isinstance(self.leases, SQLLeaseStore):
            reason = "must be checkpoints.leases(): the fence runs in its transactions"
            require(self.leases.store is self.checkpoints, "leases", self.leases, reason)
        require(
            self.renew_interval < self.lease_duration,
            "renew_interval",
            self.renew_interval,
            f"must be less than lease_duration ({self.lease_duration})",
        )

    @property
    def position(self) -> int:
        """The global position of the last event handled (or parked)."""
        return self._position

    @property
    def active(self) -> bool:
        """Whether this runner is handling events (it holds the lease, if there is one)."""
        return self._active

    async def __aenter__(self) -> Self:
        """Load the checkpoint and start following the log in a task group of its own.

        With a lease store, it returns once this runner holds the lease and has loaded the
        checkpoint, or once it stands by for another runner.

        Raises:
            ConfigurationError: If the subscription is already running.
        """
        # Not anyio's AsyncContextManagerMixin: it needs anyio >= 4.9 (meshkit supports 4.4)
        # and raises RuntimeError, where entering a running subscription is a
        # ConfigurationError here. The mechanics are the same: one generator-based context.
        if self._context is not None:
            raise ConfigurationError("subscription", self.name, "is already running")
        context = self._running()
        self._context = context
        try:
            return await context.__aenter__()
        except BaseException:
            self._context = None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop following the log (releasing the lease) and wait for the task to end."""
        context, self._context = self._context, None
        if context is None:
            return None
        return await context.__aexit__(exc_type, exc, tb)

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[Self]:
        """Own the task group that runs `run()`; keep the body's own error out of it.

        The `async with` body's error (or `start()`'s) is caught before it reaches the task
        group, which would wrap it in an exception group, and raised as is once the group
        has ended. Errors of `run()` itself come out as the group's, as any task's do.
        """
        error: BaseException | None = None
        async with anyio.create_task_group() as group:
            try:
                await group.start(self.run)
                yield self
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # noqa: BLE001 - raised again below, unwrapped
                error = exc
            group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Catch up and follow the log forever (use it in your own task group, or `async with`).

        With a lease store, it first waits for the lease of `name`, and goes back to
        standing by whenever the lease is lost.

        Raises:
            EventSourcingError: If the store or checkpoint store fails (handler errors are
                retried and parked instead).
        """
        started = _Once(task_status.started)
        if self.leases is None:
            await self._follow(started)
        else:
            await self._run_leased(self.leases, started)

    async def wait_for_position(self, position: int) -> None:
        """Wait until the subscription has handled every event up to `position`.

        Tests use it with the position returned by the store, e.g. `store.last_position`.
        """
        while self._position < position:
            if self._progress is None:
                self._progress = anyio.Event()
            self._waiters += 1
            try:
                await self._progress.wait()
            finally:
                self._waiters -= 1
                if self._waiters == 0:
                    self._progress = None  # never reuse an Event of an ended event loop

    # ------------------------------------------------------------ internals

    async def _follow(self, started: Callable[[], object]) -> None:
        position = await self.checkpoints.load_checkpoint(self.name)
        self._advance(position)
        started()
        self._active = True
        try:
            while True:
                events = await self.store.read_all(position, limit=self.batch_size)
                if not events:
                    await self.store.wait_for_new(position)
                    continue
                await self._handle_batch(events)
                position = _position(events[-1])
        finally:
            self._active = False

    async def _run_leased(self, leases: LeaseStore, started: Callable[[], object]) -> None:
        core = LeaseCore(
            owner=self._owner, duration=self.lease_duration, renew_interval=self.renew_interval
        )
        keeper = LeaseKeeper(store=leases, name=self.name, core=core, clock=self.clock)
        try:
            while True:
                await keeper.acquire(on_standby=started)
                with anyio.CancelScope() as lost:  # cancelled by the keeper when lost
                    async with anyio.create_task_group() as group:
                        group.start_soon(keeper.hold, lost)
                        self._keeper = keeper  # fences every checkpoint while following
                        try:
                            await self._follow(started)
                        except LeaseLostError:
                            _LOG.warning("subscription %r: lease taken over", self.name)
                            lost.cancel()
                        finally:
                            self._keeper = None
        finally:
            await keeper.release()

    async def _save(self, tx: Any, position: int) -> None:  # noqa: ANN401 - the store's transaction
        """Save the checkpoint in `tx`, fenced by the lease token when there is a lease."""
        if self._keeper is not None:
            await self._keeper.fence(tx)
        await cast("Transaction", tx).save_checkpoint(self.name, position)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_TxT]:
        """Run one unit of work, telling the lease keeper when it begins and how it ends."""
        keeper, committed = self._keeper, False
        try:
            async with self._begin() as tx:
                if keeper is not None:
                    keeper.transaction_began()
                yield tx
            committed = True
        finally:
            if keeper is not None:
                keeper.transaction_ended(committed=committed)

    def _begin(self) -> AbstractAsyncContextManager[_TxT]:
        store = self.checkpoints
        if isinstance(store, TransactionalCheckpointStore):
            return cast("AbstractAsyncContextManager[_TxT]", store.transaction())
        return _plain_transaction(store)

    async def _handle_batch(self, events: list[Event]) -> None:
        try:
            async with self._transaction() as tx:
                for index, event in enumerate(events):
                    try:
                        await self.handler(event, tx)
                    except Exception as exc:
                        raise _HandlerFailedError(index, exc) from exc
                await self._save(tx, _position(events[-1]))
        except _HandlerFailedError as failed:
            # A real transaction rolled the whole batch back: redo it one event at a time.
            # Without one, the events before the failure are done: carry on from it.
            first = (
                0 if isinstance(self.checkpoints, TransactionalCheckpointStore) else failed.index
            )
            for index in range(first, len(events)):
                error = failed.error if index == failed.index else None
                await self._handle_one(events[index], error)
        self._advance(_position(events[-1]))

    async def _handle_one(self, event: Event, error: Exception | None) -> None:
        attempts = 0 if error is None else 1
        while True:
            if error is not None:
                if self.max_attempts is not None and attempts >= self.max_attempts:
                    await self._park(event, error, attempts)
                    return
                await self.clock.sleep(self._backoff(attempts))
            error = await self._try_one(event)
            if error is None:
                self._advance(_position(event))
                return
            attempts += 1

    async def _try_one(self, event: Event) -> Exception | None:
        try:
            async with self._transaction() as tx:
                try:
                    await self.handler(event, tx)
                except Exception as exc:
                    raise _HandlerFailedError(0, exc) from exc
                await self._save(tx, _position(event))
        except _HandlerFailedError as failed:
            return failed.error
        return None

    async def _park(self, event: Event, error: Exception, attempts: int) -> None:
        letter = DeadLetter(
            subscription=self.name, event=event, error=repr(error), attempts=attempts
        )
        await self.dead_letters.park(letter)
        async with self._transaction() as tx:
            await self._save(tx, _position(event))
        self._advance(_position(event))
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(letter)
            except Exception:  # noqa: BLE001 - a failing report must not stop the subscription
                _LOG.exception("subscription %r: on_dead_letter failed", self.name)

    def _backoff(self, attempts: int) -> float:
        # A float power, capped: `2 ** 1024` as an int cannot be multiplied by a float, which
        # would crash a subscription retrying forever after ~1000 failures.
        return min(self.backoff_initial * 2.0 ** min(attempts - 1, 1000), self.backoff_max)

    def _advance(self, position: int) -> None:
        self._position = position
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.set()


@final
@attrs.define(eq=False)
class _Once:
    """Call `function` on the first call only (`task_status.started` may be called once)."""

    function: Callable[[], object]
    called: bool = False

    def __call__(self) -> None:
        if not self.called:
            self.called = True
            self.function()


@contextlib.asynccontextmanager
async def _plain_transaction(store: CheckpointStore) -> AsyncIterator[Any]:
    yield _PlainTransaction(store)
