"""The public surface: `__all__` matches what each package exports, and imports stay light."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types

import pytest

PACKAGES = [
    "meshkit",
    "meshkit.resilience",
    "meshkit.balancing",
    "meshkit.eventsourcing",
    "meshkit.testing",
    "meshkit.discovery",
    "meshkit.saga",
]


def _isort_key(name: str) -> tuple[int, str]:
    """Sort as ruff's RUF022 does: CONSTANTS, then Classes, then functions."""
    rank = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return rank, name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_complete(name: str) -> None:
    """__all__ is sorted, names only public objects, and lists every public re-export."""
    module = importlib.import_module(name)
    exported: list[str] = list(module.__all__)
    assert exported == sorted(exported, key=_isort_key)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and attr != "annotations"
    }
    assert set(exported) == public


@pytest.mark.parametrize("name", PACKAGES)
def test_exports_name_their_public_home(name: str) -> None:
    """Each exported class or function says, in `__module__`, the package it is imported from."""
    module = importlib.import_module(name)
    for attr in module.__all__:
        value = getattr(module, attr)
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__ == name, (attr, value.__module__)


def test_one_import_path_per_public_name() -> None:
    """No public name is exported by two packages: each has exactly one import path."""
    homes: dict[str, list[str]] = {}
    for name in PACKAGES:
        for attr in importlib.import_module(name).__all__:
            homes.setdefault(attr, []).append(name)
    assert {attr: where for attr, where in homes.items() if len(where) > 1} == {}


def test_top_level_holds_only_the_clock_and_the_errors() -> None:
    """`meshkit` itself exports the clock and the error tree; everything else lives in an area."""
    import meshkit  # noqa: PLC0415 - the module under test

    others = {
        attr
        for attr in meshkit.__all__
        if not (isinstance(getattr(meshkit, attr), type) and attr.endswith("Error"))
    }
    assert others == {"SYSTEM_CLOCK", "Clock", "SystemClock"}


def test_import_needs_only_anyio_and_attrs() -> None:
    """`import meshkit` (and its pattern packages) loads no optional dependency."""
    code = (
        "import sys, meshkit, meshkit.resilience, meshkit.balancing, meshkit.eventsourcing\n"
        "import meshkit.discovery\n"
        "import meshkit.saga\n"
        "heavy = {'grpc', 'consul', 'psycopg', 'psycopg_pool', 'redis', 'xxhash', 'mmh3'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
