"""The Dispatcher shell: retries on the injected clock, drain, failures of the bus, config."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from meshkit import BusUnavailableError, ConfigurationError, EventStoreUnavailableError
from meshkit.eventsourcing import DeadLetter, Event
from meshkit.messaging import (
    Delivery,
    DeliveryPolicy,
    Dispatcher,
    InProcessBus,
    InProcessConsumer,
    MemoryInbox,
    MemoryInboxTransaction,
)
from meshkit.testing._bus_conformance import record_effect

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


def event(version: int = 1, key: str = "order-1") -> Event:
    return Event(stream_id=key, version=version, type="OrderPlaced")


@attrs.define(eq=False)
class FlakyConsumer:
    """Wraps an in-process consumer; its calls fail while `failing` names them."""

    inner: InProcessConsumer
    failing: set[str] = attrs.field(factory=set)

    @property
    def name(self) -> str:
        return self.inner.name

    def _maybe_fail(self, what: str) -> None:
        if what in self.failing:
            raise BusUnavailableError("fake", what, "down")

    async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
        self._maybe_fail("fetch")
        return await self.inner.fetch(max_messages, max_wait)

    async def ack(self, delivery: Delivery) -> None:
        self._maybe_fail("ack")
        await self.inner.ack(delivery)

    async def touch(self, delivery: Delivery) -> None:
        self._maybe_fail("touch")
        await self.inner.touch(delivery)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._maybe_fail("dead_letter")
        await self.inner.dead_letter(delivery, reason)

    async def aclose(self) -> None:
        await self.inner.aclose()


class TestRetries:
    async def test_backoff_waits_on_the_clock(self, clock: FakeClock) -> None:
        """Failures are retried after 0.1 s then 0.2 s of injected time, then succeed."""
        bus, inbox = InProcessBus(clock=clock), MemoryInbox()
        failures = [RuntimeError("one"), RuntimeError("two")]

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            if failures:
                raise failures.pop(0)
            await record_effect(e, tx)

        await bus.publish(event())
        policy = DeliveryPolicy(backoff_initial=0.1)
        dispatcher = Dispatcher(
            consumer=bus.consumer("c"), handler=handler, inbox=inbox, policy=policy, clock=clock
        )
        async with dispatcher:
            await clock.wait_sleepers(1)
            assert clock.now() == 0
            clock.advance(0.1)
            await clock.wait_sleepers(1)
            clock.advance(0.2)
            await dispatcher.wait_for(lambda s: s.handled == 1)
        assert dispatcher.statistics().retries == 2
        assert inbox.data == {"order-1": (1,)}

    async def test_retry_forever_never_dead_letters(self, clock: FakeClock) -> None:
        """With max_deliveries=None a failing message is retried, not dead-lettered."""
        bus, calls = InProcessBus(clock=clock), []

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            calls.append(e)
            raise RuntimeError

        await bus.publish(event())
        policy = DeliveryPolicy(max_deliveries=None, backoff_initial=1.0, backoff_max=1.0)
        dispatcher = Dispatcher(
            consumer=bus.consumer("c"),
            handler=handler,
            inbox=MemoryInbox(),
            policy=policy,
            clock=clock,
            drain_timeout=0,
        )
        async with dispatcher:
            for _ in range(10):
                await clock.wait_sleepers(1)
                clock.advance(1.0)
            await dispatcher.wait_for(lambda s: s.retries >= 10)
        assert dispatcher.statistics().dead_lettered == 0
        assert len(calls) >= 10


class TestShutdown:
    async def test_normal_exit_drains_fetched_messages(self) -> None:
        """Leaving the block normally finishes and acknowledges what was fetched."""
        bus, inbox = InProcessBus(), MemoryInbox()
        started, release = anyio.Event(), anyio.Event()

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            started.set()
            await release.wait()
            await record_effect(e, tx)

        for version in (1, 2, 3):
            await bus.publish(event(version))

        async def release_later() -> None:
            await anyio.wait_all_tasks_blocked()  # the dispatcher is draining by now
            release.set()

        dispatcher = Dispatcher(consumer=bus.consumer("c"), handler=handler, inbox=inbox)
        async with anyio.create_task_group() as tg, dispatcher:
            await started.wait()
            tg.start_soon(release_later)
        assert inbox.data == {"order-1": (1, 2, 3)}
        assert list(await bus.consumer("c").fetch(10, 0)) == []

    async def test_drain_timeout_leaves_the_rest_for_redelivery(self, clock: FakeClock) -> None:
        """A handler stuck past drain_timeout is cancelled; its message comes again."""
        bus = InProcessBus(clock=clock)
        consumer = bus.consumer("c")

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            await anyio.sleep_forever()

        await bus.publish(event())
        dispatcher = Dispatcher(
            consumer=consumer, handler=handler, inbox=MemoryInbox(), drain_timeout=5, clock=clock
        )
        async with anyio.create_task_group() as tg, dispatcher:
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(clock.advance_stepwise, 5)
        await consumer.aclose()
        (again,) = await bus.consumer("c").fetch(10, 0)
        assert again.delivered == 2

    async def test_error_in_block_stops_at_once(self) -> None:
        """An error in the block cancels the lanes and propagates."""
        bus = InProcessBus()
        await bus.publish(event())
        dispatcher = Dispatcher(
            consumer=bus.consumer("c"), handler=record_effect, inbox=MemoryInbox()
        )
        with pytest.raises(KeyError):
            async with dispatcher:
                raise KeyError

    async def test_cannot_run_twice(self) -> None:
        """Entering a running dispatcher again is a ConfigurationError."""
        dispatcher = Dispatcher(
            consumer=InProcessBus().consumer("c"), handler=record_effect, inbox=MemoryInbox()
        )
        async with dispatcher:
            with pytest.raises(ConfigurationError, match="already running"):
                await dispatcher.__aenter__()

    async def test_exit_without_enter_is_harmless(self) -> None:
        """__aexit__ on a dispatcher that is not running does nothing."""
        dispatcher = Dispatcher(
            consumer=InProcessBus().consumer("c"), handler=record_effect, inbox=MemoryInbox()
        )
        assert await dispatcher.__aexit__(None, None, None) is None


class TestBusFailures:
    async def test_fetch_failure_is_retried_after_backoff(self, clock: FakeClock) -> None:
        """A failing fetch is logged and retried after the policy's backoff."""
        bus = InProcessBus(clock=clock)
        consumer = FlakyConsumer(bus.consumer("c"), failing={"fetch"})
        await bus.publish(event())
        inbox = MemoryInbox()
        dispatcher = Dispatcher(consumer=consumer, handler=record_effect, inbox=inbox, clock=clock)
        async with dispatcher:
            await clock.wait_sleepers(1)
            consumer.failing.clear()
            clock.advance(1.0)
            await dispatcher.wait_for(lambda s: s.handled == 1)
        assert inbox.data == {"order-1": (1,)}

    async def test_ack_failure_is_logged_and_redelivery_is_skipped(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A lost ack is logged; the redelivered message is then skipped by the inbox."""
        bus, inbox = InProcessBus(), MemoryInbox()
        consumer = FlakyConsumer(bus.consumer("c"), failing={"ack"})
        await bus.publish(event())
        with caplog.at_level(logging.WARNING, "meshkit.messaging"):
            async with Dispatcher(consumer=consumer, handler=record_effect, inbox=inbox) as d:
                await d.wait_for(lambda s: s.handled == 1)
        await consumer.aclose()
        assert "ack failed" in caplog.text
        async with Dispatcher(
            consumer=bus.consumer("c"), handler=record_effect, inbox=inbox
        ) as again:
            await again.wait_for(lambda s: s.duplicates == 1)
        assert inbox.data == {"order-1": (1,)}

    async def test_failing_touch_and_dead_letter_are_logged(
        self, caplog: pytest.LogCaptureFixture, clock: FakeClock
    ) -> None:
        """Touch and dead-letter failures are logged; the message stays for later."""
        bus = InProcessBus(clock=clock)
        consumer = FlakyConsumer(bus.consumer("c"), failing={"touch", "dead_letter"})

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            raise RuntimeError

        await bus.publish(event())
        policy = DeliveryPolicy(max_deliveries=2, backoff_initial=0)
        dispatcher = Dispatcher(
            consumer=consumer, handler=handler, inbox=MemoryInbox(), policy=policy, clock=clock
        )
        with caplog.at_level(logging.WARNING, "meshkit.messaging"):
            async with dispatcher:
                await dispatcher.wait_for(lambda s: s.retries == 1)
                with anyio.fail_after(10):
                    while "dead_letter failed" not in caplog.text:
                        await anyio.lowlevel.checkpoint()
        assert "touch failed" in caplog.text
        assert dispatcher.statistics().dead_lettered == 0
        assert bus.dead_letters("c") == []

    async def test_failing_dead_letter_report_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An on_dead_letter callback that raises is logged; the dispatcher goes on."""
        bus = InProcessBus()
        reports: list[str] = []

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            raise RuntimeError

        async def report(delivery: Delivery, reason: str) -> None:
            reports.append(reason)
            raise ValueError

        await bus.publish(event())
        policy = DeliveryPolicy(max_deliveries=1)
        with caplog.at_level(logging.ERROR, "meshkit.messaging"):
            async with Dispatcher(
                consumer=bus.consumer("c"),
                handler=handler,
                inbox=MemoryInbox(),
                policy=policy,
                on_dead_letter=report,
            ) as dispatcher:
                await dispatcher.wait_for(lambda s: s.dead_lettered == 1)
        assert len(reports) == 1
        assert "on_dead_letter failed" in caplog.text

    async def test_fetch_failure_with_zero_backoff_waits_a_fetch_timeout(
        self, clock: FakeClock
    ) -> None:
        """With a zero backoff, a failing fetch is retried after fetch_timeout, not in a spin."""
        calls: list[float] = []

        class Counted(FlakyConsumer):
            async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
                calls.append(clock.now())
                return await super().fetch(max_messages, max_wait)

        consumer = Counted(InProcessBus(clock=clock).consumer("c"), failing={"fetch"})
        policy = DeliveryPolicy(backoff_initial=0, backoff_max=0)
        dispatcher = Dispatcher(
            consumer=consumer,
            handler=record_effect,
            inbox=MemoryInbox(),
            policy=policy,
            fetch_timeout=2.0,
            clock=clock,
        )
        async with dispatcher:
            with anyio.fail_after(10):
                await clock.wait_sleepers(1)
            assert calls == [0.0]
            clock.advance(2.0)
            with anyio.fail_after(10):
                await clock.wait_sleepers(1)
            assert calls == [0.0, 2.0]

    async def test_failing_dead_letter_store_keeps_the_message(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A dead-letter store that fails is logged; the message is not acknowledged."""

        class DownStore:
            async def park(self, letter: DeadLetter) -> None:
                raise EventStoreUnavailableError("sqlite", "park", "disk full")

            async def dead_letters(self, subscription: str) -> list[DeadLetter]:
                return []

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            raise RuntimeError

        bus = InProcessBus()
        await bus.publish(event())
        dispatcher = Dispatcher(
            consumer=bus.consumer("c"),
            handler=handler,
            inbox=MemoryInbox(),
            policy=DeliveryPolicy(max_deliveries=1),
            dead_letters=DownStore(),
        )
        with caplog.at_level(logging.WARNING, "meshkit.messaging"):
            async with dispatcher:
                with anyio.fail_after(10):
                    while "park failed" not in caplog.text:
                        await anyio.lowlevel.checkpoint()
        assert dispatcher.statistics().dead_lettered == 0
        assert bus.dead_letters("c") == []


class TestConfiguration:
    @pytest.mark.parametrize(
        ("field", "options"),
        [
            ("parallelism", {"parallelism": 0}),
            ("batch_size", {"batch_size": 0}),
            ("fetch_timeout", {"fetch_timeout": 0}),
            ("fetch_timeout", {"fetch_timeout": 1e300}),
            ("drain_timeout", {"drain_timeout": float("nan")}),
            ("consumer", {"consumer": object()}),
            ("inbox", {"inbox": object()}),
            ("policy", {"policy": 3}),
        ],
    )
    def test_bad_values_name_the_field(self, field: str, options: dict[str, Any]) -> None:
        """Bad knobs are ConfigurationErrors naming the field."""
        base: dict[str, Any] = {
            "consumer": InProcessBus().consumer("c"),
            "handler": record_effect,
            "inbox": MemoryInbox(),
        }
        with pytest.raises(ConfigurationError) as caught:
            Dispatcher(**(base | options))
        assert caught.value.field == field

    def test_consumer_with_empty_name_is_refused(self) -> None:
        """A consumer whose name is empty cannot record anything in an inbox."""
        consumer = InProcessConsumer(bus=InProcessBus(), name="")
        with pytest.raises(ConfigurationError) as caught:
            Dispatcher(consumer=consumer, handler=record_effect, inbox=MemoryInbox())
        assert caught.value.field == "consumer.name"


class TestMisconfiguredBus:
    async def test_configuration_error_from_fetch_stops_the_dispatcher(self) -> None:
        """A ConfigurationError from the bus is not retried: it ends the dispatcher."""

        class Broken(FlakyConsumer):
            async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
                raise ConfigurationError("event loop", "trio", "asyncio only")

        dispatcher = Dispatcher(
            consumer=Broken(InProcessBus().consumer("c")),
            handler=record_effect,
            inbox=MemoryInbox(),
        )
        with pytest.raises(ExceptionGroup) as caught:
            async with dispatcher:
                await anyio.sleep_forever()
        assert caught.group_contains(ConfigurationError)


class TestCommitBatch:
    async def test_failure_in_a_batch_retries_each_on_its_own(self, clock: FakeClock) -> None:
        """One failing message rolls its batch back; the others then commit one by one."""
        bus, inbox = InProcessBus(clock=clock), MemoryInbox()
        failed: list[int] = []

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            if e.version == 3 and not failed:
                failed.append(e.version)
                raise RuntimeError
            await record_effect(e, tx)

        for version in range(1, 6):
            await bus.publish(event(version))
        dispatcher = Dispatcher(
            consumer=bus.consumer("c"),
            handler=handler,
            inbox=inbox,
            commit_batch=5,
            policy=DeliveryPolicy(backoff_initial=0),
            clock=clock,
        )
        async with dispatcher:
            await dispatcher.wait_for(lambda s: s.handled == 5)
        assert inbox.data == {"order-1": (1, 2, 3, 4, 5)}
        assert failed == [3]

    async def test_redelivered_copies_in_one_batch_count_as_duplicates(self) -> None:
        """A batch holding a message twice applies it once and counts a duplicate."""

        class Doubling(FlakyConsumer):
            async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
                got = list(await self.inner.fetch(max_messages, max_wait))
                return [copy for delivery in got for copy in (delivery, delivery)]

        bus, inbox, gate = InProcessBus(), MemoryInbox(), anyio.Event()

        async def handler(e: Event, tx: MemoryInboxTransaction) -> None:
            await gate.wait()  # the first message holds the lane while the rest queue up
            await record_effect(e, tx)

        await bus.publish(event(1))
        await bus.publish(event(2))
        dispatcher = Dispatcher(
            consumer=Doubling(bus.consumer("c")), handler=handler, inbox=inbox, commit_batch=8
        )
        async with dispatcher:
            await anyio.wait_all_tasks_blocked()
            gate.set()
            await dispatcher.wait_for(lambda s: s.handled >= 4)
        assert inbox.data == {"order-1": (1, 2)}
        assert dispatcher.statistics().duplicates == 2
