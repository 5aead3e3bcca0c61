"""Names of a package imported on first use (PEP 562 module ``__getattr__``).

A package lists its heavy public names with the module that defines each and
sets ``__getattr__, __dir__ = lazy_exports(globals(), _LAZY)``: ``import`` of
the package then loads none of those modules, the first access to a name
imports its module and keeps the value in the package's namespace, and
``dir()`` shows the names of ``__all__`` before they are loaded.  Type
checkers see the real types through the package's ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any], lazy: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of a package with lazy names.

    Parameters
    ----------
    namespace : dict
        The package's ``globals()``; its ``__all__`` is read when ``dir()``
        is called.
    lazy : Mapping
        Public name -> absolute name of the module that defines it.
    """
    package = namespace["__name__"]

    def module_getattr(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def module_dir() -> list[str]:
        return sorted(set(namespace) | set(namespace["__all__"]))

    return module_getattr, module_dir
