"""Artifacts of a run that logs to a server: upload, commit, use and download over HTTP.

``run.log_artifact(path, ...)`` of a run started with ``assay.init(server=...)``:

1. hashes the files locally (nothing is sent yet, and a bad tree is refused before any
   upload);
2. asks the server which blobs it lacks (``POST /api/blobs/missing``): a file the server
   holds already, from any run, is never sent again, so re-logging a checkpoint folder
   sends only what changed;
3. streams each missing file (``PUT /api/blobs/{digest}``, four at a time, from disk in
   chunks), retrying network errors and busy answers with backoff (a server that is away or
   busy is waited for up to ``ASSAY_UPLOAD_RETRY_S`` seconds, default 600); the server
   checks every digest;
4. commits the manifest (``POST /api/runs/{run_id}/artifacts``); the server checks that each
   blob is there with its size, makes the version and the lineage edge.

``run.use_artifact(spec)`` records the edge on the server and returns the same
:class:`~assay.sdk.graph.Artifact` handle as a local run gets; its ``download()`` reads the
manifest and files over ``GET /api/blobs/{digest}`` and verifies every digest before a file
lands (the server's disk is not trusted either).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self, cast

from ..errors import AssayError, NotFoundError, UserInputError
from ..store.artifacts import ArtifactVersion
from ..store.blobs import BlobRef, BlobStore, hash_file
from ..store.manifests import ManifestEntry, build_manifest, get_manifest, materialize
from .remote import _RETRY_STATUS, _auth_headers, _raise_for

__all__ = ["HttpBlobStore", "RemoteArtifacts", "RemoteGraph", "server_cache"]

log = logging.getLogger(__name__)

_MISSING_BATCH = 10_000
MAX_FILES = 1_000_000  # the server's limits on one commit (api/artifacts.py)
MAX_COMMIT_BYTES = 256 << 20
#: Seconds to wait for an answer (``ASSAY_HTTP_TIMEOUT``), and for the answer to an upload,
#: which comes once the server has the file on its disk (``ASSAY_UPLOAD_TIMEOUT``).
HTTP_TIMEOUT = float(os.environ.get("ASSAY_HTTP_TIMEOUT", "60"))
UPLOAD_TIMEOUT = float(os.environ.get("ASSAY_UPLOAD_TIMEOUT", "600"))
#: Seconds an artifact request waits for a server that is away or busy, by default
#: (``ASSAY_UPLOAD_RETRY_S`` overrides it when a client is made).
RETRY_BUDGET = 600.0
#: Answers that mean "away or busy, come back later": waited for within the retry budget.
_WAIT_STATUS = frozenset({429, 502, 503, 504})


class HttpBlobStore(BlobStore):
    """A server's blob store seen through its blob routes.

    Reads are verified here (:meth:`BlobStore.get_to_path`), puts hash the file first and
    let the server check the digest. Garbage collection runs on the server, not here.

    Args:
        http: The ``httpx.Client`` (base URL and token set).
        server: The server's URL, for messages.
        attempts: Tries per request for failures other than the server being away or busy
            (default 6); when given, it caps those too.
        max_backoff: Longest wait between tries, in seconds.
        upload_timeout: Seconds to wait for the answer to an upload.
        retry_budget: Seconds to wait for a server that is away or busy (default:
            ``ASSAY_UPLOAD_RETRY_S``, else 600).
    """

    read_chunk = 1 << 20

    def __init__(self, http: Any, server: str, attempts: int | None = None,
                 max_backoff: float = 20.0, upload_timeout: float = 600.0,
                 retry_budget: float | None = None) -> None:
        self._http = http
        self._server = server.rstrip("/")
        # Tries per call for failures other than a server away or busy (6); one given here
        # caps every kind of failure too.
        self.attempts, self.max_backoff = attempts or 6, max_backoff
        self._cap_all = attempts is not None
        self.upload_timeout = upload_timeout
        self.retry_budget = retry_budget if retry_budget is not None else _retry_budget()
        # Injected for tests: the clock the budget is measured on, and the wait between tries.
        self._clock: Callable[[], float] = time.monotonic
        self._wait: Callable[[float], None] = time.sleep

    @property
    def uri(self) -> str:
        return f"{self._server}/api/blobs"

    def location(self, digest: str) -> str:
        return f"{self.uri}/{digest}"

    def exists(self, digest: str) -> bool:
        return not self.missing([digest])

    def missing(self, digests: list[str]) -> list[str]:
        """The digests the server does not hold (in the order given, once each)."""
        uniq = list(dict.fromkeys(digests))
        out: list[str] = []
        for i in range(0, len(uniq), _MISSING_BATCH):
            resp = self.request("POST", "/api/blobs/missing",
                                json={"digests": uniq[i:i + _MISSING_BATCH]})
            out += resp.json()["missing"]
        return out

    def put_file(self, path: str | os.PathLike[str]) -> BlobRef:
        ref = hash_file(path)
        self.upload(path, ref)
        return ref

    def upload(self, path: str | os.PathLike[str], ref: BlobRef) -> None:
        """Send the file whose digest and size are ``ref`` (hashed before).

        The server answers once the blob is on its disk (fsynced), which for a large file
        on a slow disk takes a while: the wait is ``upload_timeout``, and an attempt that
        timed out anyway asks the server for the blob before sending it again."""
        import httpx

        tries = 0

        def send() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1 and not self.missing([ref.digest]):  # the lost answer was a success
                return httpx.Response(200, json={"digest": ref.digest, "size": ref.size})
            with open(path, "rb") as f:
                return self._http.put(f"/api/blobs/{ref.digest}", content=f,
                                      headers={"Content-Type": "application/octet-stream"},
                                      timeout=httpx.Timeout(self.upload_timeout, connect=10.0))
        try:
            self._retry(send, f"uploading {path}")
        except UserInputError as exc:  # a 400 to a well-formed digest: the bytes differed
            if "hashes to" in exc.message:
                raise UserInputError(
                    f"{path} changed while it was uploaded (it hashed to {ref.digest} "
                    "before): no version was made", hint="log it again once it is written "
                    "(or log a copy)") from exc
            raise

    def put_stream(self, stream: IO[bytes]) -> BlobRef:
        with tempfile.NamedTemporaryFile(prefix="assay-upload-") as tmp:
            while data := stream.read(1 << 20):
                tmp.write(data)
            tmp.flush()
            return self.put_file(tmp.name)

    def delete(self, digest: str) -> bool:
        raise UserInputError("blobs on a server are freed by its garbage collection",
                             hint="an admin runs `assay artifact gc` (POST /api/artifacts/gc)")

    def _open_raw(self, digest: str) -> IO[bytes]:
        resp = self._retry(lambda: self._http.send(
            self._http.build_request("GET", f"/api/blobs/{digest}"), stream=True),
            f"reading blob {digest}", close_refused=True)
        return cast(IO[bytes], _ResponseReader(resp))

    def _download(self, digest: str, tmp: Path) -> BlobRef:
        # A dropped connection restarts the file (the digest check catches a short read).
        import httpx

        for attempt in range(self.attempts):
            try:
                return super()._download(digest, tmp)
            except (httpx.TransportError, httpx.StreamError) as exc:
                if attempt + 1 == self.attempts:
                    raise AssayError(f"reading blob {digest} from {self.uri} failed: {exc}",
                                     hint="check the network and the server; then download "
                                          "again (what was written is verified)") from exc
                self._sleep(attempt, None)
        raise AssertionError("unreachable")

    # -- HTTP -----------------------------------------------------------------------------------
    def request(self, method: str, url: str, *, idempotent: bool = True, **kw: Any) -> Any:
        return self._retry(lambda: self._http.request(method, url, **kw), f"{method} {url}",
                           idempotent=idempotent)

    def _retry(self, call: Callable[[], Any], what: str, *, close_refused: bool = False,
               idempotent: bool = True) -> Any:
        """``call()`` until it is answered with something other than a busy/unavailable
        status, with exponential backoff and jitter; refusals (400, 403, 404, ...) raise the
        matching AssayError at once.

        A server that is away (connection refused; 502 or 504 from a proxy in front of it)
        or busy (503, 429; ``Retry-After`` honoured) is waited for up to ``retry_budget``
        seconds from the first failure (``ASSAY_UPLOAD_RETRY_S``, default 600), so a restart
        or a queue of uploads is outlasted as the run's metrics outlast it. Other failures (a
        dropped or timed-out answer, 408, 500) are tried ``attempts`` times within that
        budget. A call that is not ``idempotent`` is sent again only when the first attempt
        never reached the server (a refused connection)."""
        import httpx

        tries = failures = 0
        deadline: float | None = None  # set at the first failure
        while True:
            tries += 1
            try:
                resp = call()
            except httpx.TransportError as exc:
                away = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                failures += not away or self._cap_all
                deadline = self._clock() + self.retry_budget if deadline is None else deadline
                if (idempotent or away) and failures < self.attempts \
                        and self._pause(tries, None, away, deadline):
                    continue
                raise AssayError(
                    f"{what}: the server at {self.uri} did not answer ({exc}"
                    f"{self._waited(deadline)})",
                    hint="check the network and the server, then try again" + (
                        "; nothing reached it (ASSAY_UPLOAD_RETRY_S sets how many seconds "
                        "to wait for a server that is away)" if away else
                        "; it may have acted on the request (uploads and commits are safe "
                        "to repeat)")) from exc
            status = resp.status_code
            if status in _RETRY_STATUS:
                away = status in _WAIT_STATUS
                failures += not away or self._cap_all
                deadline = self._clock() + self.retry_budget if deadline is None else deadline
                if close_refused:
                    resp.read()
                    resp.close()
                if failures < self.attempts and self._pause(
                        tries, resp.headers.get("Retry-After"), away, deadline):
                    continue
                if away:
                    try:
                        _raise_for(resp)
                    except AssayError as exc:
                        raise type(exc)(
                            f"{what}: {exc.message} (still so{self._waited(deadline)})",
                            hint="raise ASSAY_UPLOAD_RETRY_S to wait longer for a busy or "
                                 "restarting server" + (f"; {exc.hint}" if exc.hint else "")
                        ) from None
            elif status >= 400 and close_refused:
                resp.read()
                resp.close()
            _raise_for(resp)
            return resp

    def _waited(self, deadline: float) -> str:
        """", after N s" since the first failure (for messages)."""
        return f", after {max(0.0, self._clock() - deadline + self.retry_budget):.0f} s"

    def _pause(self, tries: int, retry_after: str | None, away: bool,
               deadline: float) -> bool:
        """Wait before try ``tries + 1``; False (no wait) once ``deadline`` has passed."""
        left = deadline - self._clock()
        if left <= 0:
            return False
        self._wait(min(left, self._backoff(tries, retry_after, away=away)))
        return True

    def _backoff(self, tries: int, retry_after: str | None, *, away: bool = False) -> float:
        """Seconds to wait after ``tries`` tries: doubling from 0.25 s with jitter, up to
        ``max_backoff`` (5 s while the server is away or busy, so its return is noticed
        soon), and at least ``Retry-After``."""
        cap = min(self.max_backoff, 5.0) if away else self.max_backoff
        delay = min(cap, 0.25 * 2 ** min(tries - 1, 20)) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff))
            except ValueError:
                pass
        return delay

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        self._wait(self._backoff(attempt + 1, retry_after))


def _retry_budget() -> float:
    """``ASSAY_UPLOAD_RETRY_S``: seconds to wait for a server that is away or busy."""
    raw = os.environ.get("ASSAY_UPLOAD_RETRY_S", "")
    try:
        value = float(raw) if raw else RETRY_BUDGET
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise UserInputError(f"ASSAY_UPLOAD_RETRY_S={raw!r} is not a number of seconds",
                             hint=f"unset it for the default ({RETRY_BUDGET:g} s), or give "
                                  "seconds such as 600")
    return value


class _ResponseReader:
    """A streamed HTTP response as the raw file ``BlobStore`` reads from."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self._it: Iterator[bytes] = resp.iter_bytes(1 << 20)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._it, None)
            if chunk is None:
                break
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _version(d: dict[str, Any]) -> ArtifactVersion:
    return ArtifactVersion(
        name=d["name"], version=int(d["version"]), type=d["type"], project=d["project"],
        digest=d["digest"], manifest_blob=d["manifest_blob"], files=int(d["files"]),
        size=int(d["size"]), created_by=d.get("created_by") or "",
        created_at=float(d.get("created_at") or 0.0), metadata=dict(d.get("metadata") or {}),
        description=d.get("description") or "", aliases=tuple(d.get("aliases") or ()))


class RemoteArtifacts:
    """What an :class:`~assay.sdk.graph.Artifact` handle needs of a registry, served by an
    assay server: log, use, manifest, download, delete."""

    def __init__(self, server: str, token: str | None, *, timeout: float | None = None,
                 upload_timeout: float | None = None, workers: int = 4,
                 retry_budget: float | None = None, attempts: int | None = None) -> None:
        import httpx

        self.server = server.rstrip("/")
        timeout = timeout if timeout is not None else HTTP_TIMEOUT
        self._http = httpx.Client(base_url=self.server, headers=_auth_headers(token),
                                  timeout=timeout)
        self.blobs = HttpBlobStore(self._http, self.server, upload_timeout=(
            upload_timeout if upload_timeout is not None else UPLOAD_TIMEOUT),
            retry_budget=retry_budget, attempts=attempts)
        self.workers = workers

    def close(self) -> None:
        self._http.close()

    def log(self, path: str | os.PathLike[str], name: str, type: str, *, project: str,
            run_id: str, aliases: list[str], metadata: dict[str, Any],
            description: str) -> ArtifactVersion:
        """Upload what the server lacks, then commit the version (see the module doc)."""
        entries = build_manifest(path, None)  # hashes only; refuses bad names, special files
        sources = _sources(Path(path), entries)
        body: dict[str, Any] = {"name": name, "type": type, "project": project,
                                "aliases": aliases, "metadata": metadata,
                                "description": description,
                                "files": [e.to_dict() for e in entries]}
        if entries.folder and len(entries) == 1 and "/" not in entries[0].path:
            body["folder"] = True  # only here does the server need telling (see Manifest)
        _check_commit(body)  # what the server would refuse, refused before any upload
        for attempt in range(3):
            self._upload_missing(entries, sources)
            try:
                resp = self.blobs.request("POST", f"/api/runs/{run_id}/artifacts", json=body)
                return _version(resp.json())
            except NotFoundError as exc:
                # A blob the server reported present was freed before the commit (its gc
                # grace ran out): check again and send what is missing.
                if attempt > 1 or "is not stored" not in exc.message:
                    raise
            except UserInputError as exc:
                if not (body.pop("folder", False) and "folder" in exc.message
                        and "xtra inputs" in exc.message):
                    raise
                log.warning("the server %s is too old to record that %s is a folder: its "
                            "download will give the one file it holds, not the folder "
                            "(upgrade the server to keep the difference)", self.server, path)
        raise AssertionError("unreachable")

    def _upload_missing(self, entries: list[ManifestEntry], sources: dict[str, Path]) -> None:
        first: dict[str, ManifestEntry] = {}
        for e in entries:
            first.setdefault(e.digest, e)
        todo = [first[d] for d in self.blobs.missing(list(first))]
        if not todo:
            return
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            list(pool.map(lambda e: self.blobs.upload(sources[e.path],
                                                      BlobRef(e.digest, e.size)), todo))
        log.debug("uploaded %d blobs (%d bytes) in %.1f s", len(todo),
                  sum(e.size for e in todo), time.monotonic() - t0)

    def use(self, spec: str, run_id: str) -> ArtifactVersion:
        resp = self.blobs.request("POST", f"/api/runs/{run_id}/used-artifacts",
                                  json={"spec": spec})
        return _version(resp.json())

    def manifest(self, av: ArtifactVersion) -> list[ManifestEntry]:
        return get_manifest(self.blobs, av.manifest_blob)

    def download(self, av: ArtifactVersion, dest: str | Path) -> Path:
        materialize(self.manifest(av), self.blobs, dest, workers=self.workers)
        return Path(dest)

    def get(self, name: str, sel: str) -> ArtifactVersion:
        """A version as the server has it now (``sel``: ``vN`` or an alias; its manifest blob
        is not served: ``manifest_blob`` is empty)."""
        resp = self.blobs.request("GET", f"/api/artifacts/{name}/{sel}")
        return _version({"manifest_blob": "", **resp.json()})

    def list(self, project: str | None = None, name: str | None = None, *,
             include_deleted: bool = False) -> Any:
        """The server's versions as :meth:`ArtifactRegistry.list
        <assay.store.artifacts.ArtifactRegistry.list>` frames them (newest last per name)."""
        import json

        import polars as pl

        params: dict[str, Any] = {"limit": 5000, "include_deleted": include_deleted}
        if project is not None:
            params["project"] = project
        if name is not None:
            params["name"] = name
        body = self.blobs.request("GET", "/api/artifacts", params=params).json()
        rows = body.get("artifacts") or []
        if int(body.get("total", len(rows))) > len(rows):
            raise UserInputError(
                f"the server lists {body['total']} artifact versions and serves 5000 at once",
                hint="narrow it with project= or name=")
        cols = ["name", "version", "type", "project", "digest", "manifest_blob", "files",
                "size", "metadata", "description", "created_by", "created_at"]
        schema: dict[str, Any] = {"name": pl.String, "version": pl.Int64, "type": pl.String,
                                  "project": pl.String, "digest": pl.String,
                                  "manifest_blob": pl.String, "files": pl.Int64,
                                  "size": pl.Int64, "metadata": pl.String,
                                  "description": pl.String, "created_by": pl.String,
                                  "created_at": pl.Float64}
        if include_deleted:
            cols += ["deleted_at", "deleted_by", "delete_reason"]
            schema.update(deleted_at=pl.Float64, deleted_by=pl.String, delete_reason=pl.String)
        out = []
        for r in rows:
            row = {c: r.get(c) for c in cols}
            # Stored as this JSON text (store/artifacts.py), served parsed.
            row["metadata"] = json.dumps(r.get("metadata") or {}, default=str, allow_nan=True)
            row["aliases"] = sorted(r.get("aliases") or []) or None
            out.append(row)
        schema["aliases"] = pl.List(pl.String)
        return pl.DataFrame(out, schema=schema).sort("name", "version")

    def set_alias(self, spec: str, alias: str, actor: str = "", reason: str = "") -> None:
        """Point ``alias`` at the version ``spec`` names, on the server (the token's name is
        the actor there; its owner rule applies)."""
        name, _, version = spec.partition(":")
        self.blobs.request("PUT", f"/api/artifacts/{name}/aliases/{alias}", idempotent=True,
                           json={"version": int(version.removeprefix("v")), "reason": reason})

    def remove_alias(self, name: str, alias: str, actor: str = "", reason: str = "", *,
                     expect_version: int | None = None) -> None:
        """Remove ``alias`` on the server, only while it names ``expect_version`` when one
        is given (a 409 otherwise); the server checks the version's owner for researchers."""
        params: dict[str, Any] = {"reason": reason}
        if expect_version is not None:
            params["version"] = expect_version
        self.blobs.request("DELETE", f"/api/artifacts/{name}/aliases/{alias}",
                           idempotent=False, params=params)

    def delete(self, spec: str, *, actor: str = "", reason: str = "",
               delete_aliases: bool = False) -> None:
        """Delete a version on the server (the token's name is the actor there)."""
        name, _, version = spec.partition(":")
        self.blobs.request("DELETE", f"/api/artifacts/{name}/{version}", idempotent=False,
                           params={"reason": reason,
                                   "delete_aliases": "true" if delete_aliases else "false"})


def _check_commit(body: dict[str, Any]) -> None:
    """Refuse, before any file is sent, a commit the server's limits or its strict JSON
    would refuse after the upload."""
    import json

    if len(body["files"]) > MAX_FILES:
        raise UserInputError(f"{len(body['files'])} files are more than a server takes in one "
                             f"version ({MAX_FILES})", hint="split it into several artifacts")
    if len(body["aliases"]) > 100 or len(body["description"]) > 100_000:
        raise UserInputError("at most 100 aliases and a description of 100,000 characters",
                             hint="shorten them")
    try:
        data = json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a ValueError too: first
        bad = next((f["path"] for f in body["files"] if not _utf8(f["path"])), "a name")
        raise UserInputError(f"the file name {bad!r} is not valid UTF-8",
                             hint="rename it; names are sent to the server as UTF-8") from None
    except ValueError as exc:  # NaN or infinity
        raise UserInputError(f"the artifact's metadata holds a number JSON cannot carry to "
                             f"the server ({exc})",
                             hint="use None or a string for NaN and infinities") from None
    if len(data) > MAX_COMMIT_BYTES:
        raise UserInputError(f"the version's manifest is {len(data) >> 20} MiB, more than the "
                             f"server takes ({MAX_COMMIT_BYTES >> 20} MiB)",
                             hint="split it into several artifacts")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sources(path: Path, entries: list[ManifestEntry]) -> dict[str, Path]:
    """Each entry's file on disk (links inside a folder were followed by the manifest)."""
    if path.resolve().is_file():
        return {entries[0].path: path}
    return {e.path: path / e.path for e in entries}


def server_cache(data_dir: Path, server: str) -> Path:
    """The folder under which a server's artifact versions are downloaded by default
    (``<it>/artifacts/NAME/vN``): one per server, apart from the data directory's own
    ``artifacts/``, because ``model:v0`` on two servers (or here) are different versions."""
    import re
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{parts.netloc}{parts.path}".strip("/")) or "server"
    return Path(data_dir) / "servers" / slug


@dataclass(frozen=True)
class RemoteGraph:
    """The two parts of :class:`~assay.sdk.graph.Graph` an Artifact handle uses: where
    downloads go by default (this machine's data directory) and the registry."""

    dir: Path
    artifacts: RemoteArtifacts
