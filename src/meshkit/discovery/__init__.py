"""Service discovery: register in Consul, watch healthy instances, feed the balancers."""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.discovery._config import (
    GrpcCheck,
    HttpCheck,
    ServiceRegistration,
    TtlCheck,
    WatchQuery,
)
from meshkit.discovery._consul import ConsulRegistry, RegistryStatistics
from meshkit.discovery._core import AgentBackoff
from meshkit.discovery._registry import Registered, Registry, StaticRegistry, Watch

__all__ = [
    "AgentBackoff",
    "ConsulRegistry",
    "GrpcCheck",
    "HttpCheck",
    "Registered",
    "Registry",
    "RegistryStatistics",
    "ServiceRegistration",
    "StaticRegistry",
    "TtlCheck",
    "Watch",
    "WatchQuery",
]

_publish(__name__, globals())
