"""Where assay keeps its data, and the knobs of the write path."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "DEFAULT_DIR", "FLUSH_INTERVAL", "INGEST_INTERVAL"]

#: Used when neither ``dir=`` nor ``ASSAY_DIR`` says otherwise: one store per user, shared by
#: every project, like MLflow's tracking store but outside the working directory so that
#: scripts started from different folders (or by Ray workers) meet in the same graph.
DEFAULT_DIR = Path("~/.assay")

#: Seconds between write-ahead-log flushes (each one fsynced): the most a SIGKILL can lose.
FLUSH_INTERVAL = float(os.environ.get("ASSAY_FLUSH_INTERVAL", "0.2"))

#: Seconds between moves of WAL records into LanceDB while a run is live.
INGEST_INTERVAL = float(os.environ.get("ASSAY_INGEST_INTERVAL", "2.0"))


def data_dir(dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory: ``dir``, else ``$ASSAY_DIR``, else ``~/.assay``."""
    raw = dir if dir is not None else os.environ.get("ASSAY_DIR") or DEFAULT_DIR
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
