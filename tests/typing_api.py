"""The public API as a user writes it, checked by mypy only (never collected by pytest).

If a signature change breaks a user's typed code, `mypy --strict` fails here first. Each
`x: T = ...` line pins what a call returns; decorated functions must keep their signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

import meshkit
from meshkit.balancing import (
    Endpoint,
    HashRing,
    LeastRequest,
    LoadBalancer,
    Maglev,
    Outcome,
    OutlierDetector,
    RoundRobin,
)
from meshkit.eventsourcing import (
    Aggregate,
    Event,
    EventRegistry,
    EventStore,
    LeaseRecord,
    LeaseStore,
    LeasingCheckpointStore,
    MemoryCheckpointStore,
    MemoryEventStore,
    MemoryLeaseStore,
    Repository,
    SQLiteEventStore,
    SQLiteTransaction,
    Subscription,
    applies,
)
from meshkit.resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    Deadline,
    Pipeline,
    PipelineOutcome,
    RateLimiter,
    Retry,
    RetryOutcome,
    Timeout,
    time_remaining,
)
from meshkit.saga import (
    Parallel,
    Saga,
    SagaOrchestrator,
    SagaState,
    SagaStatistics,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
)
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Mapping

clock: meshkit.Clock = FakeClock()
system: meshkit.Clock = meshkit.SYSTEM_CLOCK

# ---------------------------------------------------------------- resilience

breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3), name="db", clock=clock)
retry = Retry(max_attempts=3, clock=clock)
bulkhead = Bulkhead(max_concurrent=4, clock=clock)
limiter = RateLimiter(rate=10, clock=clock)
pipeline = Pipeline(
    timeout=2.0,
    retry=retry,
    rate_limiter=limiter,
    breaker=breaker,
    bulkhead=bulkhead,
    attempt_timeout=0.5,
    clock=clock,
)
state: CircuitState = breaker.state


async def fetch(user_id: int, *, verbose: bool = False) -> str:
    return f"user {user_id} {verbose}"


def fetch_sync(user_id: int) -> str:
    return f"user {user_id}"


@breaker
async def decorated(user_id: int) -> str:
    return str(user_id)


@retry
def decorated_sync(user_id: int) -> int:
    return user_id


async def async_usage() -> None:
    name: str = await breaker.call(fetch, 1, verbose=True)
    again: str = await retry.call(fetch, 2)
    details: RetryOutcome[str] = await retry.call_with_details(fetch, 3)
    via_pipeline: str = await pipeline.call(fetch, 4)
    outcome: PipelineOutcome[str] = await pipeline.call_with_details(fetch, 5)
    value: str = outcome.unwrap()
    timed: str = await Timeout(1.0, clock=clock).call(fetch, 6)
    limited: str = await limiter.call(fetch, 7)
    isolated: str = await bulkhead.call(fetch, 8)
    plain: str = await decorated(9)
    async with Timeout(1.0, clock=clock) as deadline:
        budget: Deadline = deadline
        left: float | None = time_remaining()
    async with breaker, bulkhead:
        pass
    del name, again, details, via_pipeline, value, timed, limited, isolated, plain, budget, left


def sync_usage() -> None:
    name: str = breaker.call_sync(fetch_sync, 1)
    again: str = retry.call_sync(fetch_sync, 2)
    via_pipeline: str = pipeline.call_sync(fetch_sync, 3)
    number: int = decorated_sync(4)
    with breaker, bulkhead:
        pass
    del name, again, via_pipeline, number


# ---------------------------------------------------------------- balancing

endpoints = [Endpoint(host="10.0.0.1", port=80), Endpoint(host="10.0.0.2", port=80, weight=3)]
balancers: list[LoadBalancer] = [
    RoundRobin(endpoints),
    LeastRequest(endpoints),
    HashRing(endpoints),
    Maglev(endpoints),
    OutlierDetector(RoundRobin(endpoints), clock=clock),
]


def balancing_usage(balancer: LoadBalancer) -> None:
    chosen: Endpoint = balancer.pick()
    balancer.report(chosen, Outcome.SUCCESS, 0.012)
    balancer.update(endpoints[:1])
    ring = HashRing(endpoints)
    owner: Endpoint = ring.get("user:42")
    replicas: tuple[Endpoint, ...] = ring.get_n("user:42", 2)
    del owner, replicas


# ---------------------------------------------------------------- event sourcing

registry = EventRegistry()


@registry.register("CounterIncremented")
@attrs.frozen
class CounterIncremented:
    by: int


class Counter(Aggregate):
    type_name = "Counter"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.value = 0

    def increment(self, by: int) -> None:
        self.record(CounterIncremented(by=by))

    @applies(CounterIncremented)
    def _incremented(self, event: CounterIncremented) -> None:
        self.value += event.by


async def eventsourcing_usage(path: str) -> None:
    memory: EventStore = MemoryEventStore()
    sqlite: EventStore = SQLiteEventStore(path=path)
    for store in (memory, sqlite):
        repository = Repository(store=store, aggregate_type=Counter, registry=registry)
        counter = Counter("counter-1")
        counter.increment(2)
        await repository.save(counter)
        loaded: Counter = await repository.load("counter-1")
        events: list[Event] = await store.read("counter-1")
        version: int = await store.stream_version("counter-1")
        del loaded, events, version
        await store.aclose()


async def lease_usage(path: str) -> None:
    sqlite = SQLiteEventStore(path=path)
    leasing: LeasingCheckpointStore = sqlite
    leases: LeaseStore = leasing.leases()
    memory: LeaseStore = MemoryLeaseStore()
    record: LeaseRecord | None = await memory.read_lease("projection")

    async def project(event: Event, tx: SQLiteTransaction) -> None:
        await tx.execute("INSERT INTO seen VALUES (?)", (event.position,))

    subscription = Subscription(
        name="projection",
        store=sqlite,
        handler=project,
        checkpoints=sqlite,
        leases=leases,
        lease_duration=5.0,
        renew_interval=1.0,
    )
    async with subscription:
        active: bool = subscription.active
        del active, record
    Subscription(
        name="p",
        store=MemoryEventStore(),
        handler=project,
        checkpoints=MemoryCheckpointStore(),
        leases=memory,
    )
    await sqlite.aclose()


async def _saga_action(data: Mapping[str, object], ctx: StepContext) -> dict[str, object]:
    return {"step": ctx.step, "key": ctx.idempotency_key, "attempt": ctx.attempt}


async def _saga_undo(data: Mapping[str, object], ctx: StepContext) -> None:
    assert ctx.compensating


async def saga_usage(store: EventStore) -> None:
    """Define, run and observe a saga."""
    saga = Saga(
        name="order",
        steps=[
            Step(name="reserve", action=_saga_action, compensation=_saga_undo),
            Parallel((Step(name="a", action=_saga_action, compensation=_saga_undo),)),
            Step(name="pay", action=_saga_action, kind=StepKind.PIVOT),
        ],
    )
    async with SagaOrchestrator(store=store, sagas=[saga]) as orchestrator:
        saga_id: str = await orchestrator.start(saga, {"n": 1})
        status: SagaStatus = await orchestrator.wait(saga_id)
        state: SagaState = status.state
        stats: SagaStatistics = orchestrator.statistics()
        stuck: list[str] = orchestrator.saga_ids(SagaState.STUCK)
        await orchestrator.resume(saga_id)
    assert state is not None
    assert stats.stuck >= 0
    assert stuck is not None
