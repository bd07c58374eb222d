"""NATS JetStream (asyncio only, as nats-py): conformance, publisher dedupe, errors."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import nats
import pytest

from meshkit import BusUnavailableError, ConfigurationError, PublishError
from meshkit.eventsourcing import Event
from meshkit.messaging import JetStreamConsumer, JetStreamPublisher
from meshkit.testing import BusConformance

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from nats.js import JetStreamContext


pytestmark = pytest.mark.nats


@pytest.fixture
def anyio_backend() -> str:
    """nats-py runs on asyncio only."""
    return "asyncio"


async def read_subject(js: JetStreamContext, stream: str, subject: str) -> list[Any]:
    """Return every message stored on `subject` of `stream` (an ephemeral pull consumer)."""
    sub = await js.pull_subscribe(subject, stream=stream)
    messages: list[Any] = []
    try:
        while True:
            batch = await sub.fetch(100, timeout=0.5)
            messages.extend(batch)
    except TimeoutError:  # nats-py's own or asyncio's: nothing more arrived
        pass
    finally:
        await sub.unsubscribe()
    return messages


@pytest.fixture
async def jetstream(nats_url: str, unique: str) -> AsyncIterator[tuple[JetStreamContext, str]]:
    """Create a uniquely named stream (events + dead letters); delete it afterwards."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"MK_{unique}"
    await js.add_stream(name=stream, subjects=[f"mk.{unique}.events", f"mk.{unique}.dead"])
    try:
        yield js, unique
    finally:
        await js.delete_stream(stream)
        await nc.close()


class TestJetStreamConformance(BusConformance):
    @pytest.fixture(autouse=True)
    async def _nats(
        self, nats_url: str, jetstream: tuple[JetStreamContext, str]
    ) -> AsyncIterator[None]:
        self.url = nats_url
        self.js, unique = jetstream
        self.stream, self.subject, self.dead = (
            f"MK_{unique}",
            f"mk.{unique}.events",
            f"mk.{unique}.dead",
        )
        self.publisher = JetStreamPublisher(url=nats_url, subject=self.subject)
        yield
        await self.publisher.aclose()

    async def make_consumer(self, name: str) -> JetStreamConsumer:
        return JetStreamConsumer(
            url=self.url,
            stream=self.stream,
            subject=self.subject,
            durable=name,
            dead_letter_subject=self.dead,
            ack_wait=1.0,
        )

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.publisher.publish(event)

    async def publish_undecodable(self) -> str:
        message_id = f"garbage-{uuid.uuid4()}"
        await self.js.publish(
            self.subject, b"\xff not an event", headers={"Nats-Msg-Id": message_id}
        )
        return message_id

    async def dead_lettered(self, name: str) -> list[tuple[str, str]]:
        prefix = f"dead:{name}:"
        letters = []
        for message in await read_subject(self.js, self.stream, self.dead):
            headers = message.headers or {}
            if headers.get("Meshkit-Consumer") == name:
                message_id = headers["Nats-Msg-Id"].removeprefix(prefix)
                letters.append((message_id, headers["Meshkit-Reason"]))
        return letters


@pytest.mark.anyio
class TestJetStreamPublisher:
    async def test_resent_event_is_stored_once(
        self, nats_url: str, jetstream: tuple[JetStreamContext, str]
    ) -> None:
        """Publishing one event twice stores it once (Nats-Msg-Id = event id)."""
        js, unique = jetstream
        publisher = JetStreamPublisher(url=nats_url, subject=f"mk.{unique}.events")
        event = Event(stream_id="order-1", version=1, type="OrderPlaced", data={"total": 3})
        await publisher.publish(event)
        await publisher.publish(event)
        await publisher.aclose()
        info = await js.stream_info(f"MK_{unique}")
        assert info.state.messages == 1

    async def test_subject_function_routes_per_event(
        self, nats_url: str, jetstream: tuple[JetStreamContext, str]
    ) -> None:
        """A subject function picks each event's subject."""
        js, unique = jetstream
        publisher = JetStreamPublisher(url=nats_url, subject=lambda e: f"mk.{unique}.{e.type}")
        await publisher.publish(Event(stream_id="s", version=1, type="events"))
        await publisher.aclose()
        assert len(await read_subject(js, f"MK_{unique}", f"mk.{unique}.events")) == 1

    async def test_subject_without_stream_is_publish_error(self, nats_url: str) -> None:
        """A subject no stream takes raises PublishError (the relay retries it)."""
        publisher = JetStreamPublisher(url=nats_url, subject=f"mk.nostream.{uuid.uuid4().hex}")
        with pytest.raises(PublishError):
            await publisher.publish(Event(stream_id="s", version=1, type="T"))
        await publisher.aclose()

    async def test_unreachable_server_is_publish_error(self) -> None:
        """A server that cannot be reached raises PublishError."""
        publisher = JetStreamPublisher(url="nats://127.0.0.1:1", subject="x", connect_timeout=0.5)
        with pytest.raises(PublishError):
            await publisher.publish(Event(stream_id="s", version=1, type="T"))


@pytest.mark.anyio
class TestJetStreamConsumer:
    async def test_unknown_stream_is_bus_unavailable(self, nats_url: str) -> None:
        """Consuming a stream that does not exist raises BusUnavailableError."""
        consumer = JetStreamConsumer(
            url=nats_url,
            stream=f"MK_missing_{uuid.uuid4().hex}",
            subject="x.y",
            durable="d",
            dead_letter_subject="x.dead",
        )
        with pytest.raises(BusUnavailableError, match="nats subscribe"):
            await consumer.fetch(1, 0.1)
        await consumer.aclose()


class TestOnTrio:
    def test_trio_is_refused(self) -> None:
        """Under trio, the NATS classes refuse with a ConfigurationError (asyncio only)."""
        publisher = JetStreamPublisher(url="nats://127.0.0.1:1", subject="x")
        event = Event(stream_id="s", version=1, type="T")
        with pytest.raises(ConfigurationError, match="asyncio only"):
            anyio.run(publisher.publish, event, backend="trio")


class TestJetStreamConfiguration:
    @pytest.mark.parametrize(
        ("field", "options"),
        [
            ("subject", {"subject": ""}),
            ("subject", {"subject": "has space"}),
            ("stream", {"stream": "a.b"}),
            ("durable", {"durable": ""}),
            ("durable", {"durable": "x*"}),
            ("dead_letter_subject", {"dead_letter_subject": ""}),
            ("max_deliver", {"max_deliver": 0}),
            ("ack_wait", {"ack_wait": 0}),
            ("ack_wait", {"ack_wait": float("inf")}),
            ("ack_wait", {"ack_wait": 1e300}),
            ("stream", {"stream": "a\0b"}),
            ("durable", {"durable": "\ud800"}),
            ("subject", {"subject": "a.\0"}),
            ("dead_letter_subject", {"dead_letter_subject": "a.\ud800"}),
        ],
    )
    def test_bad_configuration_names_the_field(self, field: str, options: dict[str, Any]) -> None:
        """Bad knobs raise ConfigurationError naming the field."""
        base: dict[str, Any] = {
            "stream": "S",
            "subject": "a.b",
            "durable": "d",
            "dead_letter_subject": "a.dead",
        }
        with pytest.raises(ConfigurationError) as caught:
            JetStreamConsumer(**(base | options))
        assert caught.value.field == field

    def test_empty_publisher_subject_is_refused(self) -> None:
        """An empty publisher subject is a ConfigurationError naming `subject`."""
        with pytest.raises(ConfigurationError) as caught:
            JetStreamPublisher(subject="")
        assert caught.value.field == "subject"

    @pytest.mark.parametrize("bad", ["has space", "a.\0", "a.\ud800", ""])
    def test_bad_subject_from_function_is_refused(self, bad: str) -> None:
        """A subject function's bad result is refused before it reaches the connection."""
        publisher = JetStreamPublisher(url="nats://127.0.0.1:1", subject=lambda _: bad)
        event = Event(stream_id="s", version=1, type="T")
        with pytest.raises(ConfigurationError) as caught:
            anyio.run(publisher.publish, event, backend="asyncio")
        assert caught.value.field == "subject"
