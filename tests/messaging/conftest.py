"""Fixtures of the messaging tests: the NATS server, unique names, stores for inboxes."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from services import missing_service

NATS_URL = os.environ.get("MESHKIT_NATS_URL", "nats://127.0.0.1:4222")


def port_open(host: str, port: int) -> bool:
    """Return whether something listens on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def nats_url() -> str:
    """Return the URL of the local NATS JetStream server, or skip/fail when it is down."""
    try:
        import nats  # noqa: F401, PLC0415 - optional dependency
    except ImportError:  # pragma: no cover - the dev extra installs it
        missing_service("nats-py is not installed (pip install 'meshkit[nats]')")
    host, _, port = NATS_URL.removeprefix("nats://").partition(":")
    if not port_open(host, int(port or 4222)):  # pragma: no cover - depends on the machine
        missing_service(f"NATS is not reachable at {NATS_URL}")
    return NATS_URL


@pytest.fixture
def unique() -> str:
    """Return a short unique token for stream, subject and key names."""
    return uuid.uuid4().hex[:10]
