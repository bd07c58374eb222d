"""Tests for the exception tree."""

from __future__ import annotations

import meshkit
from meshkit import _errors


def _all_error_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    todo: list[type[BaseException]] = [meshkit.MeshkitError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


class TestErrorTree:
    def test_docstring_draws_every_error(self) -> None:
        """The tree in _errors' docstring names every MeshkitError subclass."""
        doc = _errors.__doc__ or ""
        missing = [c.__name__ for c in _all_error_classes() if c.__module__ == _errors.__name__]
        assert [name for name in missing if name not in doc] == []

    def test_every_error_is_exported(self) -> None:
        """Every error class of _errors is re-exported from meshkit."""
        for cls in _all_error_classes():
            if cls.__module__ == _errors.__name__:
                assert getattr(meshkit, cls.__name__) is cls

    def test_configuration_error_names_field_and_value(self) -> None:
        """ConfigurationError is a ValueError whose message names the field and value."""
        err = meshkit.ConfigurationError("max_attempts", -1, "must be >= 1")
        assert isinstance(err, ValueError)
        assert (err.field, err.value) == ("max_attempts", -1)
        assert str(err) == "invalid max_attempts=-1: must be >= 1"

    def test_configuration_error_survives_a_value_it_cannot_show(self) -> None:
        """A value whose repr raises (a 5,000-digit int, a broken repr) is named by type."""

        class Broken:
            def __repr__(self) -> str:
                raise RuntimeError

        huge = meshkit.ConfigurationError("x", 10**5000, "too big")
        assert str(huge) == "invalid x=<int that cannot be shown>: too big"
        assert huge.value == 10**5000
        assert "<Broken that cannot be shown>" in str(
            meshkit.ConfigurationError("y", Broken(), "r")
        )

    def test_messages_carry_the_attributes(self) -> None:
        """Each error's message is built from its typed attributes."""
        assert "retry after 1.500s" in str(meshkit.CircuitOpenError("db", 1.5))
        assert "2 running, 3 queued" in str(meshkit.BulkheadFullError("b", 2, 3))
        assert "rate limit 'api'" in str(meshkit.RateLimitExceededError("api", 0.25))
        deadline = meshkit.DeadlineExceededError(0.5)
        assert isinstance(deadline, TimeoutError)
        assert "0.500s" in str(deadline)
        assert "no endpoints" in str(meshkit.NoAvailableEndpointError("RoundRobin"))
        conflict = meshkit.VersionConflictError("order-1", 2, 3)
        assert "expected version 2" in str(conflict)
        assert "'s-1' not found" in str(meshkit.StreamNotFoundError("s-1"))
        unknown = meshkit.UnknownEventTypeError("s-1", 4, "Gone")
        assert isinstance(unknown, meshkit.EventDecodeError)
        assert "'Gone' at 's-1' version 4" in str(unknown)
