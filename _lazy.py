"""Names a package exports but imports on first use (PEP 562 module ``__getattr__``).

Heavy dependencies (polars, LanceDB, Ray, BoTorch, scikit-learn, torch) stay out of
``import assay`` and of the light parts of each subpackage: a training script that only
logs never pays for them. Each package keeps a ``{name: relative module}`` table and a
two-line ``__getattr__`` that calls :func:`load`; type checkers see the real names
through ``if TYPE_CHECKING:`` imports beside the table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any


def load(package: str, table: Mapping[str, str], name: str,
         namespace: MutableMapping[str, Any]) -> Any:
    """Import ``name`` from the module ``table[name]`` (relative to ``package``), cache it in
    the package's ``namespace`` (so the next lookup is a plain attribute) and return it.

    Raises:
        AttributeError: for a name the package does not export.
    """
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, package), name)
    namespace[name] = value
    return value
