"""Fixtures of the messaging tests: the NATS server, unique names, stores for inboxes."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

NATS_URL = os.environ.get("MESHKIT_NATS_URL", "nats://127.0.0.1:4222")


ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def root_conftest(config: pytest.Config) -> Any:
    """Return the root conftest module (this file shadows its name, `conftest`)."""
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == str(ROOT_CONFTEST):
            return plugin
    msg = "the root conftest is not loaded"  # pragma: no cover - pytest always loads it
    raise RuntimeError(msg)  # pragma: no cover


def missing_service(config: pytest.Config, reason: str) -> None:
    """Skip for a missing service, or fail under MESHKIT_REQUIRE_SERVICES (the root's rule)."""
    root_conftest(config).missing_service(reason)


def port_open(host: str, port: int) -> bool:
    """Return whether something listens on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def nats_url(pytestconfig: pytest.Config) -> str:
    """Return the URL of the local NATS JetStream server, or skip/fail when it is down."""
    try:
        import nats  # noqa: F401, PLC0415 - optional dependency
    except ImportError:  # pragma: no cover - the dev extra installs it
        missing_service(pytestconfig, "nats-py is not installed (pip install 'meshkit[nats]')")
    host, _, port = NATS_URL.removeprefix("nats://").partition(":")
    if not port_open(host, int(port or 4222)):  # pragma: no cover - depends on the machine
        missing_service(pytestconfig, f"NATS is not reachable at {NATS_URL}")
    return NATS_URL


@pytest.fixture
def unique() -> str:
    """Return a short unique token for stream, subject and key names."""
    return uuid.uuid4().hex[:10]
