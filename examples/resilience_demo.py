"""A flaky in-process service and a resilient caller: retries, the breaker, recovery.

Run it with `make demo` (or `python examples/resilience_demo.py`). It needs no server and
takes about four seconds of real time. The "inventory service" below answers normally, then
has an outage, then recovers; the caller goes through a `meshkit.resilience.Pipeline` and
prints what each policy did:

- while the service is healthy, calls succeed on the first attempt;
- when it starts failing, `Retry` retries with jittered backoff, then the breaker opens and
  calls fail fast with `CircuitOpenError` (no load on the broken service);
- after the open duration the breaker goes HALF_OPEN and lets one probe through; probes fail
  while the outage lasts (back to OPEN), and the first that succeeds closes the breaker.
"""

from __future__ import annotations

import time

import anyio

from meshkit import CircuitOpenError, MeshkitError
from meshkit.resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitCallRecorded,
    CircuitStateChange,
    ExponentialBackoff,
    Pipeline,
    Retry,
    RetryEvent,
)

START = time.monotonic()


def stamp() -> str:
    """Return the seconds since the demo started, for the log lines."""
    return f"[{time.monotonic() - START:5.2f}s]"


class InventoryUnavailableError(Exception):
    """The inventory service answered with an error."""


class FlakyInventoryService:
    """Healthy, then down between `outage_start` and `outage_end` seconds, then healthy."""

    def __init__(self, outage_start: float, outage_end: float) -> None:
        self.outage_start = outage_start
        self.outage_end = outage_end
        self.requests = 0

    async def reserve(self, sku: str) -> str:
        """Reserve one unit of `sku`, or fail during the outage."""
        self.requests += 1
        await anyio.sleep(0.01)  # the service's own work
        elapsed = time.monotonic() - START
        if self.outage_start <= elapsed < self.outage_end:
            msg = f"inventory down (request #{self.requests})"
            raise InventoryUnavailableError(msg)
        return f"reserved {sku}"


class BreakerLog:
    """Print the breaker's state changes as they happen."""

    def on_state_change(self, event: CircuitStateChange) -> None:
        """Print a state change."""
        print(f"{stamp()}   breaker {event.from_state.name} -> {event.to_state.name}")

    def on_call(self, event: CircuitCallRecorded) -> None:
        """Calls are printed by the caller; nothing to do here."""


def on_retry(event: RetryEvent) -> None:
    """Print each retry the pipeline makes."""
    print(
        f"{stamp()}   attempt {event.attempt} failed ({event.error}); retry in {event.delay:.2f}s"
    )


async def main() -> None:
    """Send a request every 150 ms for about four seconds and report each outcome."""
    service = FlakyInventoryService(outage_start=0.6, outage_end=2.2)
    breaker = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=3, open_duration=0.5),
        name="inventory",
    )
    breaker.add_listener(BreakerLog())
    pipeline = Pipeline(
        timeout=1.0,
        retry=Retry(
            max_attempts=3,
            backoff=ExponentialBackoff(base=0.02, cap=0.1),
            on_retry=on_retry,
        ),
        breaker=breaker,
        attempt_timeout=0.25,
    )
    print("meshkit resilience demo: inventory is healthy, then down from 0.6s to 2.2s\n")
    for number in range(1, 27):
        outcome = await pipeline.call_with_details(service.reserve, f"sku-{number}")
        state = breaker.state.name
        if outcome.succeeded:
            print(
                f"{stamp()} request {number:2}: {outcome.value} "
                f"after {outcome.attempts} attempt(s)   [breaker {state}]"
            )
        elif isinstance(outcome.error, CircuitOpenError) and outcome.attempts > 1:
            print(
                f"{stamp()} request {number:2}: half-open probe failed, circuit open again "
                f"(retry after {outcome.error.retry_after:.2f}s)   [breaker {state}]"
            )
        elif isinstance(outcome.error, CircuitOpenError):
            print(
                f"{stamp()} request {number:2}: rejected fast, circuit open "
                f"(retry after {outcome.error.retry_after:.2f}s)   [breaker {state}]"
            )
        else:
            kind = type(outcome.error).__name__
            print(
                f"{stamp()} request {number:2}: failed with {kind} "
                f"after {outcome.attempts} attempt(s)   [breaker {state}]"
            )
        await anyio.sleep(0.15)
    stats = breaker.statistics()
    print(
        f"\nthe service saw {service.requests} of the requests; the breaker counted "
        f"{stats.successful_calls} successes, {stats.failed_calls} failures and turned "
        f"{stats.rejected_calls} calls away without touching the service"
    )


if __name__ == "__main__":
    try:
        anyio.run(main)
    except MeshkitError as exc:  # pragma: no cover - a demo reports, it does not trace back
        print(f"demo failed: {exc}")
        raise SystemExit(1) from exc
