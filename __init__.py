"""assay: experiment tracking and research agents, self-hosted.

>>> import assay
>>> run = assay.init(project="digits", config={"lr": 3e-4})
>>> run.log({"train/loss": 0.31}, step=0)
>>> run.finish()
"""

from .errors import AssayError, ConflictError, NotFoundError, UserInputError
from .sdk import Api, Run, init, seed

__version__ = "0.1.0"

__all__ = ["init", "Run", "Api", "seed", "AssayError", "UserInputError", "NotFoundError",
           "ConflictError", "__version__"]
