"""Tests for meshkit.resilience.RedisRateLimiter, against the real Redis."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import redis

from meshkit import ConfigurationError, RateLimiterUnavailableError, RateLimitExceededError
from meshkit.resilience import RedisRateLimiter, RedisRateLimiterStatistics
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

UNREACHABLE = "redis://127.0.0.1:1/0"
"""Nothing listens on port 1: connecting is refused at once."""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis, closed afterwards."""
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def _limiter(client: redis.Redis, prefix: str, **kwargs: Any) -> RedisRateLimiter:
    return RedisRateLimiter(client=client, prefix=prefix, **kwargs)


def _count_admitted(limiter: RedisRateLimiter, attempts: int) -> int:
    admitted = 0
    for _ in range(attempts):
        try:
            limiter.acquire_nowait()
            admitted += 1
        except RateLimitExceededError:
            pass
    return admitted


class TestConfiguration:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("rate", 0),
            ("rate", "x"),
            ("burst", -1),
            ("max_wait", -1),
            ("name", 1),
            ("name", ""),
            ("prefix", None),
            ("fail_open", "yes"),
            ("clock", 1),
        ],
    )
    def test_bad_setting_names_field_and_value(
        self, client: redis.Redis, field: str, value: object
    ) -> None:
        """Each invalid setting raises ConfigurationError naming the field and the value."""
        kwargs: dict[str, Any] = {"rate": 1.0, field: value}
        with pytest.raises(ConfigurationError) as info:
            RedisRateLimiter(client=client, **kwargs)
        assert info.value.field == field

    @pytest.mark.parametrize("client", [None, "redis://127.0.0.1:6379/0", redis.Redis])
    def test_client_must_be_a_client(self, client: object) -> None:
        """A client that is not a Redis client is refused when built, not at the first call."""
        with pytest.raises(ConfigurationError) as info:
            RedisRateLimiter(client=client, rate=1.0)  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == ("client", client)

    def test_key_and_default_burst(self, client: redis.Redis, redis_prefix: str) -> None:
        """The bucket key is prefix + name, and burst defaults to max(1, rate)."""
        limiter = _limiter(client, redis_prefix, rate=0.2, name="orders")
        assert limiter.key == f"{redis_prefix}orders"
        assert limiter.burst == 1.0

    def test_bad_token_count(self, client: redis.Redis, redis_prefix: str) -> None:
        """Asking for more than burst is a ConfigurationError, before any round trip."""
        limiter = _limiter(client, redis_prefix, rate=1, burst=2)
        with pytest.raises(ConfigurationError):
            limiter.acquire_nowait(3)


class TestBucket:
    def test_burst_then_reject_with_retry_after(
        self, client: redis.Redis, redis_prefix: str
    ) -> None:
        """A fresh bucket admits burst calls, then rejects with a plausible retry_after."""
        limiter = _limiter(client, redis_prefix, rate=0.5, burst=3, name="api")
        assert _count_admitted(limiter, 3) == 3
        with pytest.raises(RateLimitExceededError) as info:
            limiter.acquire_nowait()
        assert info.value.name == "api"
        assert 1.9 < info.value.retry_after <= 2.0
        assert limiter.statistics() == RedisRateLimiterStatistics(
            name="api", key=limiter.key, admitted=3, rejected=1, unavailable=0
        )

    def test_key_expires_when_it_would_be_full(
        self, client: redis.Redis, redis_prefix: str
    ) -> None:
        """The bucket key has a TTL of about the time to refill, so idle buckets vanish."""
        limiter = _limiter(client, redis_prefix, rate=2, burst=10)
        limiter.acquire_nowait(4)
        ttl = client.pttl(limiter.key)
        assert 2000 < ttl <= 3000

    def test_two_replicas_share_one_bucket(
        self, client: redis.Redis, redis_url: str, redis_prefix: str
    ) -> None:
        """Two limiters with the same name (two replicas) draw from one bucket."""
        first = _limiter(client, redis_prefix, rate=0.001, burst=5)
        second = RedisRateLimiter.from_url(redis_url, rate=0.001, burst=5, prefix=redis_prefix)
        try:
            assert _count_admitted(first, 3) == 3
            assert _count_admitted(second, 5) == 2
        finally:
            second.close()

    def test_eight_threads_two_replicas_admit_exactly_burst(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """8 threads over 2 replicas hammering one key are admitted exactly burst times."""
        replicas = [
            RedisRateLimiter.from_url(redis_url, rate=0.001, burst=40, prefix=redis_prefix)
            for _ in range(2)
        ]
        admitted: list[int] = []
        lock = threading.Lock()

        def hammer(limiter: RedisRateLimiter) -> None:
            mine = _count_admitted(limiter, 15)
            with lock:
                admitted.append(mine)

        threads = [threading.Thread(target=hammer, args=(replicas[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for limiter in replicas:
            limiter.close()
        assert sum(admitted) == 40
        assert sum(r.statistics().rejected for r in replicas) == 80

    def test_uses_redis_time_not_the_local_clock(
        self, client: redis.Redis, redis_prefix: str
    ) -> None:
        """A replica whose clock is far ahead sees the same bucket as the others."""
        skewed = FakeClock(start=1e9)
        ahead = _limiter(client, redis_prefix, rate=0.001, burst=2, clock=skewed)
        normal = _limiter(client, redis_prefix, rate=0.001, burst=2)
        ahead.acquire_nowait()
        normal.acquire_nowait()
        with pytest.raises(RateLimitExceededError):
            ahead.acquire_nowait()

    def test_noscript_falls_back_to_eval(self, client: redis.Redis, redis_prefix: str) -> None:
        """When the server does not know the script's SHA, EVAL runs (and caches) it."""
        limiter = _limiter(client, redis_prefix, rate=1, burst=2)
        limiter._sha = "0" * 40
        limiter.acquire_nowait()
        assert client.hget(limiter.key, "tokens") is not None


class TestWaiting:
    def test_acquire_sync_waits_on_the_clock(self, client: redis.Redis, redis_prefix: str) -> None:
        """acquire_sync reserves in Redis, then sleeps the wait on the local clock."""
        clock = FakeClock()
        limiter = _limiter(client, redis_prefix, rate=0.001, burst=1, clock=clock)
        limiter.acquire_sync()
        limiter.acquire_sync()
        assert 999 < clock.now() <= 1000

    def test_max_wait_refuses_long_waits(self, client: redis.Redis, redis_prefix: str) -> None:
        """A wait longer than max_wait is refused at once and reserves nothing."""
        clock = FakeClock()
        limiter = _limiter(client, redis_prefix, rate=1, burst=1, max_wait=0.5, clock=clock)
        limiter.acquire_sync()
        with pytest.raises(RateLimitExceededError):
            limiter.acquire_sync()
        assert clock.now() == 0.0

    async def test_async_acquire_and_call(self, client: redis.Redis, redis_prefix: str) -> None:
        """acquire() runs the script in a thread and sleeps on the clock; call() wraps it."""
        clock = FakeClock()
        limiter = _limiter(client, redis_prefix, rate=0.001, burst=2, clock=clock)

        @limiter
        async def work(x: int) -> int:
            return x * 2

        assert await work(2) == 4
        await limiter.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire)
            await clock.wait_sleepers(1)
            clock.advance(1000)
        assert limiter.statistics().admitted == 3

    def test_call_sync_and_decorator(self, client: redis.Redis, redis_prefix: str) -> None:
        """call_sync and @limiter on a plain function take a token first."""
        limiter = _limiter(client, redis_prefix, rate=0.001, burst=2, max_wait=0)

        @limiter
        def add(a: int, b: int) -> int:
            return a + b

        assert add(1, 2) == 3
        assert limiter.call_sync(max, 1, 5) == 5
        with pytest.raises(RateLimitExceededError):
            add(0, 0)

    async def test_async_call(self, client: redis.Redis, redis_prefix: str) -> None:
        """call() takes a token, then awaits the function."""
        limiter = _limiter(client, redis_prefix, rate=0.001, burst=1, max_wait=0)

        async def answer() -> int:
            return 42

        assert await limiter.call(answer) == 42
        with pytest.raises(RateLimitExceededError):
            await limiter.call(answer)


class TestUnavailable:
    def test_fails_closed_by_default(self) -> None:
        """With Redis unreachable, acquisitions raise RateLimiterUnavailableError (chained)."""
        limiter = RedisRateLimiter.from_url(UNREACHABLE, rate=1, name="api", socket_timeout=0.5)
        with pytest.raises(RateLimiterUnavailableError) as info:
            limiter.acquire_nowait()
        assert info.value.name == "api"
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert limiter.statistics().unavailable == 1
        limiter.close()

    async def test_fail_open_admits(self) -> None:
        """With fail_open, acquisitions succeed while Redis is unreachable."""
        limiter = RedisRateLimiter.from_url(UNREACHABLE, rate=1, fail_open=True, socket_timeout=0.5)
        await limiter.acquire()
        stats = limiter.statistics()
        assert (stats.admitted, stats.unavailable) == (1, 1)
        limiter.close()
