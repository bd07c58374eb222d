"""Real services in tests: skip with a reason on a user's machine, fail under CI.

Test modules and folder conftests import `missing_service` from here by bare name (the tests/
folder is on `sys.path`), since `conftest` itself is ambiguous once folders have their own.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["missing_service", "services_required"]


def services_required() -> bool:
    """Return whether a missing real service must fail the test instead of skipping it."""
    return os.environ.get("MESHKIT_REQUIRE_SERVICES", "") not in {"", "0", "false", "no"}


def missing_service(reason: str) -> None:
    """Skip the current test for a missing service, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} (MESHKIT_REQUIRE_SERVICES is set, so this is a failure)")
    pytest.skip(reason)
