"""Fixtures of the discovery tests: real Consul agents started and stopped by the tests.

They are defined (and type-checked) in `consul_agents.py`: mypy cannot check two modules
named `conftest`, so this file only exposes them to pytest and is excluded from mypy.
"""

from __future__ import annotations

from consul_agents import consul, consul_bin, consul_cluster

__all__ = ["consul", "consul_bin", "consul_cluster"]
