"""Where assay keeps its data, and the knobs of the write path."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserInputError

__all__ = ["DEFAULT_DIR", "FINISH_TIMEOUT", "FLUSH_INTERVAL", "INGEST_MODE", "data_dir"]

#: Used when neither ``dir=`` nor ``ASSAY_DIR`` says otherwise: one store per user, shared by
#: every project, like MLflow's tracking store but outside the working directory so that
#: scripts started from different folders (or by Ray workers) meet in the same graph.
DEFAULT_DIR = Path("~/.assay")

#: Seconds between write-ahead-log flushes (each one fsynced): the most a SIGKILL can lose.
FLUSH_INTERVAL = float(os.environ.get("ASSAY_FLUSH_INTERVAL", "0.2"))

#: ``daemon`` (default): a background ingest daemon per data directory makes runs queryable
#: while they run. ``inprocess``: no daemon; ``Run.finish`` ingests the run itself (for
#: machines where background processes are unwelcome; live runs are not visible until then).
INGEST_MODE = os.environ.get("ASSAY_INGEST", "daemon")

#: Seconds ``Run.finish`` waits for the ingest daemon to make the run queryable.
FINISH_TIMEOUT = float(os.environ.get("ASSAY_FINISH_TIMEOUT", "120"))


def data_dir(dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory: ``dir``, else ``$ASSAY_DIR``, else ``~/.assay``."""
    raw = dir if dir is not None else os.environ.get("ASSAY_DIR") or DEFAULT_DIR
    text = os.fspath(raw)
    if isinstance(text, str) and "://" in text and not text.startswith("file://"):
        # Path("s3://bucket/x") is the local folder ./s3:/bucket/x: never what was meant.
        raise UserInputError(
            f"the data directory must be a local folder, got the URL {text!r}",
            hint="point dir= / ASSAY_DIR at a local folder (or a mounted volume); to log to a "
                 "shared store, run `assay server` there and pass server= / ASSAY_SERVER")
    if isinstance(text, str) and text.startswith("file://"):
        text = text[len("file://"):]
    path = Path(text).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
