"""meshkit.grpc's public surface, and that importing it loads no grpcio."""

from __future__ import annotations

import subprocess
import sys
import types

import meshkit.grpc


def _key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


class TestPublicApi:
    """The package's exports."""

    def test_all_is_sorted_and_complete(self) -> None:
        """__all__ is sorted and lists exactly the public names, all defined in meshkit."""
        exported = list(meshkit.grpc.__all__)
        assert exported == sorted(exported, key=_key)
        public = {
            name
            for name, value in vars(meshkit.grpc).items()
            if not name.startswith("_")
            and not isinstance(value, types.ModuleType)
            and name != "annotations"
        }
        assert set(exported) == public
        for name in exported:
            assert getattr(meshkit.grpc, name).__module__.startswith("meshkit")

    def test_import_is_light(self) -> None:
        """`import meshkit.grpc` imports neither grpcio, protobuf, yaml nor the observers."""
        code = (
            "import sys, meshkit.grpc\n"
            "heavy = {'grpc', 'google.protobuf', 'yaml', 'prometheus_client', 'opentelemetry'}\n"
            "print(sorted(heavy & set(sys.modules)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"
