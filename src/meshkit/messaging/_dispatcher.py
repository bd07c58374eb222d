"""The `Dispatcher`: fetch from a `Consumer`, handle through an `Inbox`, acknowledge after commit.

One task fetches batches and routes each delivery to a *lane* by its key; each lane handles
its deliveries one at a time, so the messages of one key keep their order while different
keys run in parallel (`parallelism` lanes). A failing handler is retried in its lane with
backoff (holding that key back, which is what keeps its order) until the `DeliveryPolicy`
gives up and the message goes to the dead-letter place. The decisions come from the pure
`Attempts` machine in `_core`.

Leaving the `async with` block normally drains: no more fetching, the deliveries already
fetched are handled and acknowledged (for at most `drain_timeout` seconds; what is left is
delivered again later). Leaving it with an error or a cancellation stops at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, final

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import ConfigurationError, MeshkitError
from meshkit._validate import finite, ge, gt, instance_of, le, optional, require
from meshkit.eventsourcing import DeadLetter, DeadLetterStore
from meshkit.messaging._consumer import Consumer, Delivery
from meshkit.messaging._core import (
    Attempts,
    DeadLetterIt,
    DeliveryPolicy,
    Handle,
    RetryLater,
    lane_of,
)
from meshkit.messaging._inbox import Inbox, check_text

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from meshkit.eventsourcing import Event

__all__ = ["Dispatcher", "DispatcherStatistics", "MessageHandler"]

_LOG = logging.getLogger("meshkit.messaging")
_HOUR = 3600.0
_TxT = TypeVar("_TxT")

MessageHandler = Callable[["Event", _TxT], Awaitable[None]]
"""`async def handler(event, tx)`: apply one event's effects through the inbox transaction."""


@attrs.frozen(kw_only=True)
class DispatcherStatistics:
    """Counters of a dispatcher since it was built.

    Attributes:
        handled: Deliveries acknowledged after their inbox transaction committed,
            `duplicates` included (so `handled` alone counts every delivery done with).
        duplicates: Deliveries skipped because the inbox had them already.
        retries: Handler failures followed by a retry.
        dead_lettered: Messages sent to the dead-letter place.
    """

    handled: int
    duplicates: int
    retries: int
    dead_lettered: int


def _check_consumer(_inst: object, _attribute: object, value: Consumer) -> None:
    require(isinstance(value, Consumer), "consumer", value, "must implement Consumer")
    check_text("consumer.name", value.name)


@final
@attrs.define(eq=False, kw_only=True)
class Dispatcher(Generic[_TxT]):
    """Run `handler` for every message of `consumer`, exactly once in effect, via `inbox`.

    Attributes:
        consumer: The bus adapter to fetch from; its `name` is the inbox's consumer name.
        handler: `async def handler(event, tx)`; raise to have the message retried.
        inbox: Records processed messages in the handler's transaction.
        policy: Retries and backoff before a message is dead-lettered.
        parallelism: Lanes handling different keys at once (one key always one lane).
        batch_size: Messages fetched at once, and buffered per lane.
        commit_batch: Up to this many messages already waiting in a lane are handled in
            one inbox transaction (one commit, one fsync); if any of them fails, the
            transaction is rolled back and each is handled in its own. 1: one per message.
        fetch_timeout: Seconds one fetch waits for messages before asking again (at most
            3600); also the least wait after a failed fetch.
        drain_timeout: Seconds a normal exit waits for fetched messages to be handled.
        dead_letters: Also park dead-lettered (decodable) events here, if given; if that
            fails with a meshkit error, it is logged and the message is not acknowledged.
        on_dead_letter: Awaited with each delivery sent to the dead-letter place and the
            reason; if it raises, the error is logged (logger `meshkit.messaging`).
        clock: Time source for the backoff and the drain timeout.
    """

    consumer: Consumer = attrs.field(validator=_check_consumer)
    handler: MessageHandler[_TxT]
    inbox: Inbox[_TxT] = attrs.field(validator=instance_of(Inbox))
    policy: DeliveryPolicy = attrs.field(
        factory=DeliveryPolicy, validator=instance_of(DeliveryPolicy)
    )
    parallelism: int = attrs.field(default=1, validator=[instance_of(int), ge(1)])
    batch_size: int = attrs.field(default=16, validator=[instance_of(int), ge(1)])
    commit_batch: int = attrs.field(default=1, validator=[instance_of(int), ge(1)])
    # At most an hour: the buses turn it into a long-poll timeout (milliseconds for Redis,
    # nanoseconds for NATS) that must fit their integers, and it paces fetch retries.
    fetch_timeout: float = attrs.field(default=1.0, validator=[finite, gt(0), le(_HOUR)])
    drain_timeout: float = attrs.field(default=30.0, validator=[finite, ge(0)])
    dead_letters: DeadLetterStore | None = attrs.field(
        default=None, validator=optional(instance_of(DeadLetterStore))
    )
    on_dead_letter: Callable[[Delivery, str], Awaitable[None]] | None = None
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _counts: dict[str, int] = attrs.field(init=False, factory=dict)
    _task_group: TaskGroup | None = attrs.field(init=False, default=None)
    _fetching: anyio.CancelScope | None = attrs.field(init=False, default=None)
    _lanes: list[MemoryObjectSendStream[Delivery]] = attrs.field(init=False, factory=list)
    _progress: anyio.Event | None = attrs.field(init=False, default=None)
    _busy_lanes: int = attrs.field(init=False, default=0)
    _drained: anyio.Event | None = attrs.field(init=False, default=None)

    @property
    def name(self) -> str:
        """The consumer name messages are recorded under."""
        return self.consumer.name

    def statistics(self) -> DispatcherStatistics:
        """Return the counters so far."""
        counts = self._counts
        return DispatcherStatistics(
            handled=counts.get("handled", 0),
            duplicates=counts.get("duplicates", 0),
            retries=counts.get("retries", 0),
            dead_lettered=counts.get("dead_lettered", 0),
        )

    async def wait_for(self, predicate: Callable[[DispatcherStatistics], bool]) -> None:
        """Wait until `predicate(self.statistics())` holds (checked after each message)."""
        while not predicate(self.statistics()):
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()

    async def __aenter__(self) -> Self:
        """Start the fetch task and the lanes in a task group of the dispatcher's own.

        Raises:
            ConfigurationError: If the dispatcher is already running.
        """
        if self._task_group is not None:
            raise ConfigurationError("dispatcher", self.name, "is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._fetching = anyio.CancelScope()
        self._lanes = []
        self._drained = anyio.Event()
        self._busy_lanes = self.parallelism
        for _ in range(self.parallelism):
            send, receive = anyio.create_memory_object_stream[Delivery](self.batch_size)
            self._lanes.append(send)
            task_group.start_soon(self._lane, receive)
        task_group.start_soon(self._fetch_loop, self._fetching)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Drain (normal exit) or stop at once (error, cancellation); wait for the tasks."""
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return None
        assert self._fetching is not None  # noqa: S101 - set together with the task group
        self._fetching.cancel()
        for lane in self._lanes:
            lane.close()
        if exc is None:
            task_group.start_soon(self._drain_watch, task_group.cancel_scope)
            return await task_group.__aexit__(None, None, None)
        # The body's own error propagates by itself (we return None): the group gets only
        # its tasks' errors, so the caller sees the body's exception unwrapped.
        task_group.cancel_scope.cancel()
        await task_group.__aexit__(None, None, None)
        return None

    # ------------------------------------------------------------------ tasks

    async def _fetch_loop(self, scope: anyio.CancelScope) -> None:
        failures = 0
        with scope:
            while True:
                try:
                    batch = await self.consumer.fetch(self.batch_size, self.fetch_timeout)
                except ConfigurationError:
                    raise  # a wrong setup (e.g. NATS under trio) does not heal by waiting
                except MeshkitError as exc:
                    failures += 1
                    _LOG.warning("dispatcher %r: fetch failed: %s", self.name, exc)
                    # Never faster than an idle poll: a zero handler backoff must not turn a
                    # bus outage into a busy loop.
                    delay = max(self.policy.backoff(failures), self.fetch_timeout)
                    await self.clock.sleep(delay)
                    continue
                failures = 0
                for delivery in batch:
                    await self._lanes[self._lane_of(delivery)].send(delivery)

    def _lane_of(self, delivery: Delivery) -> int:
        return lane_of(delivery.key, self.parallelism)

    async def _lane(self, receive: MemoryObjectReceiveStream[Delivery]) -> None:
        try:
            async with receive:
                async for delivery in receive:
                    batch = [delivery]
                    while len(batch) < self.commit_batch:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._process_batch(batch)
        finally:
            self._busy_lanes -= 1
            if self._busy_lanes == 0 and self._drained is not None:
                self._drained.set()

    async def _drain_watch(self, scope: anyio.CancelScope) -> None:
        """Stop the lanes if draining takes longer than `drain_timeout`."""
        assert self._drained is not None  # noqa: S101 - set by __aenter__
        with self.clock.deadline_scope(self.clock.now() + self.drain_timeout):
            await self._drained.wait()
            return
        _LOG.warning("dispatcher %r: drain timed out; the rest comes again", self.name)
        scope.cancel()

    async def _process_batch(self, batch: list[Delivery]) -> None:
        """Handle a lane's waiting deliveries in one transaction; one by one if that fails."""
        if len(batch) > 1 and all(self._fresh(delivery) for delivery in batch):
            duplicates = await self._try_together(batch)
            if duplicates is not None:
                for delivery in batch:
                    await self._quietly("ack", self.consumer.ack(delivery))
                for _ in range(duplicates):
                    self._count("duplicates")
                for _ in range(len(batch)):
                    self._count("handled")
                return
        for delivery in batch:
            await self._process(delivery)

    def _fresh(self, delivery: Delivery) -> bool:
        return isinstance(
            Attempts(self.policy, delivery.delivered).start(delivery.decode_error), Handle
        )

    async def _try_together(self, batch: list[Delivery]) -> int | None:
        """Run the batch in one inbox transaction; return the duplicates, `None` on failure."""
        duplicates = 0
        try:
            async with self.inbox.transaction() as tx:
                for delivery in batch:
                    assert delivery.event is not None  # noqa: S101 - _fresh checked it
                    if await self.inbox.claim(tx, self.name, delivery.message_id):
                        await self.handler(delivery.event, tx)
                    else:
                        duplicates += 1
        except Exception:  # noqa: BLE001 - rolled back: each is then tried on its own
            return None
        return duplicates

    async def _process(self, delivery: Delivery) -> None:
        attempts = Attempts(self.policy, delivery.delivered)
        decision = attempts.start(delivery.decode_error)
        while not isinstance(decision, DeadLetterIt):
            if isinstance(decision, RetryLater):
                self._count("retries")
                await self._quietly("touch", self.consumer.touch(delivery))
                await self.clock.sleep(decision.delay)
            error = await self._try(delivery)
            if error is None:
                await self._quietly("ack", self.consumer.ack(delivery))
                self._count("handled")
                return
            decision = attempts.failed(repr(error))
        await self._dead_letter(delivery, decision.reason, attempts.attempts)

    async def _try(self, delivery: Delivery) -> Exception | None:
        event = delivery.event
        assert event is not None  # noqa: S101 - undecodable deliveries never get here
        try:
            async with self.inbox.transaction() as tx:
                if not await self.inbox.claim(tx, self.name, delivery.message_id):
                    self._count("duplicates")
                    return None
                await self.handler(event, tx)
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried
            _LOG.debug("dispatcher %r: %s failed: %r", self.name, delivery.message_id, exc)
            return exc
        return None

    async def _dead_letter(self, delivery: Delivery, reason: str, attempts: int) -> None:
        _LOG.warning("dispatcher %r: dead-lettering %s: %s", self.name, delivery.message_id, reason)
        if self.dead_letters is not None and delivery.event is not None:
            letter = DeadLetter(
                subscription=self.name,
                event=delivery.event,
                error=reason,
                attempts=max(attempts, 1),
            )
            # Like a failed bus call: logged, not acknowledged, so the message comes again.
            if not await self._quietly("park", self.dead_letters.park(letter)):
                return
        if not await self._quietly("dead_letter", self.consumer.dead_letter(delivery, reason)):
            return
        self._count("dead_lettered")
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(delivery, reason)
            except Exception:  # noqa: BLE001 - a failing report must not stop the lane
                _LOG.exception("dispatcher %r: on_dead_letter failed", self.name)

    async def _quietly(self, what: str, call: Awaitable[Any]) -> bool:
        """Await a bus call; a bus failure is logged (the message comes again later)."""
        try:
            await call
        except MeshkitError as exc:
            _LOG.warning("dispatcher %r: %s failed: %s", self.name, what, exc)
            return False
        return True

    def _count(self, what: str) -> None:
        self._counts[what] = self._counts.get(what, 0) + 1
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.set()
