"""Remote logging, client side: ship a run's local write-ahead log to an assay server.

``assay.init(project, server="http://host:8000", token=...)`` keeps the run's WAL on the
local disk (written and fsynced by the writer thread exactly as for a local run) and starts a
:class:`RemoteSender`: a thread that tails the segment and posts its frames, unchanged, to
``POST /api/runs/{run_id}/records``. The server appends them to its own WAL and answers the
highest durable ``seq``; the sender only forgets what the server has acknowledged.

- Training never waits: ``run.log`` only touches memory; this thread does the network.
- Bounded memory: unacknowledged data stays in the file; the sender keeps an offset and
  reads at most one batch (``batch_bytes``) at a time.
- Network cuts and server restarts: every failure is retried with exponential backoff and
  jitter (``Retry-After`` honoured); records are idempotent by ``seq`` on the server, so a
  retry after a lost answer never duplicates. The run is never marked crashed for it.
- Finishing: :meth:`RemoteSender.close` waits (with a timeout) until the server holds every
  record, then deletes the local segment. If the server stays unreachable, the segment stays
  in ``<dir>/outbox/`` and :func:`sync_outbox` (``assay sync --server URL``) ships it later.
- Errors that retrying cannot fix (401/403: token; 400/409: refused records) stop the sender
  and are kept in :attr:`RemoteSender.error`; the local WAL keeps everything.

Local segments of remote runs live in ``<dir>/outbox/<run_id>/<attach:06d>.wal``, not under
``wal/``: the local ingest daemon must not ingest them (the server is their ingester).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AssayError, ConflictError, NotFoundError, PermissionDeniedError, UserInputError
from ..store.wal import (
    FRAME_HEADER,
    FRAME_MAGIC,
    encode,
    iter_file_frames,
    iter_frames,
    try_lock_segment,
)

__all__ = ["MEDIA_TYPE", "RemoteClient", "RemoteSender", "ServerInfo", "outbox_segment",
           "sync_outbox", "wait_ingested"]

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/x-assay-wal"
_METRICS_PREFIX = b'{"k":"metrics","seq":'
_SEQ_TAIL = re.compile(rb'"seq":(\d+)\}$')
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: seconds a finishing run keeps trying a server it cannot reach at all (see close())
UNREACHABLE_GRACE_S = float(os.environ.get("ASSAY_REMOTE_UNREACHABLE_GRACE", "10"))


def outbox_segment(data_dir: Path, run_id: str, attach: int) -> Path:
    """Where a remote run's local WAL segment lives (outside the local daemon's ``wal/``)."""
    return Path(data_dir) / "outbox" / run_id / f"{attach:06d}.wal"


def _seq_of(payload: bytes) -> int:
    """A record's seq without decoding all of it (metric records can be megabytes)."""
    if payload.startswith(_METRICS_PREFIX):
        end = payload.index(b",", len(_METRICS_PREFIX))
        return int(payload[len(_METRICS_PREFIX):end])
    m = _SEQ_TAIL.search(payload[-32:])
    if m:
        return int(m.group(1))
    import json

    return int(json.loads(payload)["seq"])


def _frames(data: bytes, base: int) -> Iterator[tuple[int, int, int]]:
    """``(start, end, seq)`` of each complete, intact frame in ``data`` (file offset ``base``)."""
    for start, end, payload in iter_frames(data):
        yield base + start, base + end, _seq_of(payload)


def _auth_headers(token: str | None) -> dict[str, str]:
    from .. import __version__

    h = {"User-Agent": f"assay/{__version__}"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def public_url(url: str) -> str:
    """``url`` without credentials (``https://user:pw@host`` -> ``https://host``): what an
    agent's state, reports and messages may show of the server its trials log to."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _raise_for(resp: Any) -> None:
    """Turn a refused answer into the matching AssayError (message and hint from the server)."""
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        msg, hint = body.get("error", resp.text), body.get("hint", "")
    except ValueError:
        msg, hint = resp.text[:500], ""
    if resp.status_code == 401:  # the server's hint speaks HTTP; this is the SDK
        hint = ("pass token= to assay.init (or set ASSAY_TOKEN) to a researcher's token: "
                "`assay token create NAME --role researcher` on the server")
    cls: type[AssayError] = {400: UserInputError, 401: PermissionDeniedError,
                             403: PermissionDeniedError, 404: NotFoundError,
                             409: ConflictError, 413: UserInputError}.get(resp.status_code,
                                                                         AssayError)
    raise cls(f"server answered {resp.status_code}: {msg}", hint=hint)


@dataclass(frozen=True)
class ServerInfo:
    """What a server says of itself: an SDK newer than its server checks ``features``
    before sending what the server would refuse (a server too old to list them has none)."""

    server: str
    version: str
    features: frozenset[str]

    def require(self, feature: str, what: str) -> None:
        """Raise a clear error when the server lacks ``feature`` (needed for ``what``)."""
        from .. import __version__

        if feature not in self.features:
            raise UserInputError(
                f"the server {self.server} (assay {self.version}) is too old for {what}: it "
                f"lacks the {feature!r} feature",
                hint="upgrade the server to this SDK's version (the SDK is assay "
                     f"{__version__}), or use an SDK as old as the server")


class RemoteClient:
    """Small synchronous calls to a server (used at ``init`` to resume a remote run)."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 10.0) -> None:
        import httpx

        self.server = server.rstrip("/")
        self._http = httpx.Client(base_url=self.server, headers=_auth_headers(token),
                                  timeout=timeout)

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run as ``GET /api/runs/{id}`` shows it (config, summary_stats, last_step, attach)."""
        resp = self._http.get(f"/api/runs/{run_id}")
        _raise_for(resp)
        return resp.json()  # type: ignore[no-any-return]

    def durable_seq(self, run_id: str) -> int:
        resp = self._http.get(f"/api/runs/{run_id}/records")
        _raise_for(resp)
        return int(resp.json()["durable_seq"])

    def check_writer(self, run_id: str) -> None:
        """Raise PermissionDeniedError unless this token may write the run (its owner, or a
        supervisor): an empty batch is the server's heartbeat, and it checks the writer."""
        resp = self._http.post(f"/api/runs/{run_id}/records", content=b"",
                               headers={"Content-Type": MEDIA_TYPE})
        _raise_for(resp)

    def check_can_log(self) -> None:
        """Refuse now what the server would refuse at the first batch: a token it does not
        know, or a viewer's (which cannot write runs). A server that does not answer says
        nothing: the run logs to its outbox and is sent (or synced) later."""
        import httpx

        try:
            resp = self._http.get("/api/whoami")
        except httpx.TransportError as exc:
            log.warning("assay: %s did not answer (%s): the run logs to its local outbox and "
                        "is sent once the server answers, or later with `assay sync --server "
                        "%s`", self.server, exc, self.server)
            return
        if resp.status_code in (401, 403):
            _raise_for(resp)
        if resp.status_code >= 400:
            # A server without whoami (404), away behind a proxy or busy (5xx, 429): the run
            # logs to its outbox, and the first batch the server takes tells the rest.
            log.debug("assay: %s answered whoami with %d; not checked", self.server,
                      resp.status_code)
            return
        try:
            me = resp.json()
        except ValueError:
            return
        if isinstance(me, dict) and me.get("role") == "viewer":
            raise PermissionDeniedError(
                f"the token {me.get('name')!r} is a viewer's: {self.server} would refuse this "
                "run's records", hint="pass token= (or set ASSAY_TOKEN) to a researcher's token: "
                                      "`assay token create NAME --role researcher` on the server")

    def server_info(self) -> ServerInfo:
        """The server's version and features (``GET /api/health``)."""
        resp = self._http.get("/api/health")
        _raise_for(resp)
        body = resp.json()
        body = body if isinstance(body, dict) else {}
        features = body.get("features")
        features = features if isinstance(features, list) else []
        return ServerInfo(self.server, str(body.get("version", "?")),
                          frozenset(f for f in features if isinstance(f, str)))

    def close(self) -> None:
        self._http.close()


class RemoteSender(threading.Thread):
    """Tails one local WAL segment and ships it to a server (see the module docstring).

    Args:
        server: base URL, e.g. ``http://127.0.0.1:8000``.
        run_id: the run the segment belongs to.
        segment: the local segment file (may not exist yet).
        token: bearer token (a researcher's); default ``$ASSAY_TOKEN``.
        batch_bytes: most bytes per request (one larger record goes alone).
        poll: seconds between looks at the file when idle.
        heartbeat: seconds of silence after which an empty batch tells the server the run is
            alive.
        timeout: seconds per HTTP request.
        max_backoff: longest wait between retries.
        delete_when_done: remove the local segment once all of it is acknowledged.
    """

    def __init__(self, server: str, run_id: str, segment: Path, *, token: str | None = None,
                 batch_bytes: int = 4 << 20, poll: float = 0.2, heartbeat: float = 30.0,
                 timeout: float = 10.0, max_backoff: float = 30.0,
                 delete_when_done: bool = True) -> None:
        super().__init__(name=f"assay-sender-{run_id}", daemon=True)
        self.server = server.rstrip("/")
        self.run_id = run_id
        self.segment = Path(segment)
        self.token = token if token is not None else os.environ.get("ASSAY_TOKEN")
        self.batch_bytes, self.poll, self.heartbeat = batch_bytes, poll, heartbeat
        self.timeout, self.max_backoff = timeout, max_backoff
        self.delete_when_done = delete_when_done
        self.acked_seq = -1
        self.acked_offset = 0
        self.error: AssayError | None = None
        self.retries = 0
        self._closing = False
        self._abandoned = False
        self._done = threading.Event()
        self._wake = threading.Event()
        self._ack = threading.Condition()
        self._last_post = time.monotonic()
        #: monotonic time of the first failed connection since the server last answered
        self.unreachable_since: float | None = None

    # -- public ---------------------------------------------------------------------------
    def wake(self) -> None:
        """Look at the segment now (e.g. after ``run.flush()``)."""
        self._wake.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server holds everything in the segment now. False on timeout."""
        try:
            target = os.path.getsize(self.segment)
        except FileNotFoundError:
            return True
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ack:
            while self.acked_offset < target and self.error is None and not self._done.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._ack.wait(left if left is None else min(left, 0.5))
        return self.acked_offset >= target

    def abandon(self) -> None:
        """Stop sending now and keep the local segment (for :func:`sync_outbox` later)."""
        self._abandoned = True
        self._wake.set()

    def close(self, timeout: float | None = 60.0,
              unreachable_grace: float | None = None) -> bool:
        """The writer has closed the segment: send the rest and stop.

        Returns True once the server holds every record (the local segment is then deleted),
        False on timeout or a refusal (:attr:`error`); the segment is then kept for
        :func:`sync_outbox`, and the thread keeps trying in the background after a timeout.

        A server that cannot be reached at all (no answer, not even an error) is given
        ``unreachable_grace`` seconds (default ``$ASSAY_REMOTE_UNREACHABLE_GRACE``, 10) from
        here, not the whole ``timeout``: a script that logged offline exits promptly and its
        records wait in the outbox. A server that answers, even busy (5xx, 429), gets the
        whole ``timeout``.
        """
        self._closing = True
        self._wake.set()
        if not self.is_alive() and not self._done.is_set():
            self.start()
        grace = UNREACHABLE_GRACE_S if unreachable_grace is None else unreachable_grace
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        gave_up = False
        while not self._done.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            down = self.unreachable_since
            if down is not None and now - max(down, start) >= grace:
                gave_up = True
                break
            self._done.wait(0.1 if deadline is None else min(0.1, deadline - now))
        ok = self._done.is_set() and self.error is None and not self._abandoned
        if not ok:
            if self.error:
                why = f"the server refused it: {self.error}"
            elif gave_up:
                why = (f"{self.server} could not be reached (for "
                       f"{time.monotonic() - (self.unreachable_since or start):.0f} s)")
            else:
                why = f"{self.server} did not acknowledge everything within {timeout} s"
            log.warning("assay: run %s is finished locally but %s; its records are kept in %s "
                        "and can be sent with `assay sync --server %s`", self.run_id, why,
                        self.segment, self.server)
        return ok

    # -- the thread -----------------------------------------------------------------------
    def run(self) -> None:
        import httpx

        http = httpx.Client(base_url=self.server, headers=_auth_headers(self.token),
                            timeout=self.timeout)
        backoff = 0.0
        try:
            self._resume_point(http)
            while self.error is None and not self._abandoned:
                # Read before the step: a close() that comes after this step read the file
                # (the final status just written) must not end the loop before it is sent.
                closing = self._closing
                try:
                    sent_all = self._step(http)
                    backoff = 0.0
                except _Retry as r:
                    self.retries += 1
                    backoff = min(self.max_backoff, max(0.2, backoff * 2))
                    wait = max(backoff * random.uniform(0.8, 1.2), r.after)
                    log.debug("assay sender %s: %s; retrying in %.1f s", self.run_id, r, wait)
                    self._wake.wait(wait)
                    self._wake.clear()
                    continue
                if sent_all and closing:
                    break
                if sent_all:
                    self._wake.wait(self.poll)
                    self._wake.clear()
        except AssayError as exc:
            self.error = exc
            log.warning("assay sender %s stopped: %s", self.run_id, exc)
        except Exception as exc:  # never let the thread die silently
            self.error = AssayError(f"remote sender failed: {exc!r}", hint="see the log")
            log.exception("assay sender %s failed", self.run_id)
        finally:
            http.close()
            if self.error is None and not self._abandoned and self.delete_when_done:
                self.segment.unlink(missing_ok=True)
                try:
                    self.segment.parent.rmdir()
                except OSError:
                    pass
            self._done.set()
            with self._ack:
                self._ack.notify_all()

    def _resume_point(self, http: Any) -> None:
        """Skip what the server already holds (a sender restarted by ``sync_outbox``)."""
        import httpx

        try:
            if not self.segment.exists() or self.segment.stat().st_size == 0:
                return
            try:
                resp = http.get(f"/api/runs/{self.run_id}/records")
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self.unreachable_since = time.monotonic()
                raise
            self.unreachable_since = None
            if resp.status_code == 200:
                self._advance(int(resp.json().get("durable_seq", -1)))
        except (httpx.HTTPError, OSError, ValueError, KeyError, AttributeError):
            return  # unreachable now: start from 0; the server drops duplicates

    def _advance(self, durable: int, sent: bytes | None = None) -> None:
        """Move the acknowledged offset past every frame with seq <= ``durable``.

        ``sent`` is the batch just posted (it starts at the acknowledged offset); without it,
        or when the server holds less than before, the file is scanned.
        """
        if durable < self.acked_seq:
            self.acked_seq, self.acked_offset = -1, 0  # the server lost data: resend
            sent = None
        frames = (_frames(sent, self.acked_offset) if sent is not None else
                  ((s, e, _seq_of(p)) for s, e, p in iter_file_frames(self.segment,
                                                                      self.acked_offset)))
        for _, end, seq in frames:
            if seq > durable:
                break
            self.acked_offset, self.acked_seq = end, seq
        with self._ack:
            self._ack.notify_all()

    def _read_batch(self) -> tuple[bytes, int]:
        """Complete frames from the acknowledged offset, at most ``batch_bytes`` (one frame
        at least); returns (bytes, last seq)."""
        try:
            with open(self.segment, "rb") as f:
                f.seek(self.acked_offset)
                data = f.read(self.batch_bytes)
                end, last = 0, -1
                for _, e, seq in _frames(data, 0):
                    end, last = e, seq
                if end == 0 and len(data) >= FRAME_HEADER.size:
                    magic, length, _ = FRAME_HEADER.unpack_from(data, 0)
                    if magic == FRAME_MAGIC and length + FRAME_HEADER.size > len(data):
                        f.seek(self.acked_offset)
                        data = f.read(FRAME_HEADER.size + length)  # one large record, alone
                        for _, e, seq in _frames(data, 0):
                            end, last = e, seq
        except FileNotFoundError:
            return b"", -1
        return data[:end], last

    def _step(self, http: Any) -> bool:
        """Send one batch (or a heartbeat); True when nothing is left to send right now."""
        body, last = self._read_batch()
        if not body and time.monotonic() - self._last_post < self.heartbeat:
            return True
        resp = self._post(http, body)
        durable = int(resp.json()["durable_seq"])
        self._last_post = time.monotonic()
        if body:
            self._advance(durable, body)
            if durable < last:
                raise _Retry(f"server holds seq {durable} < {last}", 0.2)
        return not body or len(body) < self.batch_bytes and self._caught_up()

    def _caught_up(self) -> bool:
        try:
            return self.acked_offset >= os.path.getsize(self.segment)
        except FileNotFoundError:
            return True

    def _post(self, http: Any, body: bytes) -> Any:
        import httpx

        try:
            resp = http.post(f"/api/runs/{self.run_id}/records", content=body,
                             headers={"Content-Type": MEDIA_TYPE})
        except httpx.TransportError as exc:  # refused, reset, timed out: the network blinked
            # Only a connection that cannot be made is "unreachable": a server slow to answer
            # (a read timeout) or one that drops a connection is there, and keeps the timeout.
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
            else:
                self.unreachable_since = None
            raise _Retry(f"{type(exc).__name__}: {exc}", 0.0) from None
        self.unreachable_since = None
        if resp.status_code in _RETRY_STATUS:
            try:
                after = float(resp.headers.get("Retry-After", 0))
            except ValueError:
                after = 0.0
            raise _Retry(f"HTTP {resp.status_code}", min(after, self.max_backoff))
        if resp.status_code == 413 and self.batch_bytes > (64 << 10):
            self.batch_bytes //= 2
            raise _Retry("batch too large; halving it", 0.0)
        _raise_for(resp)
        return resp


class _Retry(Exception):
    def __init__(self, why: str, after: float) -> None:
        super().__init__(why)
        self.after = after


def _finish_orphan(path: Path) -> None:
    """Cut a torn tail and, if the run never finished, append a ``crashed`` status record."""
    end, last_seq, last_kind = 0, -1, b""
    for _, e, payload in iter_file_frames(path):  # in pieces: an outbox can hold many GB
        end, last_seq, last_kind = e, _seq_of(payload), payload[:16]
    with open(path, "r+b") as f:
        f.truncate(end)
        if last_seq >= 0 and not last_kind.startswith(b'{"k":"status"'):
            f.seek(end)
            f.write(encode({"k": "status", "seq": last_seq + 1, "time": time.time(),
                            "status": "crashed",
                            "error": "the process ended without finishing the run (sent "
                                     "from its local write-ahead log by assay sync)"}))
        f.flush()
        os.fsync(f.fileno())


def sync_outbox(data_dir: Path, server: str, token: str | None = None, *,
                timeout: float = 60.0, run_id: str | None = None) -> dict[str, bool]:
    """Ship every orphaned remote segment under ``<dir>/outbox`` (writer gone) to ``server``.

    A segment whose run never finished gets a ``crashed`` status record first (its writer is
    dead). Returns ``{segment path: fully acknowledged}``; acknowledged segments are deleted.
    ``run_id`` ships only that run's segments (``init(resume=..., server=...)`` does, first).
    """
    out: dict[str, bool] = {}
    for path in sorted((Path(data_dir) / "outbox").glob(f"{run_id or '*'}/*.wal")):
        fd = try_lock_segment(path)
        if fd is None:
            continue  # its run is still live in some process: its own sender ships it
        try:
            _finish_orphan(path)
            sender = RemoteSender(server, path.parent.name, path, token=token)
            out[str(path)] = sender.close(timeout)
        finally:
            os.close(fd)
    return out


def wait_ingested(sender: RemoteSender, run_id: str, deadline: float) -> dict[str, Any] | None:
    """As a local finish waits for its ingest: return the run as the server shows it once
    its store holds every record the sender had acknowledged (the run shows
    ``ingested_seq`` at least that), so the run is queryable there; or warn at ``deadline``
    (monotonic seconds) and return None."""
    import httpx

    client = RemoteClient(sender.server, sender.token)
    try:
        while True:
            try:
                run = client.get_run(run_id)
                if int(run.get("ingested_seq", -1)) >= sender.acked_seq:
                    return run
            except NotFoundError:
                pass  # not ingested at all yet
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    except (AssayError, httpx.HTTPError, ValueError) as exc:  # only the wait failed: the
        log.warning("assay: could not check that %s ingested run %s: %s",  # records are
                    sender.server, run_id, exc)  # safe on the server
        return None
    finally:
        client.close()
    log.warning("assay: run %s is finished and durable on %s, but not yet queryable there: "
                "the server's ingester has not caught up", run_id, sender.server)
    return None
