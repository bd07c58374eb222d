"""Subscription leases: one active runner per subscription name, across processes.

A lease is one row per subscription name in the checkpoint store's database: who holds it
(`holder`, empty once released), a fencing `token` that grows by one at every takeover, a
heartbeat counter `beat` that every renewal (and every fenced checkpoint) bumps, and the
holder's lease `duration`.

Time is never compared across processes. Like Kubernetes' leader election, each candidate
measures on its *own* clock how long the record has stayed unchanged: a standby takes the
lease over (a compare-and-swap on the exact record it saw) only once the record has not
changed for the holder's `duration` since the standby first saw it. The holder counts its
lease as valid until `duration` after the *start* of its last successful renewal, which is
before the write that observers see, so its own deadline always passes first (assuming the
clocks tick at the same rate, which monotonic clocks do to a few parts per million).
A committed fence counts as a renewal begun when the fence began. While a checkpoint
transaction holds a lock that keeps every other writer out (SQLite's `BEGIN IMMEDIATE`), no
takeover can happen, so a lease held when the lock was taken stays held until it ends.

Time only decides who *runs*. What makes effects exactly-once is the fence: every checkpoint
write first bumps the lease row where `holder` and `token` are still the runner's own, in
the same transaction as the projection's writes, and raises `LeaseLostError` (rolling the
batch back) when the row says otherwise. A runner paused past its deadline (a stopped VM, a
handler that ignores cancellation) can therefore never commit progress after a takeover.

Why a row and not PostgreSQL's session advisory lock: an advisory lock lives on one
connection, which the store would have to keep out of its pool for the whole run (and which
a transaction-mode pooler such as PgBouncer does not preserve), and the checkpoint
transactions, on other pooled connections, could not be fenced by it. A row is fenced by an
`UPDATE` in the checkpoint's own transaction, and the same design serves SQLite, PostgreSQL
and memory. The price is a handover of `lease_duration` after a crash instead of the moment
the server notices the dead connection.

`LeaseCore` holds every decision and does no I/O (hypothesis drives it directly);
`LeaseKeeper` is the thin async shell a `Subscription` runs; `MemoryLeaseStore`
(`_memory_lease.py`) is the in-process store for tests; `SQLLeaseStore` (`_sql_lease.py`)
runs a dialect's SQL (`_sqlite_lease_sql`, `_postgres_lease_sql`) through the SQL stores'
own connections.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import anyio
import anyio.lowlevel
import attrs

from meshkit._errors import EventStoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from meshkit._clock import Clock

__all__ = [
    "MAX_LEASE_SECONDS",
    "LeaseCore",
    "LeaseKeeper",
    "LeaseRecord",
    "LeaseStore",
    "LeasingCheckpointStore",
    "Standby",
    "TakeOver",
    "new_owner",
]

_LOG = logging.getLogger("meshkit.eventsourcing")

MAX_LEASE_SECONDS = 86_400.0
"""The longest lease (a day): beyond it, a dead runner would block its name for too long."""


def new_owner() -> str:
    """Return a fresh runner identity: host, process id and a random suffix."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@attrs.frozen(kw_only=True)
class LeaseRecord:
    """The lease of one subscription name, as the store holds it.

    Attributes:
        holder: The runner holding it (`""` once released).
        token: The fencing token, one more at every takeover.
        beat: Bumped by every renewal and fenced checkpoint (a sign of life).
        duration: Seconds the holder promised to renew within.
    """

    holder: str
    token: int
    beat: int
    duration: float

    @property
    def key(self) -> tuple[str, int, int]:
        """What a compare-and-swap compares: holder, token and beat (never repeated)."""
        return (self.holder, self.token, self.beat)


# ---------------------------------------------------------------- the pure core


@attrs.frozen
class Standby:
    """Decision: someone else holds a live lease; read the record again at `until`."""

    until: float


@attrs.frozen
class TakeOver:
    """Decision: try to take the lease with a compare-and-swap on the record `seen`."""

    seen: LeaseRecord | None


@final
@attrs.define(eq=False, kw_only=True)
class LeaseCore:
    """One candidate's lease decisions, driven by the times it is given (no I/O).

    Attributes:
        owner: This candidate's identity.
        duration: Seconds a lease lasts without renewal.
        renew_interval: Seconds between renewals, and between a standby's reads.
    """

    owner: str
    duration: float
    renew_interval: float
    _seen: LeaseRecord | None = attrs.field(init=False, default=None)
    _seen_at: float = attrs.field(init=False, default=0.0)
    _token: int | None = attrs.field(init=False, default=None)
    _renewed_at: float = attrs.field(init=False, default=-math.inf)
    _next_renewal: float = attrs.field(init=False, default=math.inf)
    _locked: bool = attrs.field(init=False, default=False)

    @property
    def token(self) -> int | None:
        """The fencing token of the lease held, or `None`."""
        return self._token

    @property
    def deadline(self) -> float:
        """When the lease held runs out unless renewed (-inf when none is held)."""
        return self._renewed_at + self.duration if self._token is not None else -math.inf

    @property
    def next_renewal(self) -> float:
        """When the holder should renew next."""
        return self._next_renewal

    def holding(self, now: float) -> bool:
        """Return whether this candidate may act as the runner at `now`."""
        return self._locked or now < self.deadline

    def recheck_at(self, now: float) -> float:
        """When a holder at `now` should look again whether it still holds the lease."""
        # Past the deadline only inside a locked transaction: its end decides, so poll.
        return self.deadline if now < self.deadline else now + self.renew_interval

    def transaction_locked(self, now: float) -> None:
        """A checkpoint transaction holds, since before `now`, a lock that keeps out writers.

        SQLite's `BEGIN IMMEDIATE` does: until the transaction ends no other process can
        write, so no one can take the lease over, and a lease held at `now` stays held. The
        holder's renewals wait for that lock too, so without this a batch longer than the
        lease would be cancelled at the deadline, and retried, and cancelled, forever.
        """
        self._locked = self.holding(now)

    def transaction_ended(self, fenced_at: float | None) -> None:
        """A checkpoint transaction ended: committed with a fence begun at `fenced_at`, or not.

        A committed fence bumped the beat where the holder still held the token, so it is a
        renewal begun at `fenced_at`.
        """
        self._locked = False
        if fenced_at is not None and self._token is not None:
            self._confirm(fenced_at)

    def observe(self, record: LeaseRecord | None, now: float) -> Standby | TakeOver:
        """Decide, as a standby, from the record read at `now`."""
        if record is None or record.holder in {"", self.owner}:
            return TakeOver(record)  # free, released, or ours from before: no one to wait for
        if self._seen is None or record.key != self._seen.key:
            self._seen, self._seen_at = record, now
        expires = self._seen_at + self._trusted(record.duration)
        if now >= expires:
            return TakeOver(record)
        return Standby(min(now + self.renew_interval, expires))

    def acquired(self, record: LeaseRecord | None, started: float) -> bool:
        """Record the outcome of a takeover begun at `started`; return whether it won."""
        if record is None:
            return False
        self._token, self._seen = record.token, None
        self._confirm(started)
        return True

    def renewed(self, ok: bool, started: float) -> bool:  # noqa: FBT001 - an outcome
        """Record the outcome of a renewal begun at `started`; return whether still held."""
        if not ok:
            self.drop()
            return False
        self._confirm(started)
        return True

    def renew_failed(self, now: float) -> None:
        """A renewal could not reach the store: try again after `renew_interval`."""
        self._next_renewal = now + self.renew_interval

    def drop(self) -> None:
        """Stop holding (lost, run out, or released)."""
        self._token = None
        self._locked = False
        self._next_renewal = math.inf

    def _trusted(self, duration: float) -> float:
        # A holder's duration outside (0, MAX_LEASE_SECONDS] (a damaged row, NaN) would make
        # standbys wait forever or not at all: they wait their own duration instead.
        return duration if 0 < duration <= MAX_LEASE_SECONDS else self.duration

    def _confirm(self, started: float) -> None:
        self._renewed_at = max(self._renewed_at, started)
        self._next_renewal = started + self.renew_interval


# ---------------------------------------------------------------- stores


@runtime_checkable
class LeaseStore(Protocol):
    """Where subscription leases live: the checkpoint store's own database.

    `fence` runs inside the checkpoint transaction, so it must use that transaction.
    """

    @property
    def locking_transactions(self) -> bool:
        """Whether a checkpoint transaction, once begun, keeps every other writer out.

        SQLite's `BEGIN IMMEDIATE` does: no takeover can happen until it ends, so the runner
        keeps its lease through a batch longer than the lease (see `LeaseCore`).
        """
        ...

    async def read_lease(self, name: str) -> LeaseRecord | None:
        """Return the lease of `name`, or `None` if there never was one."""
        ...

    async def acquire_lease(
        self, name: str, seen: LeaseRecord | None, owner: str, duration: float
    ) -> LeaseRecord | None:
        """Take the lease if it is still exactly `seen`; return the new record, else `None`."""
        ...

    async def renew_lease(self, name: str, owner: str, token: int) -> bool:
        """Bump the beat if `owner` still holds `token`; return whether it does."""
        ...

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        """Give the lease up if `owner` still holds `token`."""
        ...

    async def fence(self, tx: object, name: str, owner: str, token: int) -> None:
        """In the checkpoint transaction `tx`: bump the beat, or raise `LeaseLostError`."""
        ...


@runtime_checkable
class LeasingCheckpointStore(Protocol):
    """A checkpoint store that also holds leases (the SQLite and PostgreSQL stores)."""

    def leases(self) -> LeaseStore:
        """Return the lease store living in this checkpoint store's database."""
        ...


# ---------------------------------------------------------------- the async shell


@final
@attrs.define(eq=False, kw_only=True)
class LeaseKeeper:
    """Acquires, renews and releases one subscription name's lease for a `Subscription`.

    Attributes:
        store: Where the lease lives.
        name: The subscription name.
        core: The decisions.
        clock: Time for the waits and the deadlines.
    """

    store: LeaseStore
    name: str
    core: LeaseCore
    clock: Clock
    _token: int = attrs.field(init=False, default=0)
    _fenced_at: float | None = attrs.field(init=False, default=None)

    async def acquire(self, on_standby: Callable[[], object]) -> int:
        """Wait until this runner holds the lease; return its fencing token (kept for `fence`).

        `on_standby()` is called before each wait (a standby is up and running). A takeover
        write that fails is logged and tried again after `renew_interval`: on SQLite it fails
        when a live runner's batch holds the write lock past `busy_timeout`.

        Raises:
            EventStoreUnavailableError: If reading the lease fails.
        """
        self.core.drop()
        while True:
            record = await self.store.read_lease(self.name)
            decision = self.core.observe(record, self.clock.now())
            if isinstance(decision, TakeOver):
                try:
                    if await self._take_over(decision.seen):
                        return self._token
                    continue  # another standby won the race: it is the holder to watch now
                except EventStoreUnavailableError:
                    _LOG.warning(
                        "subscription %r: taking the lease over failed", self.name, exc_info=True
                    )
                    decision = Standby(self.clock.now() + self.core.renew_interval)
            on_standby()
            await self.clock.sleep(decision.until - self.clock.now())

    async def _take_over(self, seen: LeaseRecord | None) -> bool:
        started = self.clock.now()
        owner, duration = self.core.owner, self.core.duration
        won = await self.store.acquire_lease(self.name, seen, owner, duration)
        if self.core.acquired(won, started):
            assert won is not None  # noqa: S101 - acquired() said so
            self._token = won.token
            return True
        return False

    async def hold(self, lost: anyio.CancelScope) -> None:
        """Renew the lease until it is lost or runs out, then cancel `lost`."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, lost)
            await self._renew(lost)

    async def release(self) -> None:
        """Give the lease up, if held, shielded from cancellation for one renew interval.

        A failure (or a store that hangs past the interval) is logged: the lease then runs
        out by itself after its duration.
        """
        token = self.core.token
        self.core.drop()
        if token is None:
            return
        scope = self.clock.deadline_scope(self.clock.now() + self.core.renew_interval)
        scope.shield = True
        with scope:
            try:
                await self.store.release_lease(self.name, self.core.owner, token)
            except EventStoreUnavailableError:
                _LOG.warning(
                    "subscription %r: could not release its lease", self.name, exc_info=True
                )
        if scope.cancelled_caught:
            _LOG.warning("subscription %r: releasing its lease timed out", self.name)

    def transaction_began(self) -> None:
        """Note that a checkpoint transaction began (and holds its lock, if it takes one)."""
        if self.store.locking_transactions:
            self.core.transaction_locked(self.clock.now())

    async def fence(self, tx: object) -> None:
        """Fence the checkpoint saved next in `tx` with the token `acquire` returned.

        Raises:
            LeaseLostError: If the lease was taken over; `tx` must roll back.
            EventStoreUnavailableError: If the store fails.
        """
        started = self.clock.now()
        await self.store.fence(tx, self.name, self.core.owner, self._token)
        self._fenced_at = started

    def transaction_ended(self, *, committed: bool) -> None:
        """Note that it ended; a committed fence renewed the lease from when it began."""
        fenced_at, self._fenced_at = self._fenced_at, None
        self.core.transaction_ended(fenced_at if committed else None)

    async def _watch(self, lost: anyio.CancelScope) -> None:
        while self.core.holding(now := self.clock.now()):
            await self.clock.sleep(self.core.recheck_at(now) - now)
        _LOG.warning("subscription %r: lease ran out before a renewal; standing by", self.name)
        lost.cancel()

    async def _renew(self, lost: anyio.CancelScope) -> None:
        token = self.core.token
        assert token is not None  # noqa: S101 - hold() runs after acquire()
        while True:
            await self.clock.sleep(self.core.next_renewal - self.clock.now())
            started = self.clock.now()
            try:
                ok = await self.store.renew_lease(self.name, self.core.owner, token)
            except EventStoreUnavailableError:
                _LOG.warning("subscription %r: lease renewal failed", self.name, exc_info=True)
                self.core.renew_failed(self.clock.now())
                continue
            if not self.core.renewed(ok, started):
                _LOG.warning("subscription %r: lease taken over; standing by", self.name)
                lost.cancel()
                return
