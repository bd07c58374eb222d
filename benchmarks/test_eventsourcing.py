"""meshkit's in-memory event sourcing against the `eventsourcing` package's POPO application.

Both sides model the same Account aggregate (open, then deposits) with the same work per
round. meshkit is async, so each round runs in one `anyio.run` (asyncio) whose start-up cost
is amortised over the round's operations and charged to meshkit:

* append: open an account, then 1,000 deposits, each saved on its own (one event per save);
* rebuild: load an aggregate of 10,000 events (no snapshot) -- 5 loads per round;
* snapshot: load from a snapshot at version 10,000 plus 100 later events -- 100 loads.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as ESAggregate
from eventsourcing.domain import event as es_event

from meshkit.eventsourcing import (
    Aggregate,
    EventRegistry,
    MemoryEventStore,
    Repository,
    applies,
)

if TYPE_CHECKING:
    from collections.abc import Callable

APPENDS = 1_000
LONG = 10_000
TAIL = 100
REBUILD_LOADS = 5
SNAPSHOT_LOADS = 100

# ---------------------------------------------------------------- meshkit side

events = EventRegistry()


@events.register("Opened")
@attrs.frozen
class Opened:
    owner: str


@events.register("Deposited")
@attrs.frozen
class Deposited:
    amount: int


class Account(Aggregate):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.owner = ""
        self.balance = 0
        self.deposits = 0

    @classmethod
    def open(cls, owner: str) -> Account:
        account = cls(str(uuid.uuid4()))
        account.record(Opened(owner=owner))
        return account

    def deposit(self, amount: int) -> None:
        self.record(Deposited(amount=amount))

    @applies(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.deposits += 1


def _repo(store: MemoryEventStore) -> Repository[Account]:
    return Repository(store=store, aggregate_type=Account, registry=events)


async def _meshkit_build(deposits: int, *, snapshot: bool) -> tuple[MemoryEventStore, str]:
    store = MemoryEventStore()
    repo = _repo(store)
    account = Account.open("ada")
    for _ in range(deposits):
        account.deposit(5)
    await repo.save(account)
    if snapshot:
        await repo.snapshot(account)
        for _ in range(TAIL):
            account.deposit(5)
        await repo.save(account)
    return store, account.stream_id


def meshkit_append() -> int:
    async def main() -> int:
        repo = _repo(MemoryEventStore())
        account = Account.open("ada")
        await repo.save(account)
        for _ in range(APPENDS):
            account.deposit(5)
            await repo.save(account)
        return account.version

    return anyio.run(main)


def meshkit_loader(store: MemoryEventStore, stream_id: str, loads: int) -> Callable[[], int]:
    repo = _repo(store)

    async def main() -> int:
        total = 0
        for _ in range(loads):
            total += (await repo.load(stream_id)).balance
        return total

    return lambda: anyio.run(main)


# ---------------------------------------------------------------- eventsourcing side


class ESAccount(ESAggregate):
    @es_event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0
        self.deposits = 0

    @es_event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount
        self.deposits += 1


def _es_app(*, snapshots: bool = False) -> Any:
    env = {"IS_SNAPSHOTTING_ENABLED": "y"} if snapshots else {}
    return Application(env=env)


def es_append() -> int:
    app = _es_app()
    account = ESAccount("ada")
    app.save(account)
    for _ in range(APPENDS):
        account.deposit(5)
        app.save(account)
    return int(account.version)


def _es_build(deposits: int, *, snapshot: bool) -> tuple[Any, Any]:
    app = _es_app(snapshots=snapshot)
    account = ESAccount("ada")
    for _ in range(deposits):
        account.deposit(5)
    app.save(account)
    if snapshot:
        app.take_snapshot(account.id)
        for _ in range(TAIL):
            account.deposit(5)
        app.save(account)
    return app, account.id


def es_loader(app: Any, account_id: Any, loads: int) -> Callable[[], int]:
    def run() -> int:
        total = 0
        for _ in range(loads):
            total += app.repository.get(account_id).balance
        return total

    return run


# ---------------------------------------------------------------- benchmarks


@pytest.mark.benchmark(group="es-append-1000-single-event-saves")
class TestAppend:
    def test_meshkit(self, benchmark: Any) -> None:
        assert benchmark(meshkit_append) == APPENDS + 1

    def test_eventsourcing(self, benchmark: Any) -> None:
        assert benchmark(es_append) == APPENDS + 1


@pytest.mark.benchmark(group="es-rebuild-10000-events-x5")
class TestRebuild:
    def test_meshkit(self, benchmark: Any) -> None:
        store, stream_id = anyio.run(lambda: _meshkit_build(LONG - 1, snapshot=False))
        result = benchmark(meshkit_loader(store, stream_id, REBUILD_LOADS))
        assert result == REBUILD_LOADS * 5 * (LONG - 1)

    def test_eventsourcing(self, benchmark: Any) -> None:
        app, account_id = _es_build(LONG - 1, snapshot=False)
        result = benchmark(es_loader(app, account_id, REBUILD_LOADS))
        assert result == REBUILD_LOADS * 5 * (LONG - 1)


@pytest.mark.benchmark(group="es-snapshot-plus-100-events-x100")
class TestSnapshotLoad:
    def test_meshkit(self, benchmark: Any) -> None:
        store, stream_id = anyio.run(lambda: _meshkit_build(LONG - 1, snapshot=True))
        result = benchmark(meshkit_loader(store, stream_id, SNAPSHOT_LOADS))
        assert result == SNAPSHOT_LOADS * 5 * (LONG - 1 + TAIL)

    def test_eventsourcing(self, benchmark: Any) -> None:
        app, account_id = _es_build(LONG - 1, snapshot=True)
        result = benchmark(es_loader(app, account_id, SNAPSHOT_LOADS))
        assert result == SNAPSHOT_LOADS * 5 * (LONG - 1 + TAIL)
