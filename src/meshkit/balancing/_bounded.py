"""`BoundedLoadRing`: consistent hashing with bounded loads (Mirrokni et al.; Vimeo, HAProxy)."""

from __future__ import annotations

import random
import threading
import typing
from bisect import bisect_left

import attrs

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import gt, instance_of
from meshkit.balancing._endpoint import check_endpoints
from meshkit.balancing._hash import HASH_BITS
from meshkit.balancing._hashring import DEFAULT_VNODES, HashRing, RingSnapshot

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

    from meshkit.balancing._endpoint import Endpoint, Outcome

__all__ = ["DEFAULT_BALANCE_FACTOR", "BoundedLoadRing"]

DEFAULT_BALANCE_FACTOR = 1.25
"""`c`: no endpoint takes more than `ceil(c * mean)` in-flight requests (Vimeo's choice)."""

Address = tuple[str, int]


@typing.final
@attrs.define(eq=False)
class BoundedLoadRing:
    """Consistent hashing with bounded loads: a key goes to its ring owner unless that is full.

    Every `pick()` counts one in-flight request against the chosen endpoint until `report()`
    is called for it. An endpoint is full when taking the request would put it above
    `ceil(balance_factor * total * weight / total_weight)`, where `total` counts in-flight
    requests including this one (with equal weights: `ceil(c * mean)`); a full endpoint is
    skipped and the walk goes on clockwise to the next endpoint. Keys therefore stay on their
    owner while loads are even, and spill to their ring neighbours, never anywhere at random,
    when a hot key or a slow endpoint piles requests up. With `balance_factor > 1` some
    endpoint always has room.

    The ring is a `HashRing` snapshot read without a lock; the in-flight counts are updated
    under a short lock so the bound holds under concurrent picks.

    Args:
        endpoints: The initial endpoint set.
        balance_factor: `c` > 1; lower is more even, higher keeps more keys on their owner.
        vnodes: Virtual nodes per unit of weight, >= 1.
        seed: Hash seed in `[0, 2**64)`.

    Raises:
        ConfigurationError: On duplicate endpoints or a bad `balance_factor`/`vnodes`/`seed`.
        ImportError: If the `xxhash` package is missing (`pip install 'meshkit[hashing]'`).
    """

    _initial: tuple[Endpoint, ...] = attrs.field(
        default=(), alias="endpoints", converter=check_endpoints, repr=False
    )
    balance_factor: float = attrs.field(
        default=DEFAULT_BALANCE_FACTOR, kw_only=True, validator=[instance_of(int, float), gt(1)]
    )
    vnodes: int = attrs.field(default=DEFAULT_VNODES, kw_only=True)
    seed: int = attrs.field(default=0, kw_only=True)
    _ring: HashRing = attrs.field(init=False, repr=False)
    _loads: dict[Address, int] = attrs.field(init=False, factory=dict, repr=False)
    _total: int = attrs.field(init=False, default=0, repr=False)
    _ratio: tuple[int, int] = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)

    def __attrs_post_init__(self) -> None:
        self._ring = HashRing(self._initial, vnodes=self.vnodes, seed=self.seed)
        self._initial = ()
        self._ratio = float(self.balance_factor).as_integer_ratio()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot."""
        return self._ring.endpoints

    @property
    def total_in_flight(self) -> int:
        """How many picks have not been reported yet."""
        return self._total

    def in_flight(self, endpoint: Endpoint) -> int:
        """Return how many picks of `endpoint` (by address) have not been reported yet."""
        return self._loads.get((endpoint.host, endpoint.port), 0)

    def capacity(self, endpoint: Endpoint, total: int) -> int:
        """Return the most in-flight requests `endpoint` may hold when `total` are in flight.

        That is `ceil(balance_factor * total * weight / total_weight)`, computed exactly.
        """
        num, den = self._ratio
        weight = self._ring.snapshot.weight or 1
        return -(-num * total * endpoint.weight // (den * weight))

    def pick(self, key: str | bytes | None = None) -> Endpoint:
        """Choose the key's ring owner, or the next endpoint clockwise with room; count it.

        Without a key the walk starts at a random point.

        Raises:
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        ring = self._ring.snapshot
        if ring.live == 0:
            raise NoAvailableEndpointError("BoundedLoadRing")
        point = self._ring.hash_key(key) if key is not None else random.getrandbits(HASH_BITS)
        with self._lock:
            total = self._total + 1
            owner = ring.locate(point)
            if not self._has_room(owner, total, ring):
                owner = self._walk(ring, point, total)
            address = (owner.host, owner.port)
            self._loads[address] = self._loads.get(address, 0) + 1
            self._total = total
        return owner

    def get(self, key: str | bytes) -> Endpoint:
        """Return the key's ring owner, ignoring loads and counting nothing.

        Raises:
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        return self._ring.get(key)

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; in-flight counts of endpoints that stay are kept.

        Raises:
            ConfigurationError: If the set holds duplicate addresses.
        """
        self._ring.update(endpoints)
        current = {(e.host, e.port) for e in self._ring.endpoints}
        with self._lock:
            self._loads = {a: n for a, n in self._loads.items() if a in current}
            self._total = sum(self._loads.values())

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:  # noqa: ARG002
        """Release the in-flight request counted by the `pick()` of `endpoint`."""
        address = (endpoint.host, endpoint.port)
        with self._lock:
            count = self._loads.get(address, 0)
            if count > 0:
                self._loads[address] = count - 1
                self._total -= 1

    def _has_room(self, endpoint: Endpoint, total: int, ring: RingSnapshot) -> bool:
        num, den = self._ratio
        load = self._loads.get((endpoint.host, endpoint.port), 0) + 1
        # load <= ceil(c * total * w / W)  <=>  load - 1 < c * total * w / W
        return (load - 1) * den * ring.weight < num * total * endpoint.weight

    def _walk(self, ring: RingSnapshot, point: int, total: int) -> Endpoint:
        points, owners = ring.points, ring.owners
        start = bisect_left(points, point)
        for step in range(1, len(points) + 1):
            owner = owners[(start + step) % len(points)]
            if self._has_room(owner, total, ring):
                return owner
        # Unreachable with balance_factor > 1: the capacities add up to more than `total`.
        raise NoAvailableEndpointError("BoundedLoadRing", "full")  # pragma: no cover
