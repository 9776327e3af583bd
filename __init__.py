"""assay: experiment tracking and research agents, self-hosted.

>>> import assay
>>> run = assay.init(project="digits", config={"lr": 3e-4})
>>> run.log({"train/loss": 0.31}, step=0)
>>> run.finish()
"""

from __future__ import annotations

from typing import Any

from .errors import AssayError, ConflictError, NotFoundError, UserInputError
from .sdk import Run, init, seed

__version__ = "0.1.0"

__all__ = ["init", "Run", "Api", "seed", "Objective", "uniform", "loguniform", "integer",
           "choice", "AssayError", "UserInputError", "NotFoundError", "ConflictError",
           "__version__"]

_LAZY = {"Api": ".sdk.api", "Objective": ".agents.objective", "uniform": ".policies.space",
         "loguniform": ".policies.space", "integer": ".policies.space",
         "choice": ".policies.space"}


def __getattr__(name: str) -> Any:
    # Read-side and search names load on first use: a training script that only logs
    # never imports polars, LanceDB or NumPy through assay.
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'assay' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod, __name__), name)
