"""The public surface: `__all__` matches what each package exports, and imports stay light."""

from __future__ import annotations

import importlib
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
def test_exports_belong_to_meshkit(name: str) -> None:
    """Each exported class or function is defined inside meshkit."""
    module = importlib.import_module(name)
    for attr in module.__all__:
        value = getattr(module, attr)
        origin = getattr(value, "__module__", "meshkit")
        assert origin.startswith("meshkit"), (attr, origin)


def test_import_needs_only_anyio_and_attrs() -> None:
    """`import meshkit` (and its pattern packages) loads no optional dependency."""
    code = (
        "import sys, meshkit, meshkit.resilience, meshkit.balancing, meshkit.eventsourcing\n"
        "import meshkit.saga\n"
        "heavy = {'grpc', 'consul', 'psycopg', 'psycopg_pool', 'redis', 'xxhash', 'mmh3'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
