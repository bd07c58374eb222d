"""The stable, seeded, non-cryptographic hash behind every hash-based balancer.

meshkit uses xxHash's XXH3 (64-bit) from the `xxhash` package. It was chosen over MurmurHash3
(`mmh3`) by measurement (benchmarks/test_balancing.py, group `hash-function`; see
docs/balancing/hashing.md): per `str` key XXH3-64 costs about 53 ns including the UTF-8
encode, mmh3's 64-bit `hash64` about 80 ns, and only mmh3's 32-bit `hash` is quicker (46 ns),
at the price of ring points that collide on large rings; on `bytes` XXH3 is the fastest.
Python's built-in `hash()` is salted per process and md5 is slow, so neither is
used. The library is imported lazily, on the first construction of a hash-based balancer, so
`import meshkit` never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import in_range, instance_of
from meshkit.balancing._endpoint import Endpoint, check_endpoints

if TYPE_CHECKING:
    from meshkit.balancing._endpoint import Outcome

__all__ = [
    "HASH_BITS",
    "INSTALL_HINT",
    "HashBalancer",
    "HashFunction",
    "bad_key",
    "hash_point",
    "load_hash",
]

HASH_BITS = 64
"""Width of the hash values (ring points are in `[0, 2**64)`)."""

INSTALL_HINT = "pip install 'meshkit[hashing]'"

HashFunction = Callable[[bytes, int], int]
"""`hash(data, seed) -> int` in `[0, 2**HASH_BITS)`."""


def load_hash() -> HashFunction:
    """Import the hash library and return its seeded 64-bit hash function.

    Raises:
        ImportError: If `xxhash` is not installed; the message says how to install it.
    """
    try:
        import xxhash  # noqa: PLC0415 - optional dependency, imported on first use
    except ImportError as exc:
        msg = f"meshkit's hash-based balancers need the xxhash package: {INSTALL_HINT}"
        raise ImportError(msg, name="xxhash") from exc
    hash_function: HashFunction = xxhash.xxh3_64_intdigest
    return hash_function


def bad_key(key: object) -> ConfigurationError:
    """Return the error for a key that cannot be hashed: not `str`/`bytes`, or not UTF-8."""
    return ConfigurationError("key", key, "must be str (encodable as UTF-8) or bytes")


def hash_point(hasher: HashFunction, key: str | bytes, seed: int) -> int:
    """Return the 64-bit hash of `key` under `seed`: the one hash step of every hash balancer.

    A `str` is hashed as its UTF-8 bytes; `bytes`, `bytearray` and `memoryview` as they are.

    Raises:
        ConfigurationError: If `key` is neither `str` nor bytes-like, or cannot be encoded.
    """
    try:
        return hasher(key.encode() if isinstance(key, str) else key, seed)
    except (TypeError, UnicodeEncodeError):
        raise bad_key(key) from None


@attrs.define(eq=False, init=False)
class HashBalancer:
    """Base of `HashRing` and `Maglev`: the initial endpoints, the seed, the hash, the lock.

    A subclass adds its knob and its snapshot, builds the snapshot from `_initial` in
    `__attrs_post_init__` (after `_load()`), and serialises writers on `_write_lock`.
    """

    _initial: tuple[Endpoint, ...] = attrs.field(
        default=(), alias="endpoints", converter=check_endpoints, repr=False
    )
    seed: int = attrs.field(
        on_setattr=attrs.setters.frozen,
        default=0,
        kw_only=True,
        validator=[instance_of(int), in_range(0, 2**HASH_BITS - 1)],
    )
    _hash: HashFunction = attrs.field(init=False, repr=False)
    _write_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)

    def hash_key(self, key: str | bytes) -> int:
        """Return the 64-bit hash of `key` (`str` keys are hashed as UTF-8).

        Raises:
            ConfigurationError: If `key` is neither `str` nor `bytes`.
        """
        return hash_point(self._hash, key, self.seed)

    def report(self, endpoint: Endpoint, outcome: Outcome, latency: float) -> None:
        """Ignore the report: placement depends on keys, never on outcomes."""

    def _load(self) -> tuple[Endpoint, ...]:
        """Load the hash function; return the initial endpoints, dropping the reference."""
        self._hash = load_hash()
        initial, self._initial = self._initial, ()
        return initial
