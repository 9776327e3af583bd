"""What a training script imports: ``init``, ``Run``, ``Api``, ``seed``.

``Api`` (polars, LanceDB) is imported on first use, so ``import assay`` in a training
process stays light: logging needs none of the store's libraries.
"""

from __future__ import annotations

from typing import Any

from .capture import seed
from .run import Config, Run, Summary, init

__all__ = ["Api", "Config", "Run", "Summary", "init", "seed"]


def __getattr__(name: str) -> Any:
    if name == "Api":
        from .api import Api

        return Api
    raise AttributeError(name)
