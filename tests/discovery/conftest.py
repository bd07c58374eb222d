"""Fixtures of the discovery tests: real Consul agents, started and stopped by the tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from consul_agents import ConsulAgent, cluster, consul_binary, dev_agent
from services import missing_service

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def consul_bin() -> str:
    """Return the Consul binary, or skip (fail under MESHKIT_REQUIRE_SERVICES=1)."""
    binary = consul_binary()
    if binary is None:
        missing_service(
            "no consul binary: set MESHKIT_CONSUL_BIN or run "
            "../shared/tools/install-consul .tools/consul"
        )
    assert binary is not None
    return binary


@pytest.fixture
def consul(consul_bin: str, tmp_path: Path) -> Iterator[ConsulAgent]:
    """Run a `consul agent -dev` of this test's own on free loopback ports."""
    with dev_agent(consul_bin, tmp_path) as agent:
        yield agent


@pytest.fixture
def consul_cluster(consul_bin: str, tmp_path: Path) -> Iterator[list[ConsulAgent]]:
    """Run a three-server Consul cluster on loopback."""
    with cluster(consul_bin, tmp_path) as agents:
        yield agents
