"""Load balancer throughput: meshkit's hash-based balancers against uhashring and bare floors.

Each benchmark times one round of `PICKS` lookups (a tight loop over prepared keys) and the
README divides by `PICKS`. In the same groups run uhashring (its default md5 hash, and with
XXH3 as `hash_fn`, its fastest stable choice) and two floors: an inline loop of the same hash
plus `bisect.bisect` on a plain list (ring), and of the same hash plus a list index (Maglev).
Balance (max/mean keys per endpoint) and the fraction of keys remapped when one endpoint is
removed are recorded in `extra_info` beside the speed.

Run: .venv/bin/pytest benchmarks/test_balancing.py --benchmark-only
"""

from __future__ import annotations

import hashlib
from bisect import bisect
from collections import Counter
from typing import TYPE_CHECKING, Any

import mmh3
import pytest
import uhashring
import xxhash

from meshkit.balancing import BoundedLoadRing, Endpoint, HashRing, Maglev, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable

PICKS = 10_000
KEYS = [f"user-{i:08d}" for i in range(PICKS)]
BALANCE_KEYS = [f"session-{i}" for i in range(200_000)]
SIZES = [10, 100, 1000]
ROUNDS = 15
xxh3 = xxhash.xxh3_64_intdigest


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(host=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", port=80) for i in range(n)]


def run(benchmark: Any, loop: Callable[[], object], **extra: object) -> None:
    benchmark.extra_info.update(picks_per_round=PICKS, **extra)
    benchmark.pedantic(loop, rounds=ROUNDS, warmup_rounds=1, iterations=1)


def quality(
    get: Callable[[str], object], get_without_first: Callable[[str], object], n: int
) -> dict[str, float]:
    """Max/mean keys per endpoint, and the share of keys that move when one endpoint goes."""
    before = list(map(get, BALANCE_KEYS))
    after = list(map(get_without_first, BALANCE_KEYS))
    counts = Counter(before)
    moved = sum(a != b for a, b in zip(before, after, strict=True)) / len(BALANCE_KEYS)
    return {
        "max_over_mean": round(max(counts.values()) / (len(BALANCE_KEYS) / n), 4),
        "remap_fraction": round(moved, 4),
        "ideal_remap": round(1 / n, 4),
    }


@pytest.mark.parametrize("n", SIZES)
class TestPickThroughput:
    @pytest.mark.benchmark(group="pick")
    def test_meshkit_hashring(self, benchmark: Any, n: int) -> None:
        eps = endpoints(n)
        ring = HashRing(eps)
        get = ring.get

        def loop() -> None:
            for key in KEYS:
                get(key)

        run(benchmark, loop, **quality(get, HashRing(eps[1:]).get, n))

    @pytest.mark.benchmark(group="pick")
    def test_meshkit_hashring_pick(self, benchmark: Any, n: int) -> None:
        """`pick(key)`, the LoadBalancer path, beside `get(key)` above."""
        pick = HashRing(endpoints(n)).pick

        def loop() -> None:
            for key in KEYS:
                pick(key)

        run(benchmark, loop)

    @pytest.mark.benchmark(group="pick")
    def test_meshkit_maglev_pick(self, benchmark: Any, n: int) -> None:
        """`pick(key)`, the LoadBalancer path, beside `get(key)`."""
        pick = Maglev(endpoints(n)).pick

        def loop() -> None:
            for key in KEYS:
                pick(key)

        run(benchmark, loop)

    @pytest.mark.benchmark(group="pick")
    def test_meshkit_maglev(self, benchmark: Any, n: int) -> None:
        eps = endpoints(n)
        get = Maglev(eps).get

        def loop() -> None:
            for key in KEYS:
                get(key)

        run(benchmark, loop, **quality(get, Maglev(eps[1:]).get, n))

    @pytest.mark.benchmark(group="pick")
    def test_meshkit_bounded_pick_report(self, benchmark: Any, n: int) -> None:
        lb = BoundedLoadRing(endpoints(n))
        pick, report, ok = lb.pick, lb.report, Outcome.SUCCESS

        def loop() -> None:
            for key in KEYS:
                report(pick(key), ok, 0.0)

        run(benchmark, loop)

    @pytest.mark.benchmark(group="pick")
    def test_uhashring_default(self, benchmark: Any, n: int) -> None:
        names = [e.address for e in endpoints(n)]
        get = uhashring.HashRing(nodes=names).get_node

        def loop() -> None:
            for key in KEYS:
                get(key)

        run(benchmark, loop, **quality(get, uhashring.HashRing(nodes=names[1:]).get_node, n))

    @pytest.mark.benchmark(group="pick")
    def test_uhashring_xxh3(self, benchmark: Any, n: int) -> None:
        names = [e.address for e in endpoints(n)]
        get = uhashring.HashRing(nodes=names, hash_fn=lambda k: xxh3(k.encode())).get_node

        def loop() -> None:
            for key in KEYS:
                get(key)

        run(benchmark, loop)

    @pytest.mark.benchmark(group="pick")
    def test_floor_hash_bisect(self, benchmark: Any, n: int) -> None:
        snap = HashRing(endpoints(n)).snapshot
        points, owners, size = snap.points, snap.owners[:-1], len(snap.points)

        def loop() -> None:
            for key in KEYS:
                owners[bisect(points, xxh3(key.encode(), 0)) % size]

        run(benchmark, loop)

    @pytest.mark.benchmark(group="pick")
    def test_floor_hash_table(self, benchmark: Any, n: int) -> None:
        lb = Maglev(endpoints(n))
        table, size = list(lb.table), lb.table_size

        def loop() -> None:
            for key in KEYS:
                table[xxh3(key.encode(), 0) % size]

        run(benchmark, loop)

    @pytest.mark.benchmark(group="pick")
    def test_floor_hash_table_in_a_function(self, benchmark: Any, n: int) -> None:
        """The bare table lookup behind one Python call: what any get() method must pay."""
        lb = Maglev(endpoints(n))
        table, size = list(lb.table), lb.table_size

        def get(key: str) -> Endpoint:
            return table[xxh3(key.encode(), 0) % size]

        def loop() -> None:
            for key in KEYS:
                get(key)

        run(benchmark, loop)


class TestRingChanges:
    @pytest.mark.benchmark(group="ring-change-100")
    def test_meshkit_hashring_add_remove(self, benchmark: Any) -> None:
        ring = HashRing(endpoints(100))
        extra = Endpoint(host="10.9.9.9", port=80)

        def change() -> None:
            ring.add(extra)
            ring.remove(extra)

        benchmark.extra_info["operations_per_round"] = 2
        benchmark.pedantic(change, rounds=50, warmup_rounds=2, iterations=1)

    @pytest.mark.benchmark(group="ring-change-100")
    def test_uhashring_add_remove(self, benchmark: Any) -> None:
        ring = uhashring.HashRing(nodes=[e.address for e in endpoints(100)])

        def change() -> None:
            ring.add_node("10.9.9.9:80")
            ring.remove_node("10.9.9.9:80")

        benchmark.extra_info["operations_per_round"] = 2
        benchmark.pedantic(change, rounds=50, warmup_rounds=2, iterations=1)

    @pytest.mark.benchmark(group="ring-change-100")
    def test_meshkit_hashring_update_one_change(self, benchmark: Any) -> None:
        eps = endpoints(101)
        ring = HashRing(eps)

        def change() -> None:
            ring.update(eps[1:])
            ring.update(eps)

        benchmark.extra_info["operations_per_round"] = 2
        benchmark.pedantic(change, rounds=50, warmup_rounds=2, iterations=1)

    @pytest.mark.benchmark(group="ring-change-100")
    def test_meshkit_hashring_build(self, benchmark: Any) -> None:
        eps = endpoints(100)
        benchmark.extra_info["operations_per_round"] = 1
        benchmark.pedantic(HashRing, args=(eps,), rounds=10, warmup_rounds=1, iterations=1)

    @pytest.mark.benchmark(group="ring-change-100")
    def test_meshkit_maglev_update(self, benchmark: Any) -> None:
        lb, eps = Maglev(), endpoints(100)
        benchmark.extra_info["operations_per_round"] = 1
        benchmark.pedantic(lb.update, args=(eps,), rounds=5, warmup_rounds=1, iterations=1)


HASHES: dict[str, Callable[[str], int]] = {
    "xxh3_64(str.encode())": lambda k: xxh3(k.encode(), 7),
    "xxh64(str.encode())": lambda k: xxhash.xxh64_intdigest(k.encode(), 7),
    "mmh3.hash(str) 32-bit": lambda k: mmh3.hash(k, 7),
    "mmh3_32_uintdigest(str.encode())": lambda k: mmh3.mmh3_32_uintdigest(k.encode(), 7),
    "mmh3.hash64(str) 2x64-bit": lambda k: mmh3.hash64(k, 7)[0],
    "md5(str.encode())": lambda k: int.from_bytes(
        hashlib.md5(k.encode(), usedforsecurity=False).digest()[:8], "big"
    ),
}


@pytest.mark.parametrize("name", list(HASHES))
@pytest.mark.benchmark(group="hash-function")
def test_hash_function(benchmark: Any, name: str) -> None:
    """The measurement behind the hash choice: one call per key, str keys, 64-bit preferred."""
    function = HASHES[name]

    def loop() -> None:
        for key in KEYS:
            function(key)

    run(benchmark, loop)
