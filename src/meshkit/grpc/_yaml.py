"""A checked walk over a parsed YAML document: every error names its path in the document.

`Node(value, "spec")` wraps a value with its path; `node.fields(enforced, unsupported)` checks
a mapping's keys (an unknown key is a `ConfigurationError`, a known one meshkit does not
enforce is reported by its path), and the typed accessors raise `ConfigurationError` naming
e.g. `spec.http[0].route[1].weight`.
"""

from __future__ import annotations

import math
import re
from typing import final

from meshkit._errors import ConfigurationError

__all__ = ["Node", "duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def duration(text: str) -> float | None:
    """Return the seconds of an Istio duration (`"5s"`, `"100ms"`, `"1.5m"`), None if malformed."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return seconds if math.isfinite(seconds) else None


@final
class Node:
    """A value in a document and its path there."""

    def __init__(self, value: object, path: str, unsupported: list[str]) -> None:
        self.value = value
        self.path = path
        self._unsupported = unsupported

    def error(self, reason: str) -> ConfigurationError:
        """Return the error for this node."""
        return ConfigurationError(self.path, self.value, reason)

    def fields(
        self, enforced: frozenset[str], unsupported: frozenset[str] = frozenset()
    ) -> dict[str, Node]:
        """Return the mapping's fields as nodes, checking and reporting their names.

        Raises:
            ConfigurationError: If this is not a mapping, or a key is not a known field.
        """
        if not isinstance(self.value, dict):
            raise self.error("must be a mapping")
        result: dict[str, Node] = {}
        for key, value in self.value.items():
            path = f"{self.path}.{key}" if self.path else str(key)
            if key in unsupported:
                self._unsupported.append(path)
            elif key in enforced:
                result[key] = Node(value, path, self._unsupported)
            else:
                raise ConfigurationError(path, value, "is not a field meshkit knows here")
        return result

    def reported(self) -> int:
        """Return how many unsupported fields the document has reported so far."""
        return len(self._unsupported)

    def reported_since(self, mark: int) -> tuple[str, ...]:
        """Return the paths of the unsupported fields reported after `reported()` was `mark`."""
        return tuple(self._unsupported[mark:])

    def child(self, key: object, value: object) -> Node:
        """Return a node for `value`, found under `key` in this mapping."""
        return Node(value, f"{self.path}.{key}", self._unsupported)

    def items(self) -> list[Node]:
        """Return the list's items as nodes.

        Raises:
            ConfigurationError: If this is not a list.
        """
        if not isinstance(self.value, list):
            raise self.error("must be a list")
        return [Node(v, f"{self.path}[{i}]", self._unsupported) for i, v in enumerate(self.value)]

    def text(self) -> str:
        """Return the value as a string.

        Raises:
            ConfigurationError: If it is not a string.
        """
        if not isinstance(self.value, str):
            raise self.error("must be a string")
        return self.value

    def texts(self) -> tuple[str, ...]:
        """Return a list of strings.

        Raises:
            ConfigurationError: If it is not a list of strings.
        """
        return tuple(item.text() for item in self.items())

    def integer(self, low: int = 0, high: int = 2**31 - 1) -> int:
        """Return the value as an int in [low, high].

        Raises:
            ConfigurationError: If it is not such an int.
        """
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error("must be an integer")
        if not low <= self.value <= high:
            raise self.error(f"must be between {low} and {high}")
        return self.value

    def number(self, low: float = 0.0, high: float = math.inf) -> float:
        """Return the value as a finite number in [low, high].

        Raises:
            ConfigurationError: If it is not such a number.
        """
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error("must be a number")
        number = float(value)
        if not (math.isfinite(number) and low <= number <= high):
            raise self.error(f"must be a finite number between {low} and {high}")
        return number

    def seconds(self) -> float:
        """Return an Istio duration in seconds.

        Raises:
            ConfigurationError: If it is not a duration such as "5s" or "100ms".
        """
        value = duration(self.text())
        if value is None:
            raise self.error('must be a duration such as "5s" or "100ms"')
        return value

    def percentage(self) -> float:
        """Return an Istio `Percent` (`{value: 10.0}`) as a number in [0, 100].

        Raises:
            ConfigurationError: If it is not one.
        """
        return self.fields(frozenset({"value"}))["value"].number(0, 100)

    def choice(self, allowed: tuple[str, ...]) -> str:
        """Return the value if it is one of `allowed`.

        Raises:
            ConfigurationError: If it is not.
        """
        text = self.text()
        if text not in allowed:
            raise self.error(f"must be one of {', '.join(allowed)}")
        return text
