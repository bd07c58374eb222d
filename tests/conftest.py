"""Shared fixtures: anyio backends, the fake clock, and the real services tests talk to.

A test that needs PostgreSQL or Redis asks for the `postgres_dsn`/`pg_schema` or
`redis_url`/`redis_prefix` fixture. When the service is not reachable the test is skipped with
the reason, unless `MESHKIT_REQUIRE_SERVICES=1` (set by `.ci/run`), which turns the skip into a
failure so CI can never pass with real-service tests silently skipped.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from meshkit.testing import FakeClock
from services import missing_service

if TYPE_CHECKING:
    from collections.abc import Iterator

settings.register_profile(
    "meshkit",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("ci", parent=settings.get_profile("meshkit"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "meshkit")

POSTGRES_DSN = os.environ.get("MESHKIT_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MESHKIT_REDIS_URL", "redis://127.0.0.1:6379/0")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Run every `@pytest.mark.anyio` test on asyncio and on trio."""
    backend: tuple[str, dict[str, object]] = request.param
    return backend


@pytest.fixture
def clock() -> FakeClock:
    """Return a fresh fake clock at t=0."""
    return FakeClock()


@pytest.fixture
def postgres_dsn() -> str:
    """Return the DSN of the local PostgreSQL, or skip/fail when it is not running."""
    try:
        import psycopg  # noqa: PLC0415 - optional dependency
    except ImportError:  # pragma: no cover - the dev extra installs it
        missing_service("psycopg is not installed (pip install 'meshkit[postgres]')")
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        missing_service(f"PostgreSQL is not reachable at {POSTGRES_DSN}: {exc}")
    return POSTGRES_DSN


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """Create a fresh schema for one test and drop it afterwards; yield its name."""
    import psycopg  # noqa: PLC0415 - optional dependency

    schema = f"meshkit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> str:
    """Return the URL of the local Redis, or skip/fail when it is not running."""
    if not _port_open("127.0.0.1", 6379):  # pragma: no cover - depends on the machine
        missing_service(f"Redis is not reachable at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """Yield a unique key prefix for one test and delete its keys afterwards."""
    import redis  # noqa: PLC0415 - optional dependency

    prefix = f"meshkit-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
