"""The conformance suite every message bus adapter (a `Consumer` and its publisher) must pass.

Subclass `BusConformance` in a test module, name the subclass `Test...`, and implement its
factory methods; the in-process bus needs only a few lines:

```python
from meshkit.messaging import InProcessBus
from meshkit.testing import BusConformance

class TestInProcessBus(BusConformance):
    def setup_method(self) -> None:
        self.bus = InProcessBus()

    async def make_consumer(self, name):
        return self.bus.consumer(name)

    async def publish(self, events):
        for event in events:
            await self.bus.publish(event)

    async def dead_lettered(self, name):
        return [(str(event.event_id), reason) for event, reason in self.bus.dead_letters(name)]
```

The suite checks, through a `Dispatcher` and a `MemoryInbox`: at-least-once delivery,
redelivery of what a crashed consumer fetched and did not acknowledge, per-key order,
dead-lettering after the policy's deliveries (and of an undecodable message, where the bus
can carry one), and that the inbox skips a message redelivered after its commit. Every
test is async and marked for the anyio pytest plugin; real buses wait for real time, at
most `max_wait` seconds per step.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import uuid
from typing import TYPE_CHECKING, Any

import anyio

from meshkit.eventsourcing import Event, MemoryDeadLetterStore
from meshkit.messaging import (
    Consumer,
    Delivery,
    DeliveryPolicy,
    Dispatcher,
    DispatcherStatistics,
    MemoryInbox,
    MemoryInboxTransaction,
)
from meshkit.testing._eventstore_conformance import _add_anyio_mark

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

__all__ = ["BusConformance"]


def _check(ok: bool, message: str) -> None:  # noqa: FBT001 - an assert as a function
    if not ok:
        raise AssertionError(message)


def make_bus_events(keys: int, per_key: int) -> list[Event]:
    """Return `keys * per_key` events, versions 1..per_key of each key, keys interleaved."""
    run = uuid.uuid4().hex[:8]
    return [
        Event(
            stream_id=f"order-{run}-{key}", version=version, type="OrderPlaced", data={"n": version}
        )
        for version, key in itertools.product(range(1, per_key + 1), range(keys))
    ]


async def record_effect(event: Event, tx: MemoryInboxTransaction) -> None:
    """The suite's handler: append the event's version to its key's tuple in the inbox data."""
    tx.data[event.stream_id] = (*tx.data.get(event.stream_id, ()), event.version)


class BusConformance(abc.ABC):
    """The behaviour every bus adapter must have; implement the abstract factory methods."""

    max_wait: float = 30.0
    """Seconds any one step may wait for the bus (a guard against hanging, not a sleep)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401 - passed through
        super().__init_subclass__(**kwargs)
        _add_anyio_mark(cls)

    @abc.abstractmethod
    async def make_consumer(self, name: str) -> Consumer:
        """Return a consumer of durable name `name` that starts at the bus's beginning."""

    @abc.abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Put `events` on the bus in this order (through the adapter's publisher)."""

    @abc.abstractmethod
    async def dead_lettered(self, name: str) -> list[tuple[str, str]]:
        """Return `(message_id, reason)` of what consumer `name` sent to the dead-letter place."""

    async def publish_undecodable(self) -> str | None:
        """Put a message that cannot be decoded on the bus; return its message id.

        Return `None` (the default) when the bus cannot carry one (it holds decoded events).
        """
        return None

    # ------------------------------------------------------------------ helpers

    def consumer_name(self) -> str:
        """Return a fresh durable name."""
        return f"conformance-{uuid.uuid4().hex[:10]}"

    @contextlib.asynccontextmanager
    async def dispatching(
        self,
        name: str,
        inbox: MemoryInbox,
        handler: Callable[[Event, MemoryInboxTransaction], Any] = record_effect,
        **options: Any,  # noqa: ANN401 - Dispatcher knobs
    ) -> AsyncIterator[Dispatcher[MemoryInboxTransaction]]:
        """Run a dispatcher over a new consumer `name`; close the consumer afterwards."""
        consumer = await self.make_consumer(name)
        options.setdefault("fetch_timeout", 0.5)
        try:
            async with Dispatcher(consumer=consumer, handler=handler, inbox=inbox, **options) as d:
                yield d
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.aclose()

    async def wait(
        self, dispatcher: Dispatcher[Any], predicate: Callable[[DispatcherStatistics], bool]
    ) -> None:
        """Wait (at most `max_wait`) until the dispatcher's statistics satisfy `predicate`."""
        with anyio.fail_after(self.max_wait):
            await dispatcher.wait_for(predicate)

    async def fetch_some(self, consumer: Consumer) -> list[Delivery]:
        """Fetch until at least one delivery arrives (at most `max_wait`)."""
        with anyio.fail_after(self.max_wait):
            while True:
                batch = list(await consumer.fetch(10, 0.5))
                if batch:
                    return batch

    # ------------------------------------------------------------------ the suite

    async def test_delivers_every_message(self) -> None:
        """Every published message is handled (at least once; once in effect)."""
        events = make_bus_events(keys=3, per_key=4)
        name, inbox = self.consumer_name(), MemoryInbox()
        await self.publish(events)
        async with self.dispatching(name, inbox, parallelism=3) as dispatcher:
            await self.wait(dispatcher, lambda s: s.handled >= len(events))
        expected = {str(event.event_id) for event in events}
        _check(inbox.processed(name) == expected, f"processed {inbox.processed(name)}")

    async def test_keeps_per_key_order(self) -> None:
        """Messages of one key take effect in the order published, across parallel lanes."""
        events = make_bus_events(keys=4, per_key=5)
        name, inbox = self.consumer_name(), MemoryInbox()
        await self.publish(events)
        async with self.dispatching(name, inbox, parallelism=4) as dispatcher:
            await self.wait(dispatcher, lambda s: s.handled >= len(events))
        for key in {event.stream_id for event in events}:
            _check(inbox.data[key] == (1, 2, 3, 4, 5), f"{key}: {inbox.data[key]}")

    async def test_batched_commits_keep_effects_and_order(self) -> None:
        """With several messages per inbox transaction, effects stay once and in order."""
        events = make_bus_events(keys=2, per_key=6)
        name, inbox = self.consumer_name(), MemoryInbox()
        await self.publish(events)
        async with self.dispatching(name, inbox, parallelism=2, commit_batch=4) as dispatcher:
            await self.wait(dispatcher, lambda s: s.handled >= len(events))
        for key in {event.stream_id for event in events}:
            _check(inbox.data[key] == (1, 2, 3, 4, 5, 6), f"{key}: {inbox.data[key]}")

    async def test_redelivers_after_crash_before_ack(self) -> None:
        """What a consumer fetched and never acknowledged is delivered again after it dies."""
        events = make_bus_events(keys=1, per_key=3)
        name, inbox = self.consumer_name(), MemoryInbox()
        await self.publish(events)
        crashed = await self.make_consumer(name)
        fetched = await self.fetch_some(crashed)
        await crashed.aclose()  # no ack: the process "died" while handling
        async with self.dispatching(name, inbox) as dispatcher:
            await self.wait(dispatcher, lambda s: s.handled >= len(events))
        _check(len(fetched) >= 1, "the crashed consumer fetched nothing")
        _check(inbox.data[events[0].stream_id] == (1, 2, 3), f"effects {inbox.data}")

    async def test_inbox_skips_message_redelivered_after_commit(self) -> None:
        """A message whose effects committed but whose ack was lost has no second effect."""
        events = make_bus_events(keys=1, per_key=2)
        name, inbox = self.consumer_name(), MemoryInbox()
        await self.publish(events)
        crashed = await self.make_consumer(name)
        first = (await self.fetch_some(crashed))[0]
        async with inbox.transaction() as tx:
            _check(await inbox.claim(tx, name, first.message_id), "first claim refused")
            assert first.event is not None  # noqa: S101 - narrowing
            await record_effect(first.event, tx)
        await crashed.aclose()  # committed, then died before the ack
        async with self.dispatching(name, inbox) as dispatcher:
            await self.wait(dispatcher, lambda s: s.handled >= len(events))
        _check(dispatcher.statistics().duplicates >= 1, "the redelivery was not skipped")
        _check(inbox.data[events[0].stream_id] == (1, 2), f"effects {inbox.data}")

    async def test_dead_letters_after_max_deliveries(self) -> None:
        """A message whose handler keeps failing goes to the dead-letter place; others go on."""
        events = make_bus_events(keys=2, per_key=2)
        poison = events[0]
        name, inbox, parked = self.consumer_name(), MemoryInbox(), MemoryDeadLetterStore()
        calls: list[str] = []

        async def handler(event: Event, tx: MemoryInboxTransaction) -> None:
            calls.append(str(event.event_id))
            if event.event_id == poison.event_id:
                msg = "cannot handle this one"
                raise RuntimeError(msg)
            await record_effect(event, tx)

        policy = DeliveryPolicy(max_deliveries=3, backoff_initial=0.0)
        await self.publish(events)
        async with self.dispatching(
            name, inbox, handler, policy=policy, dead_letters=parked
        ) as dispatcher:
            await self.wait(
                dispatcher, lambda s: s.handled >= len(events) - 1 and s.dead_lettered >= 1
            )
        letters = await self.dead_lettered(name)
        _check(
            calls.count(str(poison.event_id)) == policy.max_deliveries,
            f"poison handled {calls} times",
        )
        _check([m for m, _ in letters] == [str(poison.event_id)], f"dead letters {letters}")
        _check("cannot handle this one" in letters[0][1], f"reason {letters[0][1]!r}")
        parked_ids = [letter.event.event_id for letter in await parked.dead_letters(name)]
        _check(parked_ids == [poison.event_id], f"parked {parked_ids}")
        _check(inbox.data[events[1].stream_id] == (1, 2), f"effects {inbox.data}")

    async def test_undecodable_message_is_dead_lettered_not_retried(self) -> None:
        """A message that cannot be decoded is dead-lettered with the reason, never handled."""
        name, inbox = self.consumer_name(), MemoryInbox()
        message_id = await self.publish_undecodable()
        if message_id is None:
            import pytest  # noqa: PLC0415 - only when the suite runs

            pytest.skip("this bus carries decoded events only")
        calls: list[Event] = []

        async def handler(event: Event, tx: MemoryInboxTransaction) -> None:
            calls.append(event)
            await record_effect(event, tx)

        async with self.dispatching(name, inbox, handler) as dispatcher:
            await self.wait(dispatcher, lambda s: s.dead_lettered >= 1)
        letters = await self.dead_lettered(name)
        _check(calls == [], f"the handler was called with {calls}")
        _check([m for m, _ in letters] == [message_id], f"dead letters {letters}")
        _check("undecodable" in letters[0][1], f"reason {letters[0][1]!r}")
