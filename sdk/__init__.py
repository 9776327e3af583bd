"""What a training script imports: ``init``, ``Run``, ``Api``, ``seed``.

``Api`` (polars, LanceDB) is imported on first use, so ``import assay`` in a training
process stays light: logging needs none of the store's libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _lazy
from .capture import seed
from .run import Config, Run, Summary, init

__all__ = ["Api", "Config", "Run", "Summary", "init", "seed"]


_LAZY = {"Api": ".api"}

if TYPE_CHECKING:  # the real name for type checkers; loaded lazily at run time
    from .api import Api


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _LAZY, name, globals())
