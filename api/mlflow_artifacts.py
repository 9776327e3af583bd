"""MLflow's artifact proxy ("mlflow-artifacts"), so ``mlflow.log_artifact`` and friends work.

The MLflow protocol (:mod:`.mlflow`) hands out ``artifact_uri =
mlflow-artifacts:/<experiment id>/<run id>/artifacts``; the ``mlflow`` client turns that into
requests to ``/api/2.0/mlflow-artifacts/artifacts/...`` on the tracking server (mlflow 3.x
``MlflowArtifactsRepository``/``HttpArtifactRepository``). Served here, under
``/api/2.0/mlflow-artifacts`` and ``/ajax-api/2.0/mlflow-artifacts``:

- ``PUT /artifacts/<path>``: upload one file (the raw body), answers ``{}``. The body streams
  to a temporary file in 1 MiB chunks, is fsynced and renamed into place, so a file is either
  wholly there (old or new bytes) or not at all; at most :data:`MAX_ARTIFACT_BYTES` per file.
- ``GET /artifacts/<path>``: download one file (streamed, ``Content-Disposition: attachment``).
- ``GET /artifacts?path=<dir>``: list one directory, not recursively, in MLflow's shape
  ``{"files": [{"path": name, "is_dir": bool, "file_size": n}]}`` (names relative to ``dir``;
  a missing directory or a file lists as empty, as MLflow's own server does).
- ``DELETE /artifacts/<path>``: delete a file or a directory tree (nothing there: still ``{}``).

Roles: reads need a viewer token. Writes need a researcher who owns the run the path belongs
to (``<experiment id>/<run id>/artifacts/...``, the run's own experiment; ownership is the one
:meth:`.ingest.RemoteIngest.check_writer` keeps for every run), or a supervisor; a deleted
MLflow run takes no writes. A logged model's files (MLflow 3's ``log_model``) go under
``<experiment id>/models/<model id>/artifacts/...``, written by the model's owner
(:func:`.mlflow_logged.check_model_writer`) or a supervisor while it is not deleted. Paths are refused with a 400 if they are absolute, contain ``..``
or ``.`` or empty components, backslashes, ``#``, NUL or other control characters, or
over-long names. Errors have assay's ``{"error", "hint"}`` plus MLflow's ``error_code`` and
``message``.

Files live as plain files under ``<data dir>/mlflow-artifacts/files/<path>`` (temporary
uploads and deleted trees pass through ``<data dir>/mlflow-artifacts/tmp``). Not the
content-addressed blob store: blob garbage collection keeps only blobs that records
reference, and these files are referenced by path alone. Multipart and presigned uploads are
not offered (``/api/3.0/mlflow/server-info`` is not served, so clients never ask for them).
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import AssayError, ConflictError, NotFoundError, UserInputError
from ..store.blobs import _fsync_dir
from .auth import Principal, Researcher, Viewer
from .blobs import receive_upload
from .http import (
    _HTTP_HINTS,
    _MLFLOW_CODES,
    ERROR_RESPONSES,
    SafeJSONResponse,
    StrictJSONRoute,
    error_response,
    ok,
    status_of,
)
from .ingest import RemoteIngest
from .mlflow_logged import check_model_writer, logged_model
from .mlflow_state import MlflowState

__all__ = ["MAX_ARTIFACT_BYTES", "PREFIXES", "router"]

PREFIXES = ("/api/2.0", "/ajax-api/2.0")
#: Largest file one upload may carry (the route's own body limit).
MAX_ARTIFACT_BYTES = 64 << 30
#: Longest artifact path (characters), and longest name of one component (UTF-8 bytes).
MAX_PATH_CHARS = 2048
MAX_NAME_BYTES = 255
_CHUNK = 1 << 20
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_BAD_CHARS_RE = re.compile(r"[\x00-\x1f\x7f\\#]")
_PATH_HINT = ("artifact paths are relative, '/'-separated and inside a run's artifacts "
              "(<experiment id>/<run id>/artifacts/...), without '..', '.', empty parts, "
              "backslashes, '#' or control characters")
#: Serializes the quick namespace changes (mkdir + rename into place, rename away to delete)
#: so an upload and a delete of the same tree never see each other half done.
_NAMESPACE = threading.Lock()


class _ArtifactRoute(StrictJSONRoute):
    """Errors of these routes (auth included) carry MLflow's ``error_code`` and ``message``
    too: the shared handler adds them only under ``/mlflow/``, and these paths are
    ``/mlflow-artifacts/``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_mlflow_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except AssayError as exc:
                status = status_of(exc)
                if status >= 500:
                    raise
                return _error(request, status, exc.message, exc.hint,
                              {"Retry-After": "1"} if status == 503 else None)
            except StarletteHTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
                return _error(request, exc.status_code, detail,
                              _HTTP_HINTS.get(exc.status_code, ""),
                              getattr(exc, "headers", None))

        return with_mlflow_errors


def _error(request: Request, status: int, error: str, hint: str,
           headers: dict[str, str] | None) -> SafeJSONResponse:
    return error_response(request, status, error, hint, headers,
                          error_code=_MLFLOW_CODES.get(status, "INTERNAL_ERROR"), message=error)


router = APIRouter(tags=["mlflow"], route_class=_ArtifactRoute, responses=ERROR_RESPONSES)


# -- paths ------------------------------------------------------------------------------------
def _parts(path: str, *, what: str) -> tuple[str, ...]:
    """The components of a client's artifact path; UserInputError (400) for anything that is
    not a plain relative path (traversal, absolute, NUL, backslashes...). ``""``: the root."""
    if len(path) > MAX_PATH_CHARS:
        raise UserInputError(f"{what} is {len(path)} characters long, over {MAX_PATH_CHARS}",
                             hint=_PATH_HINT)
    if path == "":
        return ()
    if bad := _BAD_CHARS_RE.search(path):
        raise UserInputError(f"{what} {path!r} contains {bad.group()!r}, which is not allowed",
                             hint=_PATH_HINT)
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UserInputError(f"{what} {path!r} is absolute", hint=_PATH_HINT)
    parts = tuple(path.split("/"))
    for p in parts:
        if p in ("", ".", ".."):
            raise UserInputError(f"{what} {path!r} has a {p!r} component" if p
                                 else f"{what} {path!r} has an empty component", hint=_PATH_HINT)
        if len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UserInputError(f"{what} has a name longer than {MAX_NAME_BYTES} bytes",
                                 hint="shorten the file or directory name")
    return parts


def _files(request: Request) -> Path:
    return Path(request.app.state.data_dir) / "mlflow-artifacts" / "files"


def _tmp(request: Request) -> Path:
    return Path(request.app.state.data_dir) / "mlflow-artifacts" / "tmp"


def _check_writer(request: Request, who: Principal, parts: tuple[str, ...]) -> str:
    """Refuse a write outside ``<experiment>/<run>/artifacts`` (or a logged model's
    ``<experiment>/models/<model id>/artifacts``), to a run or model that does not exist or
    is deleted, under another experiment than its own, or by a researcher who does not own
    it. Returns the run (or model) id. (Blocking: reads the run store.)"""
    if len(parts) >= 2 and parts[1] == "models" and (len(parts) < 3 or parts[2] != "artifacts"):
        return _check_model_writer(request, who, parts)
    if len(parts) < 3 or parts[2] != "artifacts":
        raise UserInputError(f"cannot write to {'/'.join(parts)!r}: writes go inside a run's "
                             "artifacts", hint="use the run's artifact_uri "
                             "(mlflow-artifacts:/<experiment id>/<run id>/artifacts)")
    exp_id, rid = parts[0], parts[1]
    if not _RUN_ID_RE.match(rid):
        raise NotFoundError(f"no run {rid!r}", hint="create it with runs/create")
    state: MlflowState = request.app.state.mlflow
    side = state.run(rid)
    if side is not None:
        if side.get("lifecycle_stage", "active") != "active":
            raise UserInputError(f"run {rid} is deleted", hint="restore it with runs/restore")
        home = str(side["experiment_id"])
    else:
        rec = request.app.state.store.get_run(rid)
        if rec is None:
            raise NotFoundError(f"no run {rid!r}", hint="create it with runs/create")
        exp = state.by_project(rec.project)
        home = exp["experiment_id"] if exp else "0"
    if home != exp_id:
        raise NotFoundError(f"run {rid} is in experiment {home}, not {exp_id}",
                            hint="use the run's artifact_uri (runs/get)")
    remote: RemoteIngest = request.app.state.remote
    remote.check_writer(who, rid)
    return rid


def _check_model_writer(request: Request, who: Principal, parts: tuple[str, ...]) -> str:
    """:func:`_check_writer` for ``<experiment>/models/<model id>/artifacts/...``."""
    if len(parts) < 4 or parts[3] != "artifacts":
        raise UserInputError(f"cannot write to {'/'.join(parts)!r}: writes go inside a logged "
                             "model's artifacts", hint="use the model's artifact_uri "
                             "(mlflow-artifacts:/<experiment id>/models/<model id>/artifacts)")
    exp_id, mid = parts[0], parts[2]
    model = logged_model(request, mid)  # 404, also once deleted
    if model["experiment_id"] != exp_id:
        raise NotFoundError(f"logged model {mid} is in experiment {model['experiment_id']}, "
                            f"not {exp_id}", hint="use the model's artifact_uri "
                            "(logged-models/<id>)")
    check_model_writer(who, model)
    return mid


# -- upload -----------------------------------------------------------------------------------
def _conflict(rel: str, why: str) -> ConflictError:
    return ConflictError(f"cannot write {rel!r}: {why}",
                         hint="a path cannot be both a file and a directory; delete the "
                              "other one first or pick another name")


def _receive(reader: IO[bytes], root: Path, tmp_dir: Path, final: Path, rel: str,
             limit: int) -> int:
    """Stream the body to a temporary file, fsync it, rename it into place. Returns its size."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            while chunk := reader.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"artifact {rel!r} is larger than the "
                                        f"{limit} bytes one file may have",
                                        headers={"Connection": "close"})
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        with _NAMESPACE:
            made = [d for d in (final.parent, *final.parent.parents)
                    if d.is_relative_to(root) and not d.is_dir()]
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise _conflict(rel, "a directory above it is a file") from None
            if final.is_dir():
                raise _conflict(rel, "it is a directory")
            os.replace(tmp, final)
        for d in {final.parent, *(m.parent for m in made)}:  # the new names reach the disk
            _fsync_dir(d)
        return size
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_BINARY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.put("/mlflow-artifacts/artifacts/{path:path}", summary="Upload one artifact file (MLflow)",
            max_body_size=MAX_ARTIFACT_BYTES, openapi_extra=_BINARY)
async def upload_artifact(request: Request, who: Researcher, path: str) -> SafeJSONResponse:
    """Store the raw body as the file ``path`` (replacing one there); answers ``{}``."""
    parts = _parts(path, what="artifact path")
    if len(parts) < 4 or (parts[1] == "models" and parts[2] != "artifacts" and len(parts) < 5):
        raise UserInputError(f"cannot upload to {path!r}: a file goes inside a run's (or a "
                             "logged model's) artifacts",
                             hint="upload to <experiment id>/<run id>/artifacts/<file> (or "
                                  "<experiment id>/models/<model id>/artifacts/<file>)")
    await run_in_threadpool(_check_writer, request, who, parts)
    limit = MAX_ARTIFACT_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"artifact {path!r} ({declared} bytes) is larger than the "
                            f"{limit} bytes one file may have", headers={"Connection": "close"})
    files = _files(request)
    got = await receive_upload(
        request, "artifact uploads",
        lambda reader: _receive(reader, files.parent, _tmp(request), files.joinpath(*parts),
                                path, limit))
    if isinstance(got, SafeJSONResponse):
        return got
    return ok({})


# -- download and list ------------------------------------------------------------------------
def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@router.get("/mlflow-artifacts/artifacts/{path:path}", summary="Download one artifact file (MLflow)",
            response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the file's bytes"}})
def download_artifact(request: Request, who: Viewer, path: str) -> Response:
    """The file's bytes, streamed (always as an attachment: never shown inline)."""
    parts = _parts(path, what="artifact path")
    if not parts:
        raise UserInputError("no artifact path given", hint="GET .../artifacts/<path of a file>")
    try:
        f = open(_files(request).joinpath(*parts), "rb")  # noqa: SIM115 - closed by the stream
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"no artifact {path!r}", hint="list a directory with "
                            "GET /api/2.0/mlflow-artifacts/artifacts?path=<dir>") from None
    except IsADirectoryError:
        raise UserInputError(f"artifact path {path!r} is a directory, not a file",
                             hint="list it with GET /api/2.0/mlflow-artifacts/artifacts?path=..."
                             ) from None
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise NotFoundError(f"no artifact file {path!r}", hint="list the directory")

    def chunks() -> Iterator[bytes]:
        with f:
            while data := f.read(_CHUNK):
                yield data

    headers = {"Content-Length": str(st.st_size), "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "sandbox", "Cache-Control": "private, no-cache"}
    name = parts[-1]
    quoted = quote(name)
    headers["Content-Disposition"] = (f'attachment; filename="{name}"' if quoted == name
                                      else f"attachment; filename*=utf-8''{quoted}")
    return StreamingResponse(chunks(), media_type=_media_type(name), headers=headers)


@router.get("/mlflow-artifacts/artifacts", summary="List one artifact directory (MLflow)")
def list_artifacts(request: Request, who: Viewer,
                   path: Annotated[str | None, Query(description="a directory; none: the root")]
                   = None) -> SafeJSONResponse:
    """The directory's entries, not recursively: ``{"files": [{path, is_dir, file_size}]}``."""
    parts = _parts(path or "", what="artifact path")
    files: list[dict[str, Any]] = []
    try:
        with os.scandir(_files(request).joinpath(*parts)) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    files.append({"path": e.name, "is_dir": True})
                elif e.is_file(follow_symlinks=False):
                    files.append({"path": e.name, "is_dir": False,
                                  "file_size": e.stat(follow_symlinks=False).st_size})
    except (FileNotFoundError, NotADirectoryError):
        pass  # MLflow lists a missing directory, or a file, as empty
    files.sort(key=lambda f: f["path"])
    return ok({"files": files})


# -- delete -----------------------------------------------------------------------------------
@router.delete("/mlflow-artifacts/artifacts/{path:path}", summary="Delete an artifact file or directory (MLflow)")
def delete_artifact(request: Request, who: Researcher, path: str) -> SafeJSONResponse:
    """Delete the file or tree at ``path`` (the run's owner or a supervisor); ``{}``."""
    parts = _parts(path.removesuffix("/"), what="artifact path")
    rid = _check_writer(request, who, parts)
    target = _files(request).joinpath(*parts)
    tmp_dir = _tmp(request)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    gone = tmp_dir / f"deleted-{uuid.uuid4().hex}"
    with _NAMESPACE:
        try:
            os.rename(target, gone)  # readers see all of it or none of it
        except (FileNotFoundError, NotADirectoryError):
            return ok({})
    if gone.is_dir():
        shutil.rmtree(gone, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            gone.unlink()
    request.app.state.audit.record(who.name, "mlflow_delete_artifacts", rid, "mlflow client",
                                   {"path": "/".join(parts)})
    return ok({})
