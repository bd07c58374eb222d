"""The in-process lease store for tests (see `_lease.py` for the protocol)."""

from __future__ import annotations

from typing import final

import anyio
import anyio.lowlevel
import attrs

from meshkit._errors import LeaseLostError
from meshkit.eventsourcing._checks import check_name
from meshkit.eventsourcing._lease import LeaseRecord

__all__ = ["MemoryLeaseStore"]


@final
@attrs.define(eq=False)
class MemoryLeaseStore:
    """An in-process `LeaseStore` for tests: pass it as `Subscription(leases=...)`.

    Several subscriptions sharing one instance (and one clock, such as a `FakeClock`) contend
    for their names as replicas in several processes would. The `_nowait` methods are the
    synchronous core the async ones wrap.
    """

    _records: dict[str, LeaseRecord] = attrs.field(init=False, factory=dict)

    @property
    def locking_transactions(self) -> bool:
        """`False`: memory holds no lock across a checkpoint transaction."""
        return False

    def read_nowait(self, name: str) -> LeaseRecord | None:
        """Return the lease of `name` (see `read_lease`)."""
        check_name(name)
        return self._records.get(name)

    def acquire_nowait(
        self, name: str, seen: LeaseRecord | None, owner: str, duration: float
    ) -> LeaseRecord | None:
        """Take the lease if it is still `seen` (see `acquire_lease`)."""
        current = self.read_nowait(name)
        if (current and current.key) != (seen and seen.key):
            return None
        token = 1 if seen is None else seen.token + 1
        record = LeaseRecord(holder=owner, token=token, beat=0, duration=duration)
        self._records[name] = record
        return record

    def renew_nowait(self, name: str, owner: str, token: int) -> bool:
        """Bump the beat if `owner` holds `token` (see `renew_lease`)."""
        record = self.read_nowait(name)
        if record is None or (record.holder, record.token) != (owner, token):
            return False
        self._records[name] = attrs.evolve(record, beat=record.beat + 1)
        return True

    def release_nowait(self, name: str, owner: str, token: int) -> None:
        """Give the lease up (see `release_lease`)."""
        if self.renew_nowait(name, owner, token):
            self._records[name] = attrs.evolve(self._records[name], holder="")

    async def read_lease(self, name: str) -> LeaseRecord | None:
        """Return the lease of `name`, or `None`.

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.read_nowait(name)

    async def acquire_lease(
        self, name: str, seen: LeaseRecord | None, owner: str, duration: float
    ) -> LeaseRecord | None:
        """Take the lease if it is still exactly `seen`; return the new record, else `None`.

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.acquire_nowait(name, seen, owner, duration)

    async def renew_lease(self, name: str, owner: str, token: int) -> bool:
        """Bump the beat if `owner` still holds `token`; return whether it does.

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.renew_nowait(name, owner, token)

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        """Give the lease up if `owner` still holds `token`.

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        self.release_nowait(name, owner, token)

    async def fence(self, tx: object, name: str, owner: str, token: int) -> None:
        """Bump the beat, or raise `LeaseLostError` (memory has no transaction to join).

        Raises:
            LeaseLostError: If `owner` no longer holds `token`.
        """
        del tx
        # No await before the check: the checkpoint save that follows runs in the same step.
        if not self.renew_nowait(name, owner, token):
            raise LeaseLostError(name, owner, token)
