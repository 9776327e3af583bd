"""assay: experiment tracking and research agents, self-hosted.

>>> import assay
>>> run = assay.init(project="digits", config={"lr": 3e-4})
>>> run.log({"train/loss": 0.31}, step=0)
>>> run.finish()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _lazy
from .errors import AssayError, ConflictError, NotFoundError, UserInputError
from .sdk import Run, init, seed

__version__ = "0.1.0"

__all__ = [
    "Api",
    "AssayError",
    "ConflictError",
    "NotFoundError",
    "Objective",
    "Run",
    "UserInputError",
    "__version__",
    "choice",
    "init",
    "integer",
    "loguniform",
    "seed",
    "uniform",
]

_LAZY = {"Api": ".sdk.api", "Objective": ".agents.objective", "uniform": ".policies.space",
         "loguniform": ".policies.space", "integer": ".policies.space",
         "choice": ".policies.space"}

if TYPE_CHECKING:  # the real names for type checkers; loaded lazily at run time
    from .agents.objective import Objective
    from .policies.space import choice, integer, loguniform, uniform
    from .sdk.api import Api


def __getattr__(name: str) -> Any:
    # Read-side and search names load on first use: a training script that only logs
    # never imports polars, LanceDB or NumPy through assay.
    return _lazy.load(__name__, _LAZY, name, globals())
