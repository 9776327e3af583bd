"""Where a data directory keeps its blobs: its own ``blobs/`` folder, or an object store.

The choice is made once, the first time a process opens the directory with
``ASSAY_BLOB_STORE`` set (``s3://bucket/prefix``, or any fsspec URL whose package is
installed), and pinned in ``<data dir>/blob-store.json`` so every later process (the ingest
daemon, the server, the CLI, a script without the variable) reads and writes the same store.
Storage options come from ``ASSAY_BLOB_STORE_OPTIONS`` (a JSON object, e.g.
``{"endpoint_url": "http://minio:9000"}``): those that are not secrets are pinned with the
URL; credentials (``key``, ``secret``, ``token``, ``password``, ...) never are, and come from
the variable, or the backend's own environment (``AWS_ACCESS_KEY_ID`` ...), in each process.

A directory whose ``blobs/`` already holds content is not switched: its versions name those
blobs, which the new store would not have.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .blobs import BlobStore, LocalBlobStore, open_blob_store

__all__ = ["PIN_FILE", "blob_store_for"]

PIN_FILE = "blob-store.json"
_HINT = ('e.g. ASSAY_BLOB_STORE=s3://bucket/assay ASSAY_BLOB_STORE_OPTIONS=\'{"endpoint_url": '
         '"http://127.0.0.1:9000"}\' (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)')


def _env_options() -> dict[str, Any]:
    raw = os.environ.get("ASSAY_BLOB_STORE_OPTIONS", "").strip()
    if not raw:
        return {}
    try:
        opts = json.loads(raw)
    except ValueError as exc:
        raise UserInputError(f"ASSAY_BLOB_STORE_OPTIONS is not JSON: {exc}", hint=_HINT) from None
    if not isinstance(opts, dict):
        raise UserInputError("ASSAY_BLOB_STORE_OPTIONS must be a JSON object of storage options",
                             hint=_HINT)
    return opts


def _is_secret(name: str) -> bool:
    from ..sdk.capture import is_secret_param

    low = name.lower()
    return (is_secret_param(name) or low in {"key", "secret", "token", "sas_token"}
            or low.endswith(("_key_id", "access_key", "connection_string", "credentials")))


def _public(options: Any) -> Any:
    """``options`` without secrets, at any depth (``client_kwargs: {aws_secret_access_key}``,
    adlfs's ``connection_string``): what may be written to the pin file."""
    if isinstance(options, dict):
        return {k: _public(v) for k, v in options.items()
                if not (isinstance(k, str) and _is_secret(k))}
    if isinstance(options, list):
        return [_public(v) for v in options]
    return options


def _pinned(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / PIN_FILE
    try:
        pin = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc})",
                             hint="it names this directory's blob store: restore it") from None
    if not isinstance(pin, dict) or not isinstance(pin.get("uri"), str):
        raise UserInputError(f"{path} does not name a blob store",
                             hint='it holds {"uri": "s3://...", "options": {...}}: restore it')
    return pin


def _pin(data_dir: Path, uri: str, options: dict[str, Any]) -> None:
    local = data_dir / "blobs"
    if local.is_dir() and any(p.is_file() for p in local.rglob("*")):
        raise UserInputError(
            f"{data_dir} already keeps blobs in {local}: its versions name them, and {uri} "
            "does not hold them", hint="start a new data directory for the object store, or "
                                       "unset ASSAY_BLOB_STORE to keep the local blobs")
    body = {"uri": uri, "options": _public(options)}
    fd, tmp = tempfile.mkstemp(prefix=f".{PIN_FILE}.", suffix=".tmp", dir=data_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(body, indent=1, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, data_dir / PIN_FILE)  # only the first pin wins, even between processes
    except FileExistsError:
        pass  # another process or thread pinned first: its pin is read back
    finally:
        os.unlink(tmp)


def blob_store_for(data_dir: Path) -> BlobStore:
    """The blob store of ``data_dir`` (see the module doc); ``blobs/`` inside it by default.

    Raises:
        UserInputError: ``ASSAY_BLOB_STORE`` names another store than the one pinned, the
            pin file is damaged, a local ``blobs/`` already holds content, or the URL or
            options cannot be opened.
    """
    data_dir = Path(data_dir)
    want = os.environ.get("ASSAY_BLOB_STORE", "").strip().rstrip("/") or None
    pin = _pinned(data_dir)
    if pin is None and want is not None and "://" in want and not want.startswith("file://"):
        open_blob_store(want, **_env_options())  # a URL that cannot be opened is not pinned
        _pin(data_dir, want, _env_options())
        pin = _pinned(data_dir)  # the first process's pin, if several raced
    if pin is None:
        if want is not None:
            raise UserInputError(f"ASSAY_BLOB_STORE={want!r} is not an object-store URL",
                                 hint=f"leave it unset for {data_dir / 'blobs'}; {_HINT}")
        return LocalBlobStore(data_dir / "blobs")
    uri = pin["uri"]
    if want is not None and want != uri.rstrip("/"):
        raise UserInputError(
            f"{data_dir} keeps its blobs at {uri}, but ASSAY_BLOB_STORE says {want}",
            hint=f"unset ASSAY_BLOB_STORE (the directory remembers its store in {PIN_FILE}), "
                 "or use another data directory for another store")
    options = {**(pin.get("options") or {}), **_env_options()}
    return open_blob_store(uri, **options)
