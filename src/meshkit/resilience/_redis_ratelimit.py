"""RedisRateLimiter: one token bucket in Redis, shared by every replica of a service.

The check-and-take runs as one Lua script (EVALSHA, falling back to EVAL when the server
answers NOSCRIPT), so concurrent callers on any number of replicas cannot both take the last
token. The script reads the time with Redis' own `TIME`, so replicas whose clocks disagree
still agree on the bucket. Each bucket key lives under `prefix` and expires once it would be
full again, so idle buckets vanish.

`redis` is imported only when a limiter is built. Its asyncio client does not run on trio, so
async callers run the blocking client in a worker thread (`anyio.to_thread.run_sync`).
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any, final

import anyio.to_thread
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import RateLimiterUnavailableError, RateLimitExceededError
from meshkit._validate import finite, ge, gt, instance_of, non_empty_str, optional, require
from meshkit.resilience._common import TokenCalls, default_burst
from meshkit.resilience._ratelimit import check_tokens

if TYPE_CHECKING:
    import redis

__all__ = ["RedisRateLimiter", "RedisRateLimiterStatistics"]


_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local requested = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
local wait = (requested - tokens) / rate
if wait <= tolerance then
  wait = 0
end
if max_wait >= 0 and wait > max_wait then
  return {0, string.format('%.17g', wait)}
end
tokens = tokens - requested
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {1, string.format('%.17g', wait)}
"""
_SHA = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
_TOLERANCE = 1e-6
"""Redis' TIME has microsecond resolution: a shorter wait counts as none."""


def _redis_client(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    is_client = not isinstance(value, type) and all(
        callable(getattr(value, method, None)) for method in ("evalsha", "eval", "close")
    )
    require(is_client, attribute.name, value, "must be a redis.Redis client")


@final
@attrs.frozen(kw_only=True)
class RedisRateLimiterStatistics:
    """What this replica's limiter has seen (the bucket itself lives in Redis).

    Attributes:
        name: The limiter's name.
        key: The Redis key of the bucket.
        admitted: Acquisitions granted by Redis (or let through while it was unreachable
            and `fail_open` is set).
        rejected: Acquisitions refused with `RateLimitExceededError`.
        unavailable: Acquisitions during which Redis could not be reached.
    """

    name: str
    key: str
    admitted: int
    rejected: int
    unavailable: int


@final
@attrs.define(eq=False, kw_only=True)
class RedisRateLimiter(TokenCalls):
    """A token bucket kept in Redis, so that every replica of a service shares one limit.

    It has the `RateLimiter` interface. Each acquisition is one round trip running an atomic
    Lua script; a caller that may wait reserves its tokens in that same round trip and then
    sleeps on the local clock (a duration, so clock skew does not matter). A cancelled wait
    keeps its reservation: refunding it would need another round trip during cancellation.

    When Redis cannot be reached, the limiter fails closed by default: it raises
    `RateLimiterUnavailableError` (chained to the redis error). With `fail_open=True` it
    admits the call instead, preferring availability over the limit.

    Attributes:
        client: A synchronous `redis.Redis` client (it has its own connection pool).
        rate: Tokens added per second (> 0).
        burst: The bucket's capacity, also its initial content; defaults to `max(1, rate)`.
        max_wait: Longest wait `acquire()` accepts, in seconds; `None` (the default) waits as
            long as needed, 0 never waits.
        name: The bucket's name; its key is `prefix + name`.
        prefix: The key prefix.
        fail_open: Admit calls while Redis is unreachable instead of raising.
        clock: The time source for waits (the bucket itself uses Redis' clock).

    Raises:
        ConfigurationError: If a setting is out of range.
    """

    client: redis.Redis = attrs.field(validator=_redis_client)
    rate: float = attrs.field(validator=[gt(0), finite])
    burst: float = attrs.field(
        default=attrs.Factory(default_burst, takes_self=True), validator=[gt(0), finite]
    )
    max_wait: float | None = attrs.field(default=None, validator=optional([ge(0), finite]))
    name: str = attrs.field(default="ratelimiter", validator=non_empty_str)
    prefix: str = attrs.field(default="meshkit:ratelimit:", validator=instance_of(str))
    fail_open: bool = attrs.field(default=False, validator=instance_of(bool))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _sha: str = attrs.field(init=False, default=_SHA)
    _redis_error: type[Exception] = attrs.field(init=False)
    _noscript_error: type[Exception] = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _counts: dict[str, int] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        import redis.exceptions  # noqa: PLC0415 - optional dependency, imported when used

        self._redis_error = redis.exceptions.RedisError
        self._noscript_error = redis.exceptions.NoScriptError

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        rate: float,
        burst: float | None = None,
        max_wait: float | None = None,
        name: str = "ratelimiter",
        prefix: str = "meshkit:ratelimit:",
        fail_open: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        socket_timeout: float = 1.0,
    ) -> RedisRateLimiter:
        """Build a limiter with its own client for the Redis at `url`.

        Args:
            url: A Redis URL, such as `redis://127.0.0.1:6379/0`.
            rate: See the class.
            burst: See the class; `None` means `max(1, rate)`.
            max_wait: See the class.
            name: See the class.
            prefix: See the class.
            fail_open: See the class.
            clock: See the class.
            socket_timeout: Seconds a connection or command may take before the limiter
                counts Redis as unreachable.

        Returns:
            The limiter; `close()` closes its client.

        Raises:
            ConfigurationError: If a setting is out of range.
        """
        import redis  # noqa: PLC0415 - optional dependency, imported when used

        client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        extra = {} if burst is None else {"burst": burst}
        return cls(
            client=client,
            rate=rate,
            max_wait=max_wait,
            name=name,
            prefix=prefix,
            fail_open=fail_open,
            clock=clock,
            **extra,
        )

    @property
    def key(self) -> str:
        """The Redis key of this limiter's bucket."""
        return self.prefix + self.name

    def close(self) -> None:
        """Close the Redis client (and its connection pool)."""
        self.client.close()

    # ------------------------------------------------------------ acquiring

    def acquire_nowait(self, tokens: float = 1) -> None:
        """Take `tokens` now or fail (one blocking round trip to Redis).

        Raises:
            RateLimitExceededError: If they are not available; `retry_after` says when.
            RateLimiterUnavailableError: If Redis is unreachable and `fail_open` is off.
            ConfigurationError: If `tokens` is not in `(0, burst]`.
        """
        self._reserve(tokens, 0.0)

    async def acquire(self, tokens: float = 1) -> None:
        """Take `tokens`, waiting for them (at most `max_wait`); Redis is called in a thread.

        Raises:
            RateLimitExceededError: At once, if the wait would exceed `max_wait`.
            RateLimiterUnavailableError: If Redis is unreachable and `fail_open` is off.
            ConfigurationError: If `tokens` is not in `(0, burst]`.
        """
        wait = await anyio.to_thread.run_sync(self._reserve, tokens, self.max_wait)
        if wait > 0:
            await self.clock.sleep(wait)

    def acquire_sync(self, tokens: float = 1) -> None:
        """Take `tokens` from a thread, blocking for them (at most `max_wait`).

        Raises:
            RateLimitExceededError: At once, if the wait would exceed `max_wait`.
            RateLimiterUnavailableError: If Redis is unreachable and `fail_open` is off.
            ConfigurationError: If `tokens` is not in `(0, burst]`.
        """
        wait = self._reserve(tokens, self.max_wait)
        if wait > 0:
            self.clock.sleep_sync(wait)

    def _reserve(self, tokens: float, max_wait: float | None) -> float:
        """Run the script; return the wait for the reserved tokens, or raise if refused."""
        check_tokens(tokens, self.burst)
        try:
            granted, wait = self._run_script(tokens, max_wait)
        except self._redis_error as exc:
            self._count("unavailable")
            if not self.fail_open:
                raise RateLimiterUnavailableError(self.name, str(exc)) from exc
            granted, wait = True, 0.0
        if not granted:
            self._count("rejected")
            raise RateLimitExceededError(self.name, wait)
        self._count("admitted")
        return wait

    def _run_script(self, tokens: float, max_wait: float | None) -> tuple[bool, float]:
        args = (
            repr(float(self.rate)),
            repr(float(self.burst)),
            repr(float(tokens)),
            repr(-1.0 if max_wait is None else float(max_wait)),
            repr(_TOLERANCE),
        )
        try:
            reply = self.client.evalsha(self._sha, 1, self.key, *args)
        except self._noscript_error:
            reply = self.client.eval(_SCRIPT, 1, self.key, *args)
        granted, wait = reply
        return bool(granted), float(wait)

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + 1

    # ------------------------------------------------------------ calling through it

    def statistics(self) -> RedisRateLimiterStatistics:
        """Return this replica's counters."""
        with self._lock:
            counts = dict(self._counts)
        return RedisRateLimiterStatistics(
            name=self.name,
            key=self.key,
            admitted=counts.get("admitted", 0),
            rejected=counts.get("rejected", 0),
            unavailable=counts.get("unavailable", 0),
        )
