"""NATS JetStream: a `Publisher` for the outbox relay and a durable pull `Consumer`.

nats-py runs on asyncio only. This module is one of the two places in meshkit where asyncio
is forced (grpc.aio is the other): its classes refuse to run under trio with a
`ConfigurationError`, and the connection's own background tasks (reader, pinger,
reconnects) belong to nats-py, outside any meshkit task group. Everything above them (the
`Dispatcher`, the inbox) stays anyio. `nats` is imported on first use.

The publisher sets the `Nats-Msg-Id` header to the event id: JetStream drops a re-sent event
inside the stream's duplicate window, so a relay restarted after a crash does not publish
twice. The consumer binds a durable pull consumer with explicit acknowledgements.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - nats-py is asyncio-only; isolated in this module
import contextlib
import re
from typing import TYPE_CHECKING, Any, final

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import BusUnavailableError, ConfigurationError, PublishError
from meshkit._validate import finite, ge, gt, instance_of, le, optional, require
from meshkit.eventsourcing import Event, JSONSerializer, Serializer
from meshkit.messaging._codec import decode, decode_envelope, encode_envelope
from meshkit.messaging._consumer import Delivery
from meshkit.messaging._inbox import check_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import nats.aio.client
    import nats.aio.msg
    import nats.js

__all__ = ["JetStreamConsumer", "JetStreamPublisher", "check_subject"]

_SUBJECT = re.compile(r"^[^\s.*>]+(\.[^\s.]+)*$")
_NAME = re.compile(r"^[^\s.*>/\\]+$")
_HEADER_SAFE = re.compile(r"[^\x20-\x7e]")
_WEEK = 7 * 24 * 3600.0
_RECOVER_WAIT = 0.1  # seconds each pull for a dead predecessor's backlog waits


def check_subject(field: str, value: object) -> None:
    """Refuse what is not a NATS subject (NUL or a lone surrogate would break the wire)."""
    ok = isinstance(value, str) and _SUBJECT.match(value) is not None
    require(ok, field, value, "must be a non-empty NATS subject without spaces")
    check_text(field, value)


def _subject(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_subject(attribute.name, value)


def _name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    ok = isinstance(value, str) and _NAME.match(value) is not None
    require(ok, attribute.name, value, "must be a non-empty name without '.', '*', '>' or spaces")
    check_text(attribute.name, value)


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "event loop", "not asyncio", "nats-py runs on asyncio only"
        ) from None


@contextlib.contextmanager
def _translated(operation: str) -> Iterator[None]:
    import nats.errors  # noqa: PLC0415 - optional dependency, imported on first use

    try:
        yield
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BusUnavailableError("nats", operation, str(exc) or type(exc).__name__) from exc


async def _connect(url: str, connect_timeout: float) -> nats.aio.client.Client:
    import nats  # noqa: PLC0415 - optional dependency, imported on first use

    _require_asyncio()
    with _translated("connect"):
        # The first connection fails fast (one retry); once connected, reconnect forever:
        # a server restart must not end a long-lived consumer.
        nc = await nats.connect(
            url,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
        )
    nc.options["max_reconnect_attempts"] = -1
    return nc


def _header_text(text: str) -> str:
    """Return `text` as a one-line printable-ASCII header value."""
    return _HEADER_SAFE.sub("?", text)[:1024]


@final
@attrs.define(eq=False, kw_only=True)
class JetStreamPublisher:
    """Publish events to NATS JetStream, deduplicated by event id (asyncio only).

    The subject must belong to an existing stream (create it with the NATS CLI or
    nats-py's `add_stream`); the stream's `duplicate_window` (2 minutes by default) is how
    long a re-sent event id is recognised.

    Attributes:
        subject: The subject, or a function of the event returning it (e.g. per type).
        url: The NATS server URL.
        serializer: Encodes the payload.
        connect_timeout: Seconds to wait for the connection.
    """

    subject: str | Callable[[Event], str] = attrs.field()
    url: str = attrs.field(default="nats://127.0.0.1:4222", validator=instance_of(str))
    serializer: Serializer = attrs.field(factory=JSONSerializer, validator=instance_of(Serializer))
    connect_timeout: float = attrs.field(default=5.0, validator=[finite, gt(0)])
    _nc: nats.aio.client.Client | None = attrs.field(init=False, default=None)
    _js: nats.js.JetStreamContext | None = attrs.field(init=False, default=None)

    @subject.validator
    def _check_subject(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if not callable(value):
            _subject(self, attribute, value)

    async def publish(self, event: Event) -> None:
        """Publish `event` with `Nats-Msg-Id` set to its event id; wait for the stream's ack.

        Raises:
            PublishError: If NATS fails or no stream takes the subject (the relay retries).
            ConfigurationError: If not running on asyncio, or the subject function returned
                something that is not a NATS subject.
        """
        subject = self.subject(event) if callable(self.subject) else self.subject
        # A bad subject would not fail alone: nats-py would send a line the server cannot
        # parse, and the server would drop the whole connection.
        check_subject("subject", subject)
        body = encode_envelope(event, self.serializer)
        try:
            js = await self._context()
            with _translated("publish"):
                await js.publish(subject, body, headers={"Nats-Msg-Id": str(event.event_id)})
        except BusUnavailableError as exc:
            raise PublishError(subject, event.event_id, exc.reason) from exc

    async def aclose(self) -> None:
        """Close the connection."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _context(self) -> nats.js.JetStreamContext:
        if self._js is None:
            self._nc = await _connect(self.url, self.connect_timeout)
            self._js = self._nc.jetstream()
        return self._js


@final
@attrs.define(eq=False, kw_only=True)
class JetStreamConsumer:
    """A durable pull consumer on a JetStream stream, explicit acks (asyncio only).

    The consumer is created on first use if it does not exist (an existing one keeps its
    configuration). Before its first fetch, if the durable consumer has messages still
    awaiting acknowledgement (fetched by a process that died), it waits `ack_wait` for
    JetStream to redeliver them, gathers them all and hands them out in stream order before
    anything newer: that keeps each key's order across a crash. Run one consumer process per
    durable name when order matters (JetStream spreads one durable's messages over all its
    pullers).

    Attributes:
        stream: The stream's name.
        subject: The subject (filter) consumed; wildcards allowed.
        durable: The durable consumer name: the inbox's consumer name too.
        dead_letter_subject: Where dead-lettered messages are published (with the reason in
            the `Meshkit-Reason` header); a stream must take this subject to keep them.
        url: The NATS server URL.
        ack_wait: Seconds JetStream waits for an ack before redelivering; longer than the
            slowest handling, and than the policy's `backoff_max` plus a handling (each
            retry sends `in_progress`, which restarts it, before its backoff wait); at most
            a week.
        max_deliver: JetStream's own delivery limit (`None`: unlimited). A message past it is
            silently dropped by the server, so keep it above the `DeliveryPolicy`'s
            `max_deliveries`, which dead-letters first.
        wait_for_redeliveries: At start, wait for and reorder a dead predecessor's backlog
            (above); `False` skips that (for many pullers on one durable, no order).
        serializer: Decodes the payload.
        connect_timeout: Seconds to wait for the connection.
        clock: Time source for the start-up wait.
    """

    stream: str = attrs.field(validator=_name)
    subject: str = attrs.field(validator=_subject)
    durable: str = attrs.field(validator=_name)
    dead_letter_subject: str = attrs.field(validator=_subject)
    url: str = attrs.field(default="nats://127.0.0.1:4222", validator=instance_of(str))
    # At most a week: JetStream takes it as int64 nanoseconds, and the consumer sleeps it
    # at start while a dead predecessor's messages come back.
    ack_wait: float = attrs.field(default=30.0, validator=[finite, gt(0), le(_WEEK)])
    max_deliver: int | None = attrs.field(
        default=None, validator=[optional(instance_of(int)), optional(ge(1))]
    )
    wait_for_redeliveries: bool = attrs.field(default=True, validator=instance_of(bool))
    serializer: Serializer = attrs.field(factory=JSONSerializer, validator=instance_of(Serializer))
    connect_timeout: float = attrs.field(default=5.0, validator=[finite, gt(0)])
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _nc: nats.aio.client.Client | None = attrs.field(init=False, default=None)
    _js: nats.js.JetStreamContext | None = attrs.field(init=False, default=None)
    _sub: nats.js.JetStreamContext.PullSubscription | None = attrs.field(init=False, default=None)
    _backlog: tuple[int, int] | None = attrs.field(init=False, default=None)

    @property
    def name(self) -> str:
        """The durable name (messages are recorded in the inbox under it)."""
        return self.durable

    async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
        """Pull up to `max_messages`, waiting up to `max_wait` seconds for the first.

        The first fetch after start may return more: the whole backlog left by a dead
        predecessor, sorted back into stream order (see the class docs).

        Raises:
            BusUnavailableError: If NATS fails.
            ConfigurationError: If not running on asyncio.
        """
        sub = await self._subscription()
        if self._backlog is not None:
            messages = await self._recover(sub, max_messages)
        else:
            messages = await self._pull(sub, max_messages, max_wait)
        return [self._delivery(message) for message in messages]

    async def _pull(
        self, sub: nats.js.JetStreamContext.PullSubscription, count: int, max_wait: float
    ) -> list[nats.aio.msg.Msg]:
        try:
            with _translated("fetch"):
                return await sub.fetch(batch=count, timeout=max_wait)
        except BusUnavailableError as exc:
            # nats-py raises its TimeoutError, or asyncio's, when nothing arrived in time.
            if isinstance(exc.__cause__, TimeoutError):
                return []
            raise

    async def _recover(
        self, sub: nats.js.JetStreamContext.PullSubscription, count: int
    ) -> list[nats.aio.msg.Msg]:
        """Collect the redeliveries of what was pending at start, in stream order.

        JetStream queues expired messages for redelivery in the order they expired, which
        after a crash need not be stream order (a predecessor may have re-fetched only part
        of its own predecessor's backlog). So the backlog is gathered whole (for at most
        `ack_wait` more) and sorted; messages newer than it follow it.
        """
        assert self._backlog is not None  # noqa: S101 - the caller checks
        waiting, last_seq = self._backlog
        self._backlog = None
        backlog: list[nats.aio.msg.Msg] = []
        newer: list[nats.aio.msg.Msg] = []
        # Each empty pull waits 0.1 s on the server: give up after about `ack_wait` of them
        # (what is still missing was acknowledged late, or belongs to a live sibling).
        empty_pulls = 0
        while len(backlog) < waiting and empty_pulls * _RECOVER_WAIT < self.ack_wait:
            pulled = await self._pull(sub, max(count, waiting - len(backlog)), _RECOVER_WAIT)
            empty_pulls += not pulled
            for message in pulled:
                old = message.metadata.sequence.stream <= last_seq
                (backlog if old else newer).append(message)
        backlog.sort(key=lambda message: message.metadata.sequence.stream)
        return backlog + newer

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge the message (JetStream will not redeliver it).

        Raises:
            BusUnavailableError: If NATS fails.
        """
        with _translated("ack"):
            await _message(delivery).ack()

    async def touch(self, delivery: Delivery) -> None:
        """Send `in_progress`: JetStream restarts the message's `ack_wait`.

        Raises:
            BusUnavailableError: If NATS fails.
        """
        with _translated("touch"):
            await _message(delivery).in_progress()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish the message to `dead_letter_subject` with the reason, then terminate it.

        Raises:
            BusUnavailableError: If NATS fails.
        """
        message = _message(delivery)
        headers = {
            "Nats-Msg-Id": f"dead:{self.durable}:{delivery.message_id}",
            "Meshkit-Reason": _header_text(reason),
            "Meshkit-Source-Subject": message.subject,
            "Meshkit-Consumer": self.durable,
        }
        js = self._js
        assert js is not None  # noqa: S101 - a delivery implies a connection
        with _translated("dead_letter"):
            await js.publish(self.dead_letter_subject, message.data, headers=headers)
            await message.term()

    async def aclose(self) -> None:
        """Close the connection; unacknowledged messages are redelivered after `ack_wait`."""
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _subscription(self) -> nats.js.JetStreamContext.PullSubscription:
        if self._sub is not None:
            return self._sub
        from nats.js.api import AckPolicy, ConsumerConfig  # noqa: PLC0415 - optional dependency

        nc = await _connect(self.url, self.connect_timeout)
        js = nc.jetstream()
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1 if self.max_deliver is None else self.max_deliver,
            filter_subject=self.subject,
        )
        try:
            with _translated("subscribe"):
                sub = await js.pull_subscribe(
                    self.subject, durable=self.durable, stream=self.stream, config=config
                )
                info = await sub.consumer_info()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await nc.close()
            raise
        self._nc, self._js, self._sub = nc, js, sub
        waiting = info.num_ack_pending or 0
        if waiting and self.wait_for_redeliveries:
            # Messages a dead predecessor fetched come back once their ack_wait ends.
            await self.clock.sleep(self.ack_wait)
            delivered = info.delivered.stream_seq if info.delivered is not None else None
            self._backlog = (waiting, delivered or 0)
        return sub

    def _delivery(self, message: nats.aio.msg.Msg) -> Delivery:
        delivered = message.metadata.num_delivered or 1
        event, error = decode(decode_envelope, message.data, self.serializer)
        if event is not None:
            return Delivery.of(event, delivered=delivered, handle=message)
        headers = message.headers or {}
        message_id = (
            headers.get("Nats-Msg-Id") or f"{self.stream}:{message.metadata.sequence.stream}"
        )
        return Delivery(
            message_id=message_id,
            key="",
            delivered=delivered,
            decode_error=error,
            handle=message,
        )


def _message(delivery: Delivery) -> nats.aio.msg.Msg:
    return delivery.handle  # type: ignore[return-value]
