"""Draw the load-balancing plots of docs/balancing/hashing.md.

Run from the repository root: `.venv/bin/python docs/scripts/plot_balancing.py` (needs
matplotlib, which is not a meshkit dependency). Writes docs/balancing/img/keys-per-node.png and
docs/balancing/img/picks-per-second.png. The figures are measured on the machine that runs it.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

import meshkit.balancing as mb
from meshkit.balancing import BoundedLoadRing, Endpoint, HashRing, Maglev, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable

OUT = Path(__file__).resolve().parent.parent / "balancing" / "img"
NODES = 100
KEYS = 200_000
# Strategies measured in the picks/s plot: (name, uses a key). Those missing are skipped.
STRATEGIES = [
    ("RoundRobin", False),
    ("WeightedRoundRobin", False),
    ("Random", False),
    ("LeastRequest", False),
    ("PeakEwma", False),
    ("HashRing", True),
    ("Maglev", True),
    ("BoundedLoadRing", True),
]


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(host=f"10.0.{i // 256}.{i % 256}", port=80) for i in range(n)]


def keys_per_node(pick: Callable[[bytes], Endpoint], keys: list[bytes]) -> list[int]:
    counts = Counter(map(pick, keys))
    return sorted(counts.values(), reverse=True)


def skewed_keys(count: int) -> list[bytes]:
    """Keys drawn from a Zipf-like law: a few hot keys, a long tail."""
    rng = random.Random(7)
    weights = [1 / (rank + 1) for rank in range(5_000)]
    return [b"k%d" % k for k in rng.choices(range(5_000), weights=weights, k=count)]


def plot_keys_per_node() -> None:
    eps = endpoints(NODES)
    uniform = [i.to_bytes(8, "little") for i in range(KEYS)]
    skewed = skewed_keys(KEYS // 10)
    bounded = BoundedLoadRing(eps)  # every pick stays in flight: the worst case for the bound
    series = {
        "HashRing, 160 vnodes": keys_per_node(HashRing(eps).get, uniform),
        "HashRing, 40 vnodes": keys_per_node(HashRing(eps, vnodes=40).get, uniform),
        "Maglev, table 65537": keys_per_node(Maglev(eps).get, uniform),
    }
    hot = {
        "HashRing (no bound)": keys_per_node(HashRing(eps).get, skewed),
        "BoundedLoadRing, c=1.25": keys_per_node(bounded.pick, skewed),
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    mean = KEYS / NODES
    for label, counts in series.items():
        left.plot([c / mean for c in counts], label=f"{label} (max/mean {counts[0] / mean:.2f})")
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set(title=f"{KEYS:,} uniform keys, {NODES} endpoints", xlabel="endpoints, busiest first")
    left.set_ylabel("keys / mean")
    left.legend(fontsize=8)
    hot_mean = len(skewed) / NODES
    for label, counts in hot.items():
        right.plot(
            [c / hot_mean for c in counts], label=f"{label} (max/mean {counts[0] / hot_mean:.2f})"
        )
    right.axhline(1.25, color="red", linewidth=0.8, linestyle="--", label="ceil(c x mean)")
    right.set(
        title=f"{len(skewed):,} Zipf-skewed requests in flight", xlabel="endpoints, busiest first"
    )
    right.set_ylabel("in-flight / mean")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "keys-per-node.png", dpi=110)
    plt.close(fig)


def picks_per_second(name: str, *, keyed: bool, rounds: int = 9, picks: int = 20_000) -> float:
    balancer = getattr(mb, name)(endpoints(NODES))
    pick, report, ok = balancer.pick, balancer.report, Outcome.SUCCESS
    keys = [f"user-{i:08d}" for i in range(picks)]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        if keyed:
            for key in keys:
                report(pick(key), ok, 0.001)
        else:
            for _key in keys:
                report(pick(), ok, 0.001)
        best = min(best, time.perf_counter() - start)
    return picks / best


def plot_picks_per_second() -> None:
    measured = {
        name: picks_per_second(name, keyed=keyed) for name, keyed in STRATEGIES if hasattr(mb, name)
    }
    names = sorted(measured, key=measured.__getitem__)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    bars = ax.barh(names, [measured[n] / 1e6 for n in names], color="#3f7fbf")
    ax.bar_label(bars, labels=[f"{measured[n] / 1e6:.2f} M" for n in names], fontsize=8, padding=3)
    ax.set(xlabel="million pick + report per second (one thread)", title=f"{NODES} endpoints")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(OUT / "picks-per-second.png", dpi=110)
    plt.close(fig)
    for name in reversed(names):
        print(f"{name:20s} {measured[name] / 1e6:6.2f} M picks/s")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    plot_keys_per_node()
    plot_picks_per_second()


if __name__ == "__main__":
    main()
