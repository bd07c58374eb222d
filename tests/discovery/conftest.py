"""Fixtures of the discovery tests: real Consul agents started and stopped by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from consul_agents import ConsulAgent, cluster, consul_binary, dev_agent

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


class _MissingService(Protocol):
    def __call__(self, reason: str) -> None: ...


def _missing_service(config: pytest.Config) -> _MissingService:
    """Return the root conftest's `missing_service` (skip, or fail under CI).

    Several folders have a `conftest.py`, so `import conftest` is ambiguous; the plugin
    manager knows each by its path.
    """
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == str(ROOT_CONFTEST):
            found: _MissingService = plugin.missing_service
            return found
    raise LookupError(ROOT_CONFTEST)  # pragma: no cover - the root conftest always loads


@pytest.fixture(scope="session")
def consul_bin(pytestconfig: pytest.Config) -> str:
    """Return the Consul binary, or skip (fail under MESHKIT_REQUIRE_SERVICES=1)."""
    binary = consul_binary()
    if binary is None:
        _missing_service(pytestconfig)(
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
