"""Resilience benchmarks: meshkit against its peers, in the same run.

Each benchmark round runs a tight loop of `N` calls (async: inside one event-loop run), so
pytest-benchmark's own per-round overhead does not swamp figures of a few hundred nanoseconds;
`extra_info["ns_per_call"]` holds the median round divided by `N` (`ns_per_call_min`: the
fastest round, which a shared machine disturbs least). The bare call is measured the
same way in the same group, so "overhead" is the difference of two such figures.

Groups (add new ones below, keeping the helpers at module level):

* `breaker-sync-success`, `breaker-async-success`: a successful call through a CLOSED breaker;
* `breaker-sync-open`, `breaker-async-open`: a call rejected by an OPEN breaker (raise + catch),
  next to a floor: a function that does nothing but raise.

Peers: pybreaker (sync only; its async path needs tornado), aiobreaker, circuitbreaker and
purgatory (sync and async). Purgatory is measured through a breaker fetched once from its
factory (its decorator fetches it on every call, which is slower still).
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - the async rounds run on one explicit asyncio loop
from functools import partial
from typing import TYPE_CHECKING, Any

import aiobreaker
import circuitbreaker
import pybreaker
import pytest
import stamina
import stamina.instrumentation
import tenacity
from purgatory import AsyncCircuitBreakerFactory, SyncCircuitBreakerFactory

from meshkit import CircuitOpenError
from meshkit.resilience import Bulkhead, CircuitBreaker, CircuitBreakerConfig, Pipeline, Retry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

N = 10_000


# ---------------------------------------------------------------- shared helpers


def target() -> int:
    """The protected sync call: as cheap as a call can be."""
    return 1


async def atarget() -> int:
    """The protected async call."""
    return 1


class BoomError(Exception):
    """What a failing call raises to trip the breakers."""


def boom() -> int:
    """A failing sync call."""
    raise BoomError


async def aboom() -> int:
    """A failing async call."""
    raise BoomError


def per_call(benchmark: Any, loop: Callable[[], object], n: int = N) -> None:
    """Benchmark `loop` (which makes `n` calls) and record the median nanoseconds per call."""
    benchmark(loop)
    benchmark.extra_info["n"] = n
    benchmark.extra_info["ns_per_call"] = benchmark.stats.stats.median / n * 1e9
    benchmark.extra_info["ns_per_call_min"] = benchmark.stats.stats.min / n * 1e9


@pytest.fixture
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One asyncio loop for the whole benchmark; each round is one `run_until_complete`."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def per_call_async(
    benchmark: Any,
    event_loop: asyncio.AbstractEventLoop,
    body: Callable[[], Awaitable[object]],
    n: int = N,
) -> None:
    """Benchmark the coroutine function `body` (which makes `n` calls) on `event_loop`."""
    per_call(benchmark, lambda: event_loop.run_until_complete(body()), n)


def plain_loop(fn: Callable[[], object], n: int = N) -> Callable[[], None]:
    """Return a loop making `n` calls `fn()` (a bare or a decorated function)."""

    def loop() -> None:
        for _ in range(n):
            fn()

    return loop


def call_loop(
    call: Callable[[Callable[[], int]], object], fn: Callable[[], int], n: int = N
) -> Callable[[], None]:
    """Return a loop making `n` calls `call(fn)` (a breaker's call method)."""

    def loop() -> None:
        for _ in range(n):
            call(fn)

    return loop


def rejected_plain_loop(
    fn: Callable[[], object], error: type[BaseException], n: int = N
) -> Callable[[], None]:
    """Return a loop making `n` calls `fn()`, each raising `error`, caught."""

    def loop() -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                fn()
            except error:
                pass

    return loop


def rejected_call_loop(
    call: Callable[[Callable[[], int]], object],
    fn: Callable[[], int],
    error: type[BaseException],
    n: int = N,
) -> Callable[[], None]:
    """Return a loop making `n` calls `call(fn)`, each raising `error`, caught."""

    def loop() -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                call(fn)
            except error:
                pass

    return loop


def aplain_body(fn: Callable[[], Awaitable[object]], n: int = N) -> Callable[[], Awaitable[None]]:
    """Return a coroutine function making `n` calls `await fn()`."""

    async def body() -> None:
        for _ in range(n):
            await fn()

    return body


def acall_body(
    call: Callable[[Callable[[], Awaitable[int]]], Awaitable[object]],
    fn: Callable[[], Awaitable[int]],
    n: int = N,
) -> Callable[[], Awaitable[None]]:
    """Return a coroutine function making `n` calls `await call(fn)`."""

    async def body() -> None:
        for _ in range(n):
            await call(fn)

    return body


def arejected_plain_body(
    fn: Callable[[], Awaitable[object]], error: type[BaseException], n: int = N
) -> Callable[[], Awaitable[None]]:
    """Return a coroutine function making `n` calls `await fn()`, each raising `error`."""

    async def body() -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                await fn()
            except error:
                pass

    return body


def arejected_call_body(
    call: Callable[[Callable[[], Awaitable[int]]], Awaitable[object]],
    fn: Callable[[], Awaitable[int]],
    error: type[BaseException],
    n: int = N,
) -> Callable[[], Awaitable[None]]:
    """Return a coroutine function making `n` calls `await call(fn)`, each raising `error`."""

    async def body() -> None:
        for _ in range(n):
            try:  # noqa: SIM105 - contextlib.suppress would add its own cost
                await call(fn)
            except error:
                pass

    return body


def trip_sync(call: Callable[[Callable[[], int]], object], times: int = 10) -> None:
    """Fail `times` calls through a sync breaker's `call` so that it opens."""
    for _ in range(times):
        try:
            call(boom)
        except Exception:  # noqa: S112 - the failures (and then rejections) are the point
            continue


# ---------------------------------------------------------------- breaker: peers


def meshkit_breaker() -> CircuitBreaker:
    """meshkit's breaker with the usual "5 failures, then open 60 s" policy."""
    return CircuitBreaker(CircuitBreakerConfig(failure_threshold=5, open_duration=60))


def circuitbreaker_breaker() -> Any:
    """A `circuitbreaker` breaker with the same policy."""
    return circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=60)


def purgatory_sync() -> Any:
    """A purgatory sync breaker, fetched once from its factory."""
    return SyncCircuitBreakerFactory(default_threshold=5, default_ttl=60).get_breaker("b")


def purgatory_with(brk: Any, fn: Callable[[], int]) -> int:
    """Call `fn` inside purgatory's context manager (its only way to protect a call)."""
    with brk:
        return fn()


# ---------------------------------------------------------------- breaker: sync success


@pytest.mark.benchmark(group="breaker-sync-success")
class TestBreakerSyncSuccess:
    def test_bare_call(self, benchmark: Any) -> None:
        per_call(benchmark, plain_loop(target))

    def test_meshkit(self, benchmark: Any) -> None:
        per_call(benchmark, call_loop(meshkit_breaker().call_sync, target))

    def test_meshkit_decorated(self, benchmark: Any) -> None:
        per_call(benchmark, plain_loop(meshkit_breaker()(target)))

    def test_pybreaker(self, benchmark: Any) -> None:
        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
        per_call(benchmark, call_loop(breaker.call, target))

    def test_aiobreaker(self, benchmark: Any) -> None:
        per_call(benchmark, call_loop(aiobreaker.CircuitBreaker(fail_max=5).call, target))

    def test_circuitbreaker(self, benchmark: Any) -> None:
        # Its decorator is the API that checks the state (its `call()` does not).
        per_call(benchmark, plain_loop(circuitbreaker_breaker()(target)))

    def test_purgatory(self, benchmark: Any) -> None:
        brk, n = purgatory_sync(), N // 10

        def loop() -> None:
            for _ in range(n):
                with brk:
                    target()

        per_call(benchmark, loop, n)


# ---------------------------------------------------------------- breaker: async success


@pytest.mark.benchmark(group="breaker-async-success")
class TestBreakerAsyncSuccess:
    def test_bare_call(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        per_call_async(benchmark, event_loop, aplain_body(atarget))

    def test_meshkit(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        per_call_async(benchmark, event_loop, acall_body(meshkit_breaker().call, atarget))

    def test_meshkit_decorated(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        per_call_async(benchmark, event_loop, aplain_body(meshkit_breaker()(atarget)))

    def test_aiobreaker(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        call = aiobreaker.CircuitBreaker(fail_max=5).call_async
        per_call_async(benchmark, event_loop, acall_body(call, atarget))

    def test_circuitbreaker(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        per_call_async(benchmark, event_loop, aplain_body(circuitbreaker_breaker()(atarget)))

    def test_purgatory(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)
        brk = event_loop.run_until_complete(factory.get_breaker("b"))
        n = N // 10

        async def body() -> None:
            for _ in range(n):
                async with brk:
                    await atarget()

        per_call_async(benchmark, event_loop, body, n)


# ---------------------------------------------------------------- breaker: open rejection


def raise_floor() -> int:
    """The least a rejection can cost: raise a fresh exception from one function frame."""
    raise BoomError


async def araise_floor() -> int:
    """The async twin of `raise_floor`."""
    raise BoomError


@pytest.mark.benchmark(group="breaker-sync-open")
class TestBreakerSyncOpen:
    def test_floor_raise(self, benchmark: Any) -> None:
        per_call(benchmark, rejected_plain_loop(raise_floor, BoomError))

    def test_meshkit(self, benchmark: Any) -> None:
        call = meshkit_breaker().call_sync
        trip_sync(call)
        per_call(benchmark, rejected_call_loop(call, target, CircuitOpenError))

    def test_meshkit_decorated(self, benchmark: Any) -> None:
        breaker = meshkit_breaker()
        trip_sync(breaker.call_sync)
        per_call(benchmark, rejected_plain_loop(breaker(target), CircuitOpenError))

    def test_pybreaker(self, benchmark: Any) -> None:
        call = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60).call
        trip_sync(call)
        per_call(benchmark, rejected_call_loop(call, target, pybreaker.CircuitBreakerError))

    def test_aiobreaker(self, benchmark: Any) -> None:
        call = aiobreaker.CircuitBreaker(fail_max=5).call
        trip_sync(call)
        per_call(benchmark, rejected_call_loop(call, target, aiobreaker.CircuitBreakerError))

    def test_circuitbreaker(self, benchmark: Any) -> None:
        breaker = circuitbreaker_breaker()
        trip_sync(lambda fn: breaker(fn)())
        error = circuitbreaker.CircuitBreakerError
        per_call(benchmark, rejected_plain_loop(breaker(target), error))

    def test_purgatory(self, benchmark: Any) -> None:
        brk, n = purgatory_sync(), N // 10
        trip_sync(lambda fn: purgatory_with(brk, fn))

        def loop() -> None:
            for _ in range(n):
                try:
                    with brk:
                        target()
                except Exception:  # noqa: S112 - purgatory raises its OpenedState
                    continue

        per_call(benchmark, loop, n)


@pytest.mark.benchmark(group="breaker-async-open")
class TestBreakerAsyncOpen:
    def test_floor_raise(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        per_call_async(benchmark, event_loop, arejected_plain_body(araise_floor, BoomError))

    def test_meshkit(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        call = meshkit_breaker().call
        trip_sync(lambda fn: event_loop.run_until_complete(call(aboom)))
        per_call_async(benchmark, event_loop, arejected_call_body(call, atarget, CircuitOpenError))

    def test_aiobreaker(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        call = aiobreaker.CircuitBreaker(fail_max=5).call_async
        trip_sync(lambda fn: event_loop.run_until_complete(call(aboom)))
        error = aiobreaker.CircuitBreakerError
        per_call_async(benchmark, event_loop, arejected_call_body(call, atarget, error))

    def test_circuitbreaker(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        breaker = circuitbreaker_breaker()
        trip_sync(lambda fn: event_loop.run_until_complete(breaker(aboom)()))
        error = circuitbreaker.CircuitBreakerError
        per_call_async(benchmark, event_loop, arejected_plain_body(breaker(atarget), error))

    def test_purgatory(self, benchmark: Any, event_loop: asyncio.AbstractEventLoop) -> None:
        factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)
        brk = event_loop.run_until_complete(factory.get_breaker("b"))
        n = N // 10

        async def failing() -> None:
            async with brk:
                await aboom()

        trip_sync(lambda _fn: event_loop.run_until_complete(failing()))

        async def body() -> None:
            for _ in range(n):
                try:
                    async with brk:
                        await atarget()
                except Exception:  # noqa: S112 - purgatory raises its OpenedState
                    continue

        per_call_async(benchmark, event_loop, body, n)


# ---------------------------------------------------------------- pipeline
#
# Groups `pipeline-async-success` and `pipeline-sync-success`: one successful call through
# timeout + retry + breaker + bulkhead, against tenacity and stamina alone (retry only, one
# successful attempt), and against meshkit's pipeline without a timeout (no cancel scope).

PIPELINE_N = 2_000

tenacity_async = tenacity.retry(
    stop=tenacity.stop_after_attempt(3),
    wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=5.0),
)(atarget)
tenacity_sync = tenacity.retry(
    stop=tenacity.stop_after_attempt(3),
    wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=5.0),
)(target)
stamina_async = stamina.retry(on=Exception, attempts=3)(atarget)
stamina_sync = stamina.retry(on=Exception, attempts=3)(target)


@pytest.fixture(autouse=True, scope="module")
def _quiet_stamina() -> Iterator[None]:
    """Measure stamina's retry machinery, not its logging/metrics hooks."""
    stamina.instrumentation.set_on_retry_hooks([])
    yield
    stamina.instrumentation.set_on_retry_hooks(None)


def full_pipeline(*, timeout: bool = True) -> Pipeline:
    """Timeout + retry + breaker + bulkhead, as the issue's target describes."""
    return Pipeline(
        timeout=5.0 if timeout else None,
        retry=Retry(max_attempts=3),
        breaker=CircuitBreaker(),
        bulkhead=Bulkhead(max_concurrent=100),
    )


def async_loop(call: Callable[[], Awaitable[object]], n: int) -> Callable[[], Awaitable[None]]:
    """Return a coroutine function awaiting `call()` `n` times."""

    async def body() -> None:
        for _ in range(n):
            await call()

    return body


PIPELINE_ASYNC: dict[str, Callable[[], Callable[[], Awaitable[object]]]] = {
    "bare": lambda: atarget,
    "meshkit-pipeline": lambda: partial(full_pipeline().call, atarget),
    "meshkit-pipeline-no-timeout": lambda: partial(full_pipeline(timeout=False).call, atarget),
    "tenacity-retry-only": lambda: tenacity_async,
    "stamina-retry-only": lambda: stamina_async,
}

PIPELINE_SYNC: dict[str, Callable[[], Callable[[], object]]] = {
    "bare": lambda: target,
    "meshkit-pipeline": lambda: partial(full_pipeline().call_sync, target),
    "meshkit-pipeline-no-timeout": lambda: partial(full_pipeline(timeout=False).call_sync, target),
    "tenacity-retry-only": lambda: tenacity_sync,
    "stamina-retry-only": lambda: stamina_sync,
}


@pytest.mark.benchmark(group="pipeline-async-success")
@pytest.mark.parametrize("name", list(PIPELINE_ASYNC))
def test_pipeline_async_success(
    benchmark: Any, event_loop: asyncio.AbstractEventLoop, name: str
) -> None:
    call = PIPELINE_ASYNC[name]()
    assert event_loop.run_until_complete(call()) == 1
    per_call_async(benchmark, event_loop, async_loop(call, PIPELINE_N), PIPELINE_N)


@pytest.mark.benchmark(group="pipeline-sync-success")
@pytest.mark.parametrize("name", list(PIPELINE_SYNC))
def test_pipeline_sync_success(benchmark: Any, name: str) -> None:
    call = PIPELINE_SYNC[name]()
    assert call() == 1
    per_call(benchmark, plain_loop(call, PIPELINE_N), PIPELINE_N)
