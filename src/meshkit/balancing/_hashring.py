"""`HashRing`: consistent hashing on a sorted list of integer points, searched with `bisect`."""

from __future__ import annotations

import random
import typing
from bisect import bisect_left
from operator import itemgetter

import attrs

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import count, require
from meshkit.balancing._endpoint import Endpoint, check_endpoints
from meshkit.balancing._hash import HASH_BITS, HashBalancer, HashFunction, hash_point

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_MAX_RING_SIZE",
    "DEFAULT_VNODES",
    "MAX_RING_SIZE",
    "HashRing",
    "RingSnapshot",
    "build_ring",
    "build_table",
    "point_counts",
    "table_bits",
    "vnode_entries",
]

DEFAULT_VNODES = 160
"""Virtual nodes per unit of weight (the ketama/uhashring default)."""

DEFAULT_MAX_RING_SIZE = 1 << 17
"""Most points on a ring by default (131,072: about 0.5 s and 25 MB to build in CPython)."""

MAX_RING_SIZE = 1 << 23
"""The largest `max_ring_size` accepted (8,388,608, Envoy's default `maximum_ring_size`)."""

_MIN_TABLE_BITS = 8
_MAX_TABLE_BITS = 20

# One ring point: (hash, address, vnode index, endpoint). Sorting the tuples orders the ring
# and breaks a hash collision deterministically: the lower (address, index) owns the point,
# whatever the order endpoints were added in. The endpoint itself is never compared, since
# (address, index) is unique.
Entry = tuple[int, str, int, Endpoint]
_point = itemgetter(0)
_owner = itemgetter(3)


@attrs.frozen
class RingSnapshot:
    """One immutable ring: readers load it with a single attribute read and never lock.

    Besides the sorted points, a snapshot holds a lookup table that answers most lookups
    without a search. The hash space is cut into `2**bits` equal buckets (about 8 per point);
    `table[b]` is the endpoint owning every key of bucket `b` when no point falls inside that
    bucket (so all its keys share one successor), and `None` when one does, in which case the
    lookup bisects. Either way the answer is exactly the bisect search's.

    Attributes:
        endpoints: The endpoint set, in the order given.
        entries: The sorted ring entries `(point, address, vnode index, endpoint)`.
        points: The sorted points alone (what `bisect` searches).
        owners: `owners[i]` owns `points[i]`; one extra item repeats `owners[0]`, so a hash
            past the last point wraps around without a modulo. Empty when the ring is.
        live: How many endpoints own at least one point (those with weight > 0).
        weight: The endpoints' total weight.
        shift: `hash >> shift` is a hash's bucket (`64 - bits`).
        table: One item per bucket: its owner, or `None` when a point lies inside it.
        members: Each endpoint by address.
        counts: How many points each endpoint of weight > 0 owns, by address.
    """

    endpoints: tuple[Endpoint, ...]
    entries: list[Entry]
    points: list[int]
    owners: list[Endpoint]
    live: int
    weight: int
    shift: int
    table: list[Endpoint | None]
    members: dict[str, Endpoint]
    counts: dict[str, int]

    def locate(self, point: int) -> Endpoint:
        """Return the owner of the first point at or after `point` (wrapping), via the table.

        Raises:
            IndexError: If the ring is empty.
        """
        owner = self.table[point >> self.shift]
        if owner is None:
            return self.owners[bisect_left(self.points, point)]
        return owner


def point_counts(members: dict[str, Endpoint], vnodes: int, max_points: int) -> dict[str, int]:
    """Return how many points each endpoint of weight > 0 owns, by address (`members`' keys).

    That is `vnodes * weight` while the ring holds at most `max_points`; beyond, each endpoint
    gets its share of `max_points` by weight, at least one point (as Envoy scales its ring
    into `maximum_ring_size`), so the total stays below `max_points` plus the endpoint count.
    """
    weights = {address: e.weight for address, e in members.items() if e.weight > 0}
    total = sum(weights.values())
    if vnodes * total <= max_points:
        return {address: vnodes * weight for address, weight in weights.items()}
    return {address: max(1, max_points * weight // total) for address, weight in weights.items()}


def vnode_entries(
    endpoint: Endpoint, start: int, stop: int, seed: int, hasher: HashFunction
) -> list[Entry]:
    """Return the sorted ring entries of `endpoint`'s points `start` to `stop - 1`.

    Point `i` of an endpoint is always the same hash, so an endpoint whose point count
    changes keeps the points below the smaller count.
    """
    address = endpoint.address
    return sorted(
        (hasher(f"{address}-{index}".encode(), seed), address, index, endpoint)
        for index in range(start, stop)
    )


def table_bits(count: int) -> int:
    """Return the lookup table's size exponent for a ring of `count` points (8 to 20)."""
    return min(_MAX_TABLE_BITS, max(_MIN_TABLE_BITS, count.bit_length() + 3))


def _refresh_arc(
    table: list[Endpoint | None], points: list[int], owner: Endpoint, j: int, shift: int
) -> None:
    """Rewrite the buckets of the arc `(points[j - 1], points[j]]`, which `owner` owns."""
    last = points[j - 1] >> shift  # j == 0 is the arc wrapping past the end
    first = points[j] >> shift
    if j == 0:
        table[last + 1 :] = [owner] * (len(table) - last - 1)
        table[:first] = [owner] * first
    else:
        table[last + 1 : first] = [owner] * (first - last - 1)
    table[last] = table[first] = None


def build_table(points: list[int], owners: list[Endpoint], bits: int) -> list[Endpoint | None]:
    """Return the lookup table for sorted `points` owned by `owners`, from scratch."""
    shift = HASH_BITS - bits
    table: list[Endpoint | None] = [None] * (1 << bits)
    for j in range(len(points)):
        _refresh_arc(table, points, owners[j], j, shift)
    return table


def build_ring(
    endpoints: tuple[Endpoint, ...],
    members: dict[str, Endpoint],
    counts: dict[str, int],
    entries: list[Entry],
    *,
    previous: RingSnapshot | None = None,
    changed: Iterable[int] = (),
) -> RingSnapshot:
    """Return the snapshot for `endpoints` whose sorted ring entries are `entries`.

    `members` and `counts` are the endpoints by address and their point counts.

    With `previous` and the points `changed` (added or removed) since it, the lookup table is
    patched arc by arc instead of rebuilt, unless the table size has to change.
    """
    points = list(map(_point, entries))
    owners = list(map(_owner, entries))
    bits = table_bits(len(points))
    shift = HASH_BITS - bits
    if not points:
        table: list[Endpoint | None] = [None] * (1 << bits)
    elif previous is not None and previous.shift == shift:
        table = previous.table.copy()
        for point in changed:
            j = bisect_left(points, point) % len(points)
            _refresh_arc(table, points, owners[j], j, shift)
    else:
        table = build_table(points, owners, bits)
    if owners:
        owners.append(owners[0])
    live = sum(1 for endpoint in endpoints if endpoint.weight > 0)
    weight = sum(endpoint.weight for endpoint in endpoints)
    return RingSnapshot(
        endpoints, entries, points, owners, live, weight, shift, table, members, counts
    )


@typing.final
@attrs.define(eq=False, init=False)
class HashRing(HashBalancer):
    """Consistent hashing: a key maps to the first virtual node clockwise from its hash.

    Each endpoint owns `vnodes * weight` points on a ring of 64-bit XXH3 hashes (weight 0
    owns none, any weight > 0 owns at least `vnodes`) as long as the ring holds at most
    `max_ring_size` points; beyond that every endpoint gets its share of `max_ring_size` by
    weight (at least one point), as Envoy scales its ring hash, so no weight makes the ring
    exhaust memory. A lookup hashes the key and finds the
    first point at or after it, through a bucket table that answers most keys directly and
    a `bisect` of the sorted points for the rest (same answer either way). Adding or removing
    one endpoint moves only the keys that endpoint gains or loses. The ring is an immutable
    snapshot swapped in one assignment: readers never lock and never see a half-built ring;
    writers serialise on a lock.

    Args:
        endpoints: The initial endpoint set.
        vnodes: Virtual nodes per unit of weight, >= 1 and at most `max_ring_size`.
        seed: Hash seed in `[0, 2**64)`; rings with the same seed and endpoints agree.
        max_ring_size: Most points on the ring, in `[1, MAX_RING_SIZE]` (plus one per
            endpoint when there are more endpoints than that).

    Raises:
        ConfigurationError: On duplicate endpoints or a bad `vnodes`/`seed`/`max_ring_size`.
        ImportError: If the `xxhash` package is missing (`pip install 'meshkit[hashing]'`).
    """

    vnodes: int = attrs.field(
        on_setattr=attrs.setters.frozen,
        default=DEFAULT_VNODES,
        kw_only=True,
        validator=count(),
    )
    max_ring_size: int = attrs.field(
        on_setattr=attrs.setters.frozen,
        default=DEFAULT_MAX_RING_SIZE,
        kw_only=True,
        validator=count(1, MAX_RING_SIZE),
    )
    _ring: RingSnapshot = attrs.field(init=False, repr=False)

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        vnodes: int = DEFAULT_VNODES,
        seed: int = 0,
        max_ring_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        self.__attrs_init__(endpoints, vnodes=vnodes, seed=seed, max_ring_size=max_ring_size)

    def __attrs_post_init__(self) -> None:
        limit = self.max_ring_size
        require(self.vnodes <= limit, "vnodes", self.vnodes, f"must be <= max_ring_size ({limit})")
        self._ring = self._rebuild(None, self._load())

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot."""
        return self._ring.endpoints

    @property
    def snapshot(self) -> RingSnapshot:
        """The current immutable ring (for inspection and for balancers built on it)."""
        return self._ring

    def get(self, key: str | bytes) -> Endpoint:
        """Return the endpoint owning `key`: the first point at or after its hash, wrapping.

        Raises:
            ConfigurationError: If `key` is neither `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        return self._endpoint_at(hash_point(self._hash, key, self.seed))

    def get_n(self, key: str | bytes, n: int) -> tuple[Endpoint, ...]:
        """Return `n` distinct endpoints for `key`, walking clockwise from its owner.

        The first is `get(key)`; the rest are replicas. The answer depends only on the
        points met along the walk, so it is stable when an unrelated endpoint comes or goes.

        Raises:
            ConfigurationError: If `n` is not an int, is < 1 or is more than the endpoints
                with weight > 0, or `key` is neither `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        ring = self._ring
        require(type(n) is int, "n", n, "must be an int")
        point = self.hash_key(key)
        if ring.live == 0:
            raise NoAvailableEndpointError("HashRing")
        require(1 <= n <= ring.live, "n", n, f"must be in [1, {ring.live}]")
        start = bisect_left(ring.points, point)
        owners = ring.owners
        size = len(ring.points)
        chosen: dict[Endpoint, None] = {}
        step = 0
        while len(chosen) < n:  # ends: n <= the endpoints that own points
            chosen[owners[(start + step) % size]] = None
            step += 1
        return tuple(chosen)

    def pick(self, key: str | bytes | None = None) -> Endpoint:
        """Return `get(key)`; without a key, the owner of a random point.

        Raises:
            ConfigurationError: If `key` is neither None, `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        if key is None:
            return self._endpoint_at(random.getrandbits(HASH_BITS))
        return self._endpoint_at(hash_point(self._hash, key, self.seed))

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set: build the new ring fully, then swap it in.

        Endpoints present before and after, unchanged, keep their points (they are not hashed
        again), and the lookup table is patched only where points came or went, so an update
        that changes one endpoint costs about as much as `add()` or `remove()`.

        Raises:
            ConfigurationError: If the set holds duplicate addresses.
        """
        snapshot = check_endpoints(endpoints)
        with self._write_lock:
            self._ring = self._rebuild(self._ring, snapshot)

    def add(self, endpoint: Endpoint) -> None:
        """Add one endpoint, merging its points into the ring; only keys it now owns move.

        Raises:
            ConfigurationError: If an endpoint with that address is already on the ring.
        """
        with self._write_lock:
            old = self._ring
            self._ring = self._rebuild(old, check_endpoints((*old.endpoints, endpoint)))

    def remove(self, endpoint: Endpoint) -> None:
        """Remove the endpoint with `endpoint`'s address; only the keys it owned move.

        Raises:
            ConfigurationError: If no endpoint with that address is on the ring.
        """
        address = endpoint.address
        with self._write_lock:
            old = self._ring
            kept = tuple(e for e in old.endpoints if e.address != address)
            require(len(kept) < len(old.endpoints), "endpoint", address, "not on the ring")
            self._ring = self._rebuild(old, kept)

    def _endpoint_at(self, point: int) -> Endpoint:
        """Return the owner of `point` on the current ring.

        Raises:
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        try:
            return self._ring.locate(point)
        except IndexError:
            raise NoAvailableEndpointError("HashRing") from None

    def _rebuild(self, old: RingSnapshot | None, endpoints: tuple[Endpoint, ...]) -> RingSnapshot:
        """Return the ring of `endpoints`, reusing what `old` (if any) has of it.

        An endpoint present, unchanged, in both keeps its points below its new point count
        (they are not hashed again); only the points that came or went are hashed and patched
        into the lookup table, unless so many changed that building it afresh is cheaper.
        """
        members = {e.address: e for e in endpoints}
        counts = point_counts(members, self.vnodes, self.max_ring_size)
        before = old.counts if old else {}
        previous = old.members if old else {}
        same = {address for address, e in members.items() if previous.get(address) == e}
        # How many points each address losing some keeps (0 when it left or changed).
        keep = {
            address: counts[address] if address in same else 0
            for address, count in before.items()
            if address not in same or count > counts[address]
        }
        kept: list[Entry] = old.entries if old else []
        changed: list[int] = []
        if keep and not any(keep.values()):  # endpoints that left or changed: all points go
            changed = [e[0] for e in kept if e[1] in keep]
            kept = [e for e in kept if e[1] not in keep]
        elif keep:  # a scaled ring: some endpoints keep their first points
            changed = [e[0] for e in kept if e[1] in keep and e[2] >= keep[e[1]]]
            kept = [e for e in kept if e[1] not in keep or e[2] < keep[e[1]]]
        added: list[Entry] = []
        for address, endpoint in members.items():
            stop = counts.get(address, 0)
            start = min(before.get(address, 0), stop) if address in same else 0
            if start < stop:
                added += vnode_entries(endpoint, start, stop, self.seed, self._hash)
        added.sort()
        changed += map(_point, added)
        entries = sorted(kept + added) if added else kept  # sorted runs: a linear merge
        if old is None or len(changed) > len(entries) // 4:  # patching costs more than building
            return build_ring(endpoints, members, counts, entries)
        return build_ring(endpoints, members, counts, entries, previous=old, changed=changed)
