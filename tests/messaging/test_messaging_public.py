"""The public surface of meshkit.messaging: `__all__` complete and sorted, imports light."""

from __future__ import annotations

import subprocess
import sys
import types

import meshkit.messaging


def _isort_key(name: str) -> tuple[int, str]:
    rank = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return rank, name


class TestPublicSurface:
    def test_all_is_sorted_and_complete(self) -> None:
        """__all__ is sorted as ruff sorts it and lists every public name."""
        exported = list(meshkit.messaging.__all__)
        assert exported == sorted(exported, key=_isort_key)
        public = {
            attr
            for attr, value in vars(meshkit.messaging).items()
            if not attr.startswith("_")
            and not isinstance(value, types.ModuleType)
            and attr != "annotations"
        }
        assert set(exported) == public

    def test_classes_are_defined_in_meshkit(self) -> None:
        """Every exported class is meshkit's own (MessageHandler is a type alias)."""
        for attr in meshkit.messaging.__all__:
            value = getattr(meshkit.messaging, attr)
            if isinstance(value, type):
                assert value.__module__.startswith("meshkit.messaging"), attr

    def test_import_loads_no_driver(self) -> None:
        """`import meshkit.messaging` loads neither nats, redis nor psycopg."""
        code = (
            "import sys, meshkit.messaging, meshkit.testing\n"
            "heavy = {'nats', 'redis', 'psycopg', 'psycopg_pool', 'faststream'}\n"
            "print(sorted(heavy & set(sys.modules)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"
