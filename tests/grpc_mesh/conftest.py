"""Fixtures of the gRPC tests: grpc.aio runs on asyncio only."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep the C core quiet; before grpc loads

import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """grpc.aio runs on asyncio only: the gRPC tests do not run on trio."""
    return ("asyncio", {})
