"""The pure delivery decisions: handle, retry with backoff, or dead-letter; and key lanes.

Nothing here waits or does I/O, so hypothesis drives it directly. The `Dispatcher` asks
`Attempts.start()` what to do with a fresh delivery and `Attempts.failed()` what to do after
its handler failed; it acknowledges only after `succeeded()`, i.e. once the handler's work
has committed.
"""

from __future__ import annotations

import zlib
from typing import final

import attrs

from meshkit._validate import finite, ge, instance_of, optional

__all__ = ["Attempts", "DeadLetterIt", "DeliveryPolicy", "Handle", "RetryLater", "lane_of"]


@attrs.frozen(kw_only=True)
class DeliveryPolicy:
    """How often and how patiently a message is retried before it is dead-lettered.

    Attributes:
        max_deliveries: Handler attempts per message, counting the bus's earlier
            deliveries (a process that crashed while handling it counts as one), before it
            goes to the dead-letter place (`None`: retry forever, never dead-letter).
        backoff_initial: Seconds before the first retry; doubled on each further one.
        backoff_max: The cap on the backoff.
    """

    max_deliveries: int | None = attrs.field(
        default=5, validator=[optional(instance_of(int)), optional(ge(1))]
    )
    backoff_initial: float = attrs.field(default=0.1, validator=[finite, ge(0)])
    backoff_max: float = attrs.field(default=30.0, validator=[finite, ge(0)])

    def backoff(self, failures: int) -> float:
        """Return the delay after the `failures`-th failure (1-based), capped."""
        # A float power, capped in the exponent: `2 ** 5000` as an int cannot become a float.
        return min(self.backoff_initial * 2.0 ** min(max(failures, 1) - 1, 1000), self.backoff_max)


@final
@attrs.frozen
class Handle:
    """Call the handler (inside an inbox transaction)."""


@final
@attrs.frozen
class RetryLater:
    """Wait `delay` seconds, then call the handler again."""

    delay: float


@final
@attrs.frozen
class DeadLetterIt:
    """Send the message to the dead-letter place with `reason`, then acknowledge it."""

    reason: str


Decision = Handle | RetryLater | DeadLetterIt


@final
@attrs.define(eq=False)
class Attempts:
    """The retry bookkeeping of one delivery: a tiny state machine with no I/O.

    Attributes:
        policy: The retry policy.
        delivered: How many times the bus has delivered the message, this time included.
    """

    policy: DeliveryPolicy
    delivered: int = attrs.field(validator=[instance_of(int), ge(1)])
    _failures: int = attrs.field(init=False, default=0)

    @property
    def attempts(self) -> int:
        """Handler attempts charged to the message: earlier deliveries plus local failures."""
        return self.delivered - 1 + self._failures

    def start(self, decode_error: str | None) -> Decision:
        """Decide what to do with the delivery as it arrives.

        An undecodable message is dead-lettered at once: retrying cannot fix its bytes. A
        message delivered more often than the policy allows (the process died while
        handling it each time: a poison message) is dead-lettered without a further try.
        """
        if decode_error is not None:
            return DeadLetterIt(f"undecodable message: {decode_error}")
        limit = self.policy.max_deliveries
        if limit is not None and self.delivered > limit:
            return DeadLetterIt(f"delivered {self.delivered} times without an acknowledgement")
        return Handle()

    def failed(self, error: str) -> Decision:
        """Decide what follows the handler's failure with `error` (a repr)."""
        self._failures += 1
        limit = self.policy.max_deliveries
        if limit is not None and self.attempts >= limit:
            return DeadLetterIt(f"handler failed {self.attempts} times; last error: {error}")
        return RetryLater(self.policy.backoff(self._failures))


def lane_of(key: str, lanes: int) -> int:
    """Return the lane (0..lanes-1) that handles `key`: one key, one lane, so order holds.

    crc32 rather than `hash()`: the same key maps to the same lane in every process.
    """
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % lanes
