"""`Maglev`: Google's consistent hashing into a fixed-size lookup table (NSDI 2016)."""

from __future__ import annotations

import random
import typing

import attrs

from meshkit._errors import NoAvailableEndpointError
from meshkit._validate import count, require
from meshkit.balancing._endpoint import Endpoint, check_endpoints
from meshkit.balancing._hash import HASH_BITS, HashBalancer, HashFunction, hash_point

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DEFAULT_TABLE_SIZE", "Maglev", "MaglevSnapshot", "is_prime", "populate"]

DEFAULT_TABLE_SIZE = 65537
"""The default lookup table size: a prime, about 650 slots per endpoint at 100 endpoints."""

MAX_TABLE_SIZE = 16_777_259
"""The largest accepted table size: the first prime above 2**24 (a 16M-slot table already
takes over 100 MB; Maglev's paper uses 65537 for hundreds of backends)."""

_LOW32 = 0xFFFFFFFF


def is_prime(n: int) -> bool:
    """Return whether `n` is prime (trial division; table sizes are small)."""
    if n < 2:  # noqa: PLR2004 - the definition of a prime
        return False
    divisor = 2
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 1
    return True


def _check_table_size(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    require(value <= MAX_TABLE_SIZE, attribute.name, value, f"must be at most {MAX_TABLE_SIZE}")
    require(is_prime(value), attribute.name, value, "must be a prime")


@attrs.frozen
class MaglevSnapshot:
    """One immutable Maglev table, swapped whole on `update()`.

    Attributes:
        endpoints: The endpoint set, in the order given.
        table: `table[hash % size]` is the endpoint for a key; empty when nothing has weight.
    """

    endpoints: tuple[Endpoint, ...]
    table: list[Endpoint]


def populate(
    endpoints: tuple[Endpoint, ...], size: int, seed: int, hasher: HashFunction
) -> list[Endpoint]:
    """Fill a Maglev lookup table of prime `size`, each endpoint in proportion to its weight.

    Each endpoint walks its own permutation of the slots (`offset + j * skip`, both from its
    address's hash) and takes turns claiming its next free slot; an endpoint of weight `w`
    takes a turn in `w / max_weight` of the rounds. Endpoints are ordered by address, so the
    table does not depend on the order they were given in.
    """
    live = sorted((e for e in endpoints if e.weight > 0), key=lambda e: (e.host, e.port))
    if not live:
        return []
    hashes = [hasher(e.address.encode(), seed) for e in live]
    position = [(h >> 32) % size for h in hashes]
    skip = [(h & _LOW32) % (size - 1) + 1 for h in hashes]
    weights = [e.weight for e in live]
    top = max(weights)
    credit = [0] * len(live)
    table: list[Endpoint | None] = [None] * size
    filled = 0
    while True:
        for i, endpoint in enumerate(live):
            credit[i] += weights[i]
            if credit[i] < top:
                continue
            credit[i] -= top
            slot, step = position[i], skip[i]
            while table[slot] is not None:
                slot = slot + step - size if slot + step >= size else slot + step
            table[slot] = endpoint
            position[i] = slot + step - size if slot + step >= size else slot + step
            filled += 1
            if filled == size:
                return typing.cast("list[Endpoint]", table)


@typing.final
@attrs.define(eq=False, init=False)
class Maglev(HashBalancer):
    """Maglev hashing: a key's hash indexes a prime-sized table filled from endpoint permutations.

    Lookups cost one hash and one list index, whatever the endpoint count; load spreads within
    a few percent of even (weights honoured); when an endpoint comes or goes, its slots move
    plus a small extra share of others'. Building the table costs about `size * ln(size)`
    probes (tens of milliseconds at the default size), paid in `update()`, off the read path.

    Args:
        endpoints: The initial endpoint set.
        table_size: The lookup table's size; a prime, at most `MAX_TABLE_SIZE`, and at least
            the number of endpoints of weight > 0 (a smaller table leaves some without a
            slot); keep it well above (Maglev's paper suggests 100 slots per endpoint).
        seed: Hash seed in `[0, 2**64)`.

    Raises:
        ConfigurationError: On duplicate endpoints, a non-prime `table_size`, one above
            `MAX_TABLE_SIZE` or below the number of endpoints of weight > 0, or a bad `seed`.
        ImportError: If the `xxhash` package is missing (`pip install 'meshkit[hashing]'`).
    """

    table_size: int = attrs.field(
        on_setattr=attrs.setters.frozen,
        default=DEFAULT_TABLE_SIZE,
        kw_only=True,
        validator=[count(), _check_table_size],
    )
    _snapshot: MaglevSnapshot = attrs.field(init=False, repr=False)

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        table_size: int = DEFAULT_TABLE_SIZE,
        seed: int = 0,
    ) -> None:
        self.__attrs_init__(endpoints, table_size=table_size, seed=seed)

    def __attrs_post_init__(self) -> None:
        self._snapshot = self._build(self._load())

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint snapshot."""
        return self._snapshot.endpoints

    @property
    def table(self) -> tuple[Endpoint, ...]:
        """A copy of the current lookup table (empty when no endpoint has weight > 0)."""
        return tuple(self._snapshot.table)

    def get(self, key: str | bytes) -> Endpoint:
        """Return the endpoint for `key`: `table[hash(key) % table_size]`.

        Raises:
            ConfigurationError: If `key` is neither `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        return self._slot(hash_point(self._hash, key, self.seed))

    def pick(self, key: str | bytes | None = None) -> Endpoint:
        """Return `get(key)`; without a key, a random slot's endpoint.

        Raises:
            ConfigurationError: If `key` is neither None, `str` nor `bytes`.
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        if key is None:
            return self._slot(random.getrandbits(HASH_BITS))
        return self._slot(hash_point(self._hash, key, self.seed))

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set: fill a new table fully, then swap it in.

        Raises:
            ConfigurationError: If the set holds duplicate addresses, or more endpoints of
                weight > 0 than `table_size` (naming `table_size`); the table is then kept.
        """
        snapshot = check_endpoints(endpoints)
        with self._write_lock:
            self._snapshot = self._build(snapshot)

    def _slot(self, point: int) -> Endpoint:
        """Return the endpoint of the slot `point` falls in.

        Raises:
            NoAvailableEndpointError: If no endpoint has weight > 0.
        """
        try:
            return self._snapshot.table[point % self.table_size]
        except IndexError:
            raise NoAvailableEndpointError("Maglev") from None

    def _build(self, endpoints: tuple[Endpoint, ...]) -> MaglevSnapshot:
        """Fill the table for `endpoints`.

        Raises:
            ConfigurationError: If the table has fewer slots than endpoints of weight > 0,
                which would leave some of them without a slot.
        """
        live = sum(1 for e in endpoints if e.weight > 0)
        size = self.table_size
        reason = f"must be at least the number of endpoints with weight > 0 ({live})"
        require(size >= live, "table_size", size, reason)
        return MaglevSnapshot(
            endpoints, populate(endpoints, self.table_size, self.seed, self._hash)
        )
