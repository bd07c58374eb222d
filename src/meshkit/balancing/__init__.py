"""Load balancing: pick an endpoint per call, the way Envoy and gRPC's LB policies do."""

from __future__ import annotations

from meshkit.balancing._endpoint import Endpoint, LoadBalancer, Outcome

__all__ = ["Endpoint", "LoadBalancer", "Outcome"]
