"""The checked-in Echo stubs are what grpcio-tools generates from echo.proto today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # the stubs sit at the tests/ root, beside the helpers


class TestStubs:
    """Generated code stays in step with its .proto."""

    def test_stubs_are_current(self, tmp_path: Path) -> None:
        """Regenerating the Python stubs reproduces the checked-in files."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{HERE}",
                f"--python_out={tmp_path}",
                f"--grpc_python_out={tmp_path}",
                str(HERE / "echo.proto"),
            ],
            check=True,
            capture_output=True,
        )
        for name in ("echo_pb2.py", "echo_pb2_grpc.py"):
            assert (tmp_path / name).read_text() == (HERE / name).read_text(), name
