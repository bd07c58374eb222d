"""A/B timing of the balancers: an older commit's code beside the working tree, interleaved.

The suites in `test_balancing*.py` compare meshkit with its peers in one run; this script
answers a narrower question that they cannot on a shared machine: is the code of commit REV
faster than the current code for the same call? It loads REV's version of a balancing module
(`git show REV:src/meshkit/balancing/_x.py`) as a separate module, builds both balancers on the
same 100 endpoints, and alternates rounds of 2,000 calls between them, timing CPU time (so
other processes on the machine matter less) and keeping the fastest of 40 rounds.

    .venv/bin/python benchmarks/balancing_ab.py c2c267b [hashring,maglev,bounded,lr,ewma]
"""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import time
import timeit
import types
from typing import TYPE_CHECKING, Any

from meshkit.balancing import (
    BoundedLoadRing,
    Endpoint,
    HashRing,
    LeastRequest,
    Maglev,
    Outcome,
    PeakEwma,
)

if TYPE_CHECKING:
    from collections.abc import Callable

KEYS = [f"user-{i:08d}" for i in range(2000)]
ROUNDS = 40


def load_old(rev: str, name: str, deps: tuple[str, ...] = ()) -> Any:
    """Return module `meshkit.balancing.<name>` as it was at `rev`, with `deps` from `rev` too."""
    saved = {dep: sys.modules[f"meshkit.balancing.{dep}"] for dep in deps}
    try:
        for dep in deps:
            sys.modules[f"meshkit.balancing.{dep}"] = load_old(rev, dep)
        path = f"{rev}:src/meshkit/balancing/{name}.py"
        # The revision comes from whoever runs this script, on their own checkout.
        command = ["git", "show", path]
        source = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
        module = types.ModuleType(f"old{name}")
        sys.modules[module.__name__] = module
        exec(compile(source, module.__name__, "exec"), module.__dict__)  # noqa: S102
        return module
    finally:
        sys.modules.update({f"meshkit.balancing.{dep}": mod for dep, mod in saved.items()})


def pick_report(balancer: Any, *, keyed: bool) -> Callable[[str], None]:
    """Return a call doing one pick (with the key or not) and reporting it."""
    pick, report, ok = balancer.pick, balancer.report, Outcome.SUCCESS
    if keyed:
        return lambda key: report(pick(key), ok, 0.001)
    return lambda _key: report(pick(), ok, 0.001)


def cases(rev: str, targets: list[str]) -> dict[str, tuple[Callable[[str], object], ...]]:
    """Return each measured call, as (REV's, the working tree's)."""
    eps = [Endpoint(host=f"10.0.{i // 256}.{i % 256}", port=80) for i in range(100)]
    weighted = [Endpoint(host=e.host, port=e.port, weight=i % 5 + 1) for i, e in enumerate(eps)]
    found: dict[str, tuple[Callable[[str], object], ...]] = {}
    old: Any
    new: Any
    if "hashring" in targets:
        old = load_old(rev, "_hashring").HashRing(eps)
        new = HashRing(eps)
        found["HashRing.get"] = (old.get, new.get)
        found["HashRing.pick(key)"] = (old.pick, new.pick)
    if "maglev" in targets:
        old, new = load_old(rev, "_maglev").Maglev(eps), Maglev(eps)
        found["Maglev.get"] = (old.get, new.get)
        found["Maglev.pick(key)"] = (old.pick, new.pick)
    if "bounded" in targets:
        old, new = load_old(rev, "_bounded").BoundedLoadRing(eps), BoundedLoadRing(eps)
        found["BoundedLoadRing.pick+report"] = (
            pick_report(old, keyed=True),
            pick_report(new, keyed=True),
        )
    if "lr" in targets:
        module = load_old(rev, "_leastrequest", ("_snapshot",))
        for label, endpoints in (("equal", eps), ("weighted", weighted)):
            old = module.LeastRequest(endpoints, rng=random.Random(1))
            new = LeastRequest(endpoints, rng=random.Random(1))
            found[f"LeastRequest({label}).pick+report"] = (
                pick_report(old, keyed=False),
                pick_report(new, keyed=False),
            )
    if "ewma" in targets:
        module = load_old(rev, "_ewma", ("_snapshot",))
        old, new = module.PeakEwma(eps, rng=random.Random(1)), PeakEwma(eps, rng=random.Random(1))
        found["PeakEwma.pick+report"] = (
            pick_report(old, keyed=False),
            pick_report(new, keyed=False),
        )
    return found


def fastest(call: Callable[[str], object], rounds: list[float]) -> None:
    """Time one round of `call` over KEYS in CPU time and append it to `rounds`."""

    def run() -> None:
        for key in KEYS:
            call(key)

    rounds.append(timeit.timeit(run, number=1, timer=time.process_time))


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    default = "hashring,maglev,bounded,lr,ewma"
    targets = (sys.argv[2] if len(sys.argv) > 2 else default).split(",")
    gc.disable()
    for name, (old, new) in cases(rev, targets).items():
        old_rounds: list[float] = []
        new_rounds: list[float] = []
        for _ in range(ROUNDS):
            fastest(old, old_rounds)
            fastest(new, new_rounds)
        before, after = min(old_rounds) / len(KEYS) * 1e9, min(new_rounds) / len(KEYS) * 1e9
        line = f"{name:36s} {rev}: {before:6.0f} ns  tree: {after:6.0f} ns  {after / before:.2f}"
        sys.stdout.write(line + "\n")


if __name__ == "__main__":
    main()
