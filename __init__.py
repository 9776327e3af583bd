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

__all__ = ["init", "Run", "Api", "seed", "AssayError", "UserInputError", "NotFoundError",
           "ConflictError", "__version__"]


def __getattr__(name: str) -> Any:
    # Heavy read-side names load on first use (see assay.sdk).
    if name == "Api":
        from .sdk.api import Api

        return Api
    raise AttributeError(f"module 'assay' has no attribute {name!r}")
