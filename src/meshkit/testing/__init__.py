"""Helpers for testing code that uses meshkit: a fake clock and shared conformance suites."""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.testing._bus_conformance import BusConformance
from meshkit.testing._eventstore_conformance import (
    CheckpointStoreConformance,
    EventStoreConformance,
)
from meshkit.testing._fakeclock import FakeClock

__all__ = ["BusConformance", "CheckpointStoreConformance", "EventStoreConformance", "FakeClock"]

_publish(__name__, globals())
