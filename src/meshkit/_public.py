"""Give each public name the module path users import it from.

Classes and functions are defined in private modules (`meshkit.resilience._breaker`) but have
one public home (`meshkit.resilience`). Setting `__module__` to that home makes tracebacks,
`repr`s, pickles and the API reference show the path a user can import, as anyio's
`fix_package_names` and trio's `fixup_module_metadata` do.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["publish"]


def publish(home: str, namespace: dict[str, Any]) -> None:
    """Set `__module__` to `home` on every class and function named in `namespace['__all__']`.

    Only objects defined inside meshkit are touched, so a re-exported foreign object keeps its
    own path.
    """
    for name in namespace["__all__"]:
        value = namespace[name]
        is_definition = isinstance(value, type) or inspect.isfunction(value)
        if is_definition and value.__module__.startswith("meshkit."):
            value.__module__ = home
