"""What a training script imports: ``init``, ``Run``, ``Api``, ``seed``."""

from .api import Api
from .capture import seed
from .run import Config, Run, Summary, init

__all__ = ["init", "Run", "Config", "Summary", "Api", "seed"]
