"""Where assay keeps its data, and the knobs of the write path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserInputError

__all__ = ["DEFAULT_DIR", "FINISH_TIMEOUT", "FLUSH_INTERVAL", "INGEST_MODE", "data_dir",
           "resolve_data_dir"]

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
    """Resolve the data directory: ``dir``, else ``$ASSAY_DIR``, else ``~/.assay``; create
    it if needed (:func:`resolve_data_dir` resolves without creating)."""
    path = resolve_data_dir(dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_data_dir(dir: str | os.PathLike[str] | None = None) -> Path:
    """The absolute path ``dir`` (else ``$ASSAY_DIR``, else ``~/.assay``) names, created or not.

    Raises:
        UserInputError: it is a URL (``s3://...``): the data directory is a local folder.
            ``file://`` URLs are paths.
    """
    raw = dir if dir is not None else os.environ.get("ASSAY_DIR") or DEFAULT_DIR
    text = str(os.fspath(raw))
    # A URL, also as a command-line Path made it ("s3://b/x" -> "s3:/b/x"): Path() would make
    # it the local folder ./s3:/b/x, never what was meant.
    url = re.match(r"([A-Za-z][A-Za-z0-9+.\-]+):/+", text)
    if url is not None and url.group(1).lower() != "file":
        raise UserInputError(
            f"the data directory must be a local folder, got the URL {text!r}",
            hint="point dir= / --dir / ASSAY_DIR at a local folder (or a mounted volume); to "
                 "share one, run `assay server` there and log with server= / ASSAY_SERVER (an "
                 "object store can hold the blobs: ASSAY_BLOB_STORE)")
    if url is not None:
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise UserInputError(f"{text!r} names another host ({parsed.netloc})",
                                 hint="file:// data directories are local: file:///path (mount "
                                      "a share first, and name its local path)")
        text = unquote(parsed.path) or "/"
    return Path(text).expanduser().resolve()
