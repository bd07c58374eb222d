"""Load balancing: pick an endpoint per call, the way Envoy and gRPC's LB policies do."""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.balancing._bounded import BoundedLoadRing
from meshkit.balancing._endpoint import Endpoint, LoadBalancer, Outcome
from meshkit.balancing._ewma import PeakEwma
from meshkit.balancing._hashring import HashRing
from meshkit.balancing._leastrequest import LeastRequest
from meshkit.balancing._maglev import Maglev
from meshkit.balancing._outlier import OutlierDetector
from meshkit.balancing._outlierconfig import OutlierConfig
from meshkit.balancing._random import Random
from meshkit.balancing._roundrobin import RoundRobin, WeightedRoundRobin
from meshkit.balancing._slowstart import SlowStart

__all__ = [
    "BoundedLoadRing",
    "Endpoint",
    "HashRing",
    "LeastRequest",
    "LoadBalancer",
    "Maglev",
    "Outcome",
    "OutlierConfig",
    "OutlierDetector",
    "PeakEwma",
    "Random",
    "RoundRobin",
    "SlowStart",
    "WeightedRoundRobin",
]

_publish(__name__, globals())
