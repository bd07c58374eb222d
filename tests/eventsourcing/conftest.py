"""Fixtures shared by the event-sourcing tests: SQLite files and the writer-thread leak check."""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WRITER_THREAD_PREFIX = "meshkit-sqlite-writer"


def writer_threads() -> set[threading.Thread]:
    """Return the SQLite writer threads alive now."""
    return {t for t in threading.enumerate() if t.name.startswith(WRITER_THREAD_PREFIX)}


@pytest.fixture(autouse=True)
def _no_writer_thread_left() -> Iterator[None]:
    """Every SQLite writer thread a test started has ended when the test finishes."""
    before = writer_threads()
    yield
    # A store dropped without aclose() ends its thread from a finalizer, once collected. Its
    # writer thread may still hold the last job (an error whose traceback refers to the
    # store) for a moment after waking the caller, so collect again until it lets go.
    left = writer_threads() - before
    for _ in range(50):
        gc.collect()
        for thread in left:
            thread.join(timeout=0.1)
        if not any(thread.is_alive() for thread in left):
            break
    assert not [thread for thread in left if thread.is_alive()]


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Return the path of a database file in a fresh temporary directory."""
    return str(tmp_path / "events.db")
