"""`BoundedLoadRing`: consistent hashing with bounded loads (Mirrokni et al.; Vimeo, HAProxy)."""

from __future__ import annotations

import random
import threading
import typing
from bisect import bisect_left

import attrs

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import finite, gt, instance_of
from meshkit.balancing._endpoint import check_endpoints
from meshkit.balancing._hash import HASH_BITS, HashFunction, hash_point, load_hash
from meshkit.balancing._hashring import (
    DEFAULT_MAX_RING_SIZE,
    DEFAULT_VNODES,
    HashRing,
    RingSnapshot,
)
from meshkit.balancing._snapshot import FITS_FLOAT

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

    from meshkit.balancing._endpoint import Endpoint, Outcome

__all__ = ["DEFAULT_BALANCE_FACTOR", "BoundedLoadRing"]

DEFAULT_BALANCE_FACTOR = 1.25
"""`c`: no endpoint takes more than `ceil(c * mean)` in-flight requests (Vimeo's choice)."""

Address = tuple[str, int]


class _InFlight:
    """The mutable in-flight counts: per address, and their total."""

    __slots__ = ("loads", "total")

    def __init__(self, loads: dict[Address, int] | None = None, total: int = 0) -> None:
        self.loads: dict[Address, int] = {} if loads is None else loads
        self.total = total


@typing.final
@attrs.define(eq=False, init=False)
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
        balance_factor: `c` > 1, finite; lower is more even, higher keeps more keys on their
            owner.
        vnodes: Virtual nodes per unit of weight, >= 1 and at most `max_ring_size`.
        seed: Hash seed in `[0, 2**64)`.
        max_ring_size: Most points on the ring (see `HashRing`: beyond it, points are shared
            out by weight).

    Raises:
        ConfigurationError: On duplicate endpoints or a bad `balance_factor`/`vnodes`/`seed`/
            `max_ring_size`.
        ImportError: If the `xxhash` package is missing (`pip install 'meshkit[hashing]'`).
    """

    _initial: tuple[Endpoint, ...] = attrs.field(
        default=(), alias="endpoints", converter=check_endpoints, repr=False
    )
    balance_factor: float = attrs.field(
        default=DEFAULT_BALANCE_FACTOR,
        kw_only=True,
        on_setattr=attrs.setters.frozen,
        validator=[instance_of(int, float), finite, gt(1), FITS_FLOAT],
    )
    vnodes: int = attrs.field(default=DEFAULT_VNODES, kw_only=True, on_setattr=attrs.setters.frozen)
    seed: int = attrs.field(default=0, kw_only=True, on_setattr=attrs.setters.frozen)
    max_ring_size: int = attrs.field(
        default=DEFAULT_MAX_RING_SIZE, kw_only=True, on_setattr=attrs.setters.frozen
    )
    _ring: HashRing = attrs.field(init=False, repr=False)
    _hash: HashFunction = attrs.field(init=False, repr=False)
    _state: _InFlight = attrs.field(init=False, factory=_InFlight, repr=False)
    _ratio: tuple[int, int] = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        balance_factor: float = DEFAULT_BALANCE_FACTOR,
        vnodes: int = DEFAULT_VNODES,
        seed: int = 0,
        max_ring_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        self.__attrs_init__(
            endpoints,
            balance_factor=balance_factor,
            vnodes=vnodes,
            seed=seed,
            max_ring_size=max_ring_size,
        )

    def __attrs_post_init__(self) -> None:
        self._ring = HashRing(
            self._initial, vnodes=self.vnodes, seed=self.seed, max_ring_size=self.max_ring_size
        )
        self._hash = load_hash()
        self._initial = ()
        self._ratio = float(self.balance_factor).as_integer_ratio()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot."""
        return self._ring.endpoints

    @property
    def total_in_flight(self) -> int:
        """How many picks have not been reported yet."""
        return self._state.total

    def in_flight(self, endpoint: Endpoint) -> int:
        """Return how many picks of `endpoint` (by address) have not been reported yet."""
        return self._state.loads.get((endpoint.host, endpoint.port), 0)

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
            ConfigurationError: If `key` is neither None, `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        point = (
            random.getrandbits(HASH_BITS) if key is None else hash_point(self._hash, key, self.seed)
        )
        ring = self._ring.snapshot
        try:
            owner = ring.locate(point)
        except IndexError:
            raise NoAvailableEndpointError("BoundedLoadRing") from None
        num, den = self._ratio
        with self._lock:
            state = self._state  # read under the lock: update() replaces it
            total = state.total + 1
            loads = state.loads
            address = (owner.host, owner.port)
            load = loads.get(address, 0)
            # Room when load + 1 <= ceil(c * total * w / W), i.e. load < c * total * w / W.
            if load * den * ring.weight >= num * total * owner.weight:
                owner = self._walk(ring, point, total, loads)
                address = (owner.host, owner.port)
                load = loads.get(address, 0)
            loads[address] = load + 1
            state.total = total
        return owner

    def get(self, key: str | bytes) -> Endpoint:
        """Return the key's ring owner, ignoring loads and counting nothing.

        Raises:
            ConfigurationError: If `key` is neither `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        return self._ring.get(key)

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; in-flight counts of endpoints that stay are kept.

        Raises:
            ConfigurationError: If the set holds duplicate addresses.
        """
        self._ring.update(endpoints)
        with self._lock:
            # Read the ring under the lock: a racing update() may have replaced it since, and
            # the counts must follow the ring that is now in force.
            current = {(e.host, e.port) for e in self._ring.endpoints}
            loads = {a: n for a, n in self._state.loads.items() if a in current}
            self._state = _InFlight(loads, sum(loads.values()))

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:  # noqa: ARG002
        """Release the in-flight request counted by the `pick()` of `endpoint`."""
        address = (endpoint.host, endpoint.port)
        with self._lock:
            state = self._state
            count = state.loads.get(address, 0)
            if count > 0:
                state.loads[address] = count - 1
                state.total -= 1

    def _walk(
        self, ring: RingSnapshot, point: int, total: int, loads: dict[Address, int]
    ) -> Endpoint:
        num, den = self._ratio
        points, owners = ring.points, ring.owners
        start = bisect_left(points, point)
        for step in range(1, len(points) + 1):
            owner = owners[(start + step) % len(points)]
            load = loads.get((owner.host, owner.port), 0)
            if load * den * ring.weight < num * total * owner.weight:
                return owner
        # Unreachable with balance_factor > 1: the capacities add up to more than `total`.
        raise NoAvailableEndpointError("BoundedLoadRing", "full")  # pragma: no cover
