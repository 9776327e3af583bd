"""Blob routes: the content-addressed file store behind artifacts, over HTTP.

A client that logs an artifact to a server (``run.log_artifact`` of a run started with
``assay.init(server=...)``) hashes its files locally, asks which digests the server lacks
(``POST /api/blobs/missing``), streams only those (``PUT /api/blobs/{digest}``), then commits
the version's manifest (``POST /api/runs/{run_id}/artifacts``, in :mod:`.artifacts`).
Downloads read ``GET /api/blobs/{digest}``; the client verifies every digest itself.

- Uploads stream to disk in 1 MiB chunks (a checkpoint of many GB never sits in memory) and
  land only whole: the server hashes what it received, and a body whose digest is not the
  one in the path is refused (400) without replacing anything stored.
- Putting content the server holds already is harmless (one copy per digest). The commit
  checks every blob again under the write lock, so one that garbage collection freed after
  ``missing`` reported it present is refused (404), and the client sends it and commits again.
- Uploads run on their own few worker threads (:data:`UPLOAD_WORKERS`), never the pool the
  other routes share: when all are busy the answer is 503 with ``Retry-After`` (the client
  backs off and retries), and a body that sends nothing for :data:`UPLOAD_IDLE_S` seconds is
  cut off (408). Stalled or slow uploads cannot starve ``/api/health`` or the dashboard.
- Viewers may read any blob, as they may read every run and artifact; writing needs a
  researcher token.
"""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import NotFoundError, UserInputError
from ..store.blobs import LocalBlobStore
from .auth import Researcher, Viewer
from .graph import _api
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok

__all__ = ["MAX_BLOB_BYTES", "receive_upload", "router"]

T = TypeVar("T")

router = APIRouter(prefix="/api", tags=["artifacts"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)

#: Largest blob one PUT may carry (the route's own limit, above the server's JSON limit).
MAX_BLOB_BYTES = 1 << 40
#: Uploads stored at once (each holds a thread while its body arrives).
UPLOAD_WORKERS = 8
#: Seconds an upload may send nothing before it is cut off.
UPLOAD_IDLE_S = 60.0
_DIGEST = r"^sha256:[0-9a-f]{64}$"
Digest = Annotated[str, Path(pattern=_DIGEST, description='"sha256:" and 64 lowercase hex')]


class MissingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digests: list[Annotated[str, StringConstraints(pattern=_DIGEST)]] = Field(max_length=10_000)


@router.post("/blobs/missing", summary="Which of these blobs the server lacks")
def missing_blobs(request: Request, who: Researcher, body: MissingBody) -> SafeJSONResponse:
    """The digests (up to 10,000 per call) that are not stored (the commit checks again)."""
    blobs = _api(request)._graph().blobs
    return ok({"missing": [d for d in dict.fromkeys(body.digests) if not blobs.exists(d)]})


class _BodyReader(io.RawIOBase):
    """The request body as a blocking file, for a worker thread: each read pulls the next
    chunk from the event loop (``anyio.from_thread``), so nothing is buffered but one chunk."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes | None:
        try:
            with anyio.fail_after(UPLOAD_IDLE_S):
                return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._eof:
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._eof = True
            else:
                self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@router.put("/blobs/{digest}", summary="Upload one blob (the raw bytes of a file)",
            max_body_size=MAX_BLOB_BYTES,
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_blob(request: Request, who: Researcher, digest: Digest) -> SafeJSONResponse:
    """Store the body under its SHA-256; 400 if that is not ``digest`` (nothing is replaced).

    Answers ``{"digest", "size"}``. Sending a blob the server holds already is harmless.
    """
    blobs = (await run_in_threadpool(_api(request)._graph)).blobs  # LanceDB: off the loop
    ref = await receive_upload(request, "uploads", blobs.put_stream)
    if isinstance(ref, SafeJSONResponse):
        return ref
    if ref.digest != digest:
        # Stored under its own digest, referenced by nothing: garbage collection frees it.
        raise UserInputError(
            f"the body ({ref.size} bytes) hashes to {ref.digest}, not {digest}",
            hint="the file changed while it was read, or the path names another file's "
                 "digest; hash the file again and send it again")
    return ok({"digest": ref.digest, "size": ref.size})


async def receive_upload(request: Request, kind: str,
                         work: Callable[[Any], T]) -> T | SafeJSONResponse:
    """Run ``work`` on the request body (a buffered reader of it), in one of ``kind``'s own
    upload threads: ``UPLOAD_WORKERS`` at a time per kind, taken without waiting (a busy
    server answers 503 at once), never the pool every other route shares. A body idle for
    ``UPLOAD_IDLE_S`` is a 408, a full disk a 507; a client gone before the body ended gets
    a 400 nobody reads (``work`` must clean up what it wrote)."""
    state = request.app.state
    limiters = getattr(state, "upload_limiters", None)
    if limiters is None:
        limiters = state.upload_limiters = {}
    if kind not in limiters:
        limiters[kind] = (anyio.CapacityLimiter(UPLOAD_WORKERS),
                          anyio.CapacityLimiter(UPLOAD_WORKERS))
    slots, threads = limiters[kind]
    try:
        slots.acquire_nowait()
    except anyio.WouldBlock:
        raise HTTPException(503, f"{slots.total_tokens:g} {kind} are in progress; try again "
                            "shortly", headers={"Retry-After": "2"}) from None
    try:
        reader = io.BufferedReader(_BodyReader(request.stream().__aiter__()),
                                   buffer_size=1 << 20)
        return await anyio.to_thread.run_sync(work, reader, limiter=threads)
    except ClientDisconnect:
        return ok({"error": "the client disconnected before the body ended"}, 400)
    except TimeoutError:
        raise HTTPException(408, f"the upload sent nothing for {UPLOAD_IDLE_S:g} s",
                            headers={"Connection": "close"}) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HTTPException(507, "the server's disk is full; nothing was stored") from None
        raise
    finally:
        slots.release()


@router.get("/blobs/{digest}", summary="Download one blob",
            response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the blob's bytes"}})
def get_blob(request: Request, who: Viewer, digest: Digest) -> Response:
    """The stored bytes (verify them against the digest: this route does not, for a blob
    the disk changed under it; ``assay verify`` and the SDK's downloads do)."""
    blobs = _api(request)._graph().blobs
    if not blobs.exists(digest):
        raise NotFoundError(f"blob {digest} is not stored on this server",
                            hint="it may belong to a deleted artifact version that garbage "
                                 "collection freed; list versions with GET /api/artifacts")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, immutable"}
    if isinstance(blobs, LocalBlobStore):  # sendfile, Range requests, Content-Length
        return FileResponse(blobs.path_of(digest), media_type="application/octet-stream",
                            headers=headers)
    f = blobs._open_raw(digest)

    def chunks() -> Any:
        with f:
            while data := f.read(1 << 20):
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)
