"""``GET /api/stream``: live deltas as Server-Sent Events.

One hub per server polls the runs table (through the cached :class:`~.query.RunsIndex`, so an
unchanged table costs a version check) and wakes the clients whose subscription covers a run
that changed. Each client then sends at most one message per ``min_interval``: everything new
since its cursor (new points per run and key, status changes), read from the store. Nothing
is queued per client: a client's state is its cursor and a wake flag, so a slow consumer
(its socket applies back-pressure) simply gets fewer, larger messages; ``max_points`` caps a
message, and the rest follows in the next one.

Events:

- ``snapshot`` (first): each subscribed run's status, ``ingested_seq`` and last step;
- ``delta``: ``{"runs": {run_id: {"status", "ingested_seq", "last_step", "points":
  {key: {"step", "value", "time"}}}}, "more": bool}``;
- ``rewind``: ``{"runs": {run_id: {"from_step", "seq"}}}``, sent right before the delta
  that moves a run's cursor past a resume that rewound it (``assay.init(resume=...,
  resume_from_step=k)``, or an agent relaunching a trial from step 0: see
  :mod:`assay.store.rewind`). The client drops every point of that run it holds at a step
  ``>= from_step`` (``sys/`` keys excepted: system metrics are never rewound), then applies
  the delta, whose points are the new attempt's; ``from_step`` is the lowest of the run's
  rewinds in the delta's range and ``seq`` the last of their run records;
- comments (``: keep-alive``) every 15 s of silence; the token is re-checked then, and a
  revoked or expired one ends the stream with an ``error`` event.

Each event's ``id`` is a cursor (per run, the last metric record delivered); a client that
reconnects with ``Last-Event-ID`` (browsers do) or ``?since=`` continues without gaps or
repeats (runs missing from its cursor are new since: they come from their first point).
Without a cursor the stream starts at "now" (load history with ``GET .../history`` first).
A cursor is compressed JSON (``z...``); one still longer than :data:`INLINE_MAX` characters
(a subscription of more than about a thousand runs) stays in the server's memory and the id
is a token for it (``@...``: the last few per connection are kept, within a memory bound). A
token the server no longer holds (it restarted, or evicted the cursor) is answered with a
``reset`` event, ``{"error", "hint"}``, before the snapshot: the stream then starts at "now",
and the client re-reads history for the gap instead of missing it silently.
A message holds whole stored chunks (one per key and ingest pass), so ``max_points`` is
exceeded only by a single chunk larger than it.

Rewinds cost a ``stat`` of the audit trail per run that moved in a poll: the ingester
writes each rewind there (``run.rewind``) after cutting the store and before appending the
new attempt's points or moving the run's row, so a range read after either holds the entry.
A rewind is declared by an attach's run record, or (``resume_from_step="auto"``) by a
``rewind`` record at the attach's first ``log()``, which may come in a later ingest pass:
so every range is checked, not only one that crosses an attach. The trail is read
incrementally (only what it grew by; the first read takes it whole, once per server) and
its rewinds are kept in memory (one small tuple per rewind). Agents' decisions and
overrides are not streamed: pages poll ``/api/decisions`` and ``/api/fleet`` for them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import UserInputError
from ..store.records import validate_name
from .auth import TokenStore, Viewer
from .downsample import load_curves
from .http import ERROR_RESPONSES, jsonable
from .query import RunsIndex
from .runs import RUN_ID_PATTERN
from .store_ext import ServerStore

__all__ = ["StreamHub", "router"]

log = logging.getLogger("assay.api.stream")

HEARTBEAT = 15.0
AUTH_CHECK_S = 2.0  # seconds between checks of a streaming token (revocation, expiry)
_MAX_CURSOR = 16_384  # the longest id accepted back (h11 caps a whole request head at 16 KiB)
INLINE_MAX = 8_192  # longer cursors are held by the server, the id is a token for them
SPILL_BYTES = 64 << 20  # memory for held cursors, least recently used dropped first
SPILL_PER_CLIENT = 8  # held cursors kept per connection (a client resumes from a recent one)
_TOKEN_RE = re.compile(r"^@[A-Za-z0-9_-]{8,64}$")
_REWIND_MARK = b"run.rewind"  # the audit action of a rewind (store.provenance.Finalizer)
_READ_BLOCK = 1 << 20

router = APIRouter(prefix="/api", tags=["stream"], responses=ERROR_RESPONSES)


@dataclass(eq=False)
class _Client:
    runs: frozenset[str] | None
    project: str | None
    keys: list[str] | None
    cursor: dict[str, int]
    max_points: int
    resumed: bool = False  # a cursor was given: runs missing from it are new since then
    held: deque[str] = field(default_factory=deque)  # tokens of this client's held cursors
    status: dict[str, str] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def covers(self, run_id: str, project: str | None) -> bool:
        if self.runs is not None:
            return run_id in self.runs
        return self.project is None or project == self.project


class _HeldCursors:
    """Cursors too long for an event id, under random tokens (thread-safe, LRU, bounded)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, blob: bytes) -> str:
        token = "@" + secrets.token_urlsafe(18)
        with self._lock:
            self._d[token] = blob
            self._size += len(blob)
            while self._size > self.max_bytes and len(self._d) > 1:
                self._size -= len(self._d.popitem(last=False)[1])
        return token

    def get(self, token: str) -> bytes | None:
        with self._lock:
            blob = self._d.get(token)
            if blob is not None:
                self._d.move_to_end(token)
            return blob

    def drop(self, token: str) -> None:
        with self._lock:
            blob = self._d.pop(token, None)
            if blob is not None:
                self._size -= len(blob)


class _Rewinds:
    """The rewinds the ingester applied, from its ``run.rewind`` audit entries.

    Read on demand, from where the last read stopped (complete lines only: an entry being
    appended is taken next time); a trail replaced or cut short is read again from its start.
    Thread-safe (client deltas run in the thread pool).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._ino: int | None = None
        self._by_run: dict[str, list[tuple[int, int]]] = {}  # run -> [(seq, step)]
        self._lock = threading.Lock()

    def between(self, run_id: str, after: int, upto: int) -> list[tuple[int, int]]:
        """``(seq, step)`` of each rewind of ``run_id`` whose run record has a seq in
        ``(after, upto]``, in the order applied."""
        with self._lock:
            self._catch_up()
            return [r for r in self._by_run.get(run_id, ()) if after < r[0] <= upto]

    def _catch_up(self) -> None:
        try:
            st = os.stat(self.path)
            if st.st_ino == self._ino and st.st_size == self._offset:
                return  # nothing new (the common case: a stat, no open)
            with open(self.path, "rb") as f:
                self._read(f)
        except FileNotFoundError:
            return  # no audit entry yet: no rewind either

    def _read(self, f: BinaryIO) -> None:
        st = os.fstat(f.fileno())
        if st.st_ino != self._ino or st.st_size < self._offset:
            self._ino, self._offset = st.st_ino, 0
            self._by_run.clear()
        if st.st_size == self._offset:
            return
        f.seek(self._offset)
        rest = b""
        while block := f.read(_READ_BLOCK):
            data = rest + block
            end = data.rfind(b"\n") + 1
            self._scan(data, end)
            self._offset += end
            rest = data[end:]

    def _scan(self, data: bytes, end: int) -> None:
        i = data.find(_REWIND_MARK, 0, end)
        while i >= 0:  # a substring search first: most entries are not rewinds
            start = data.rfind(b"\n", 0, i) + 1
            stop = data.find(b"\n", i)
            self._add(data[start:stop])
            i = data.find(_REWIND_MARK, stop, end)

    def _add(self, line: bytes) -> None:
        try:
            row = json.loads(line)
            p = json.loads(row["payload_json"])
            rid, d = p["target"].removeprefix("run:"), p["details"]
            seq, step = d["seq"], d["step"]
            if row["kind"] != "audit" or p["action"] != "run.rewind" \
                    or type(seq) is not int or type(step) is not int:
                return
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not an entry of the ingester's (a reason that quotes the action name)
        have = self._by_run.setdefault(rid, [])
        if (seq, step) not in have:  # a replay after a crash repeats the entry
            have.append((seq, step))


class StreamHub:
    """Polls for changed runs while clients listen, and wakes the clients concerned."""

    def __init__(self, index: RunsIndex, store: ServerStore, poll: float = 0.5,
                 audit_path: Path | None = None) -> None:
        """``audit_path``: the data directory's audit trail (default: the store's, see
        :class:`~assay.store.audit.AuditTrail`), where the ingester records rewinds."""
        self.index, self.store, self.poll = index, store, poll
        self.held = _HeldCursors(SPILL_BYTES)
        self.rewinds = _Rewinds(audit_path or Path(store.root) / "audit" / "audit.jsonl")
        self.clients: set[_Client] = set()
        self._task: asyncio.Task[None] | None = None
        self._generation = 0

    def add(self, client: _Client) -> None:
        self.clients.add(client)
        if self._task is None or self._task.done():
            self._generation = self.index.generation
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def remove(self, client: _Client) -> None:
        self.clients.discard(client)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _loop(self) -> None:
        while self.clients:
            await asyncio.sleep(self.poll)
            try:
                await run_in_threadpool(self.index.refresh)
            except Exception:
                log.debug("stream poll failed; retrying", exc_info=True)
                continue
            gen = self.index.generation
            changed = self.index.changed_since(self._generation)
            self._generation = gen
            if not changed:
                continue
            for c in list(self.clients):
                for rid in changed:
                    d = self.index.detail(rid)
                    if c.covers(rid, d["project"] if d else None):
                        c.wake.set()
                        break

    # -- cursors --------------------------------------------------------------------------
    def cursor_id(self, c: _Client) -> str:
        """The event id for ``c``'s cursor: the cursor itself, or a token for a held one."""
        text = _encode_cursor(c.cursor)
        if len(text) <= INLINE_MAX:
            return text
        token = self.held.put(text.encode())
        c.held.append(token)
        while len(c.held) > SPILL_PER_CLIENT:
            self.held.drop(c.held.popleft())
        return token

    def resume(self, text: str | None) -> tuple[dict[str, int], bool]:
        """The cursor an id stands for, and whether it was a token this server lost.

        Raises:
            UserInputError: a malformed id.
        """
        if text and text.startswith("@"):
            if not _TOKEN_RE.match(text):
                raise UserInputError("malformed stream cursor",
                                     hint="pass the id of the last event received, unchanged")
            blob = self.held.get(text)
            if blob is None:
                return {}, True
            # The server made this one: no cap on its size (50k runs exceed a client's).
            return _decode_cursor(blob.decode(), limit=None), False
        return _decode_cursor(text), False

    # -- building messages ----------------------------------------------------------------
    def _subscribed(self, c: _Client) -> list[dict[str, Any]]:
        frame = self.index.refresh()
        if c.runs is not None:
            ids = list(c.runs)
        elif frame.height and "run_id" in frame.columns:
            f = frame if c.project is None else frame.filter(frame["project"] == c.project)
            ids = f["run_id"].to_list()
        else:
            ids = []
        return [d for d in (self.index.detail(r) for r in ids) if d is not None]

    def snapshot(self, c: _Client) -> dict[str, Any]:
        runs = {}
        for d in self._subscribed(c):
            rid = d["run_id"]
            c.cursor.setdefault(rid, -1 if c.resumed else d["ingested_seq"])
            c.status[rid] = d["status"]
            runs[rid] = {"project": d["project"], "name": d["name"], "status": d["status"],
                         "ingested_seq": d["ingested_seq"], "last_step": d["last_step"]}
        return {"runs": runs}

    def delta(self, c: _Client) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        """What is new for ``c`` since its cursor (which moves): the delta, whether more is
        waiting, and the ``rewind`` event's runs (to be sent first; empty when none)."""
        out: dict[str, Any] = {}
        rewound: dict[str, Any] = {}
        budget, more = c.max_points, False
        for d in self._subscribed(c):
            rid = d["run_id"]
            after = c.cursor.get(rid, -1)
            status_changed = c.status.get(rid) != d["status"]
            if d["ingested_seq"] <= after and not status_changed:
                continue
            entry: dict[str, Any] = {"status": d["status"], "ingested_seq": d["ingested_seq"],
                                     "last_step": d["last_step"]}
            if rid not in c.status:
                entry.update(project=d["project"], name=d["name"])
            c.status[rid] = d["status"]
            if d["ingested_seq"] > after and budget > 0:
                points, last_seq, cut = self._points(rid, after, c.keys, budget)
                if points:
                    entry["points"] = points
                    budget -= sum(len(p["step"]) for p in points.values())
                # Chunks up to a run's ingested_seq commit before its row does, so once all
                # chunks are read the cursor may move to ingested_seq (non-metric records).
                c.cursor[rid] = last_seq if cut else max(last_seq, d["ingested_seq"])
                more = more or cut
                rw = self._rewound(rid, after, c.cursor[rid])
                if rw:
                    rewound[rid] = rw
            elif d["ingested_seq"] > after:
                more = True
            out[rid] = entry
        return ({"runs": out, "more": more} if out else {}), more, rewound

    def _rewound(self, run_id: str, after: int, upto: int) -> dict[str, int] | None:
        """The ``rewind`` entry for a run whose cursor moves from ``after`` to ``upto``.

        Called after the run's row and chunks were read: a rewind at or below ``upto`` was
        audited before either (the ingester's order), and its cut was made before them, so
        the points read hold none it supersedes.
        """
        rws = self.rewinds.between(run_id, after, upto)
        if not rws:
            return None
        return {"from_step": min(s for _, s in rws), "seq": max(q for q, _ in rws)}

    def _points(self, run_id: str, after: int, keys: list[str] | None,
                budget: int) -> tuple[dict[str, Any], int, bool]:
        chunks = self.store.metric_chunks_after(run_id, after, keys)
        if chunks.num_rows == 0:
            return {}, after, False
        seqs = sorted(set(chunks.column("seq").to_pylist()))
        sizes: dict[int, int] = {}
        for s, steps in zip(chunks.column("seq").to_pylist(),
                            chunks.column("step").to_pylist(), strict=True):
            sizes[s] = sizes.get(s, 0) + len(steps)
        take: list[int] = []
        used = 0
        for s in seqs:  # whole records only: the cursor is a seq
            if take and used + sizes[s] > budget:
                break
            take.append(s)
            used += sizes[s]
        cut = len(take) < len(seqs)
        if cut:
            import pyarrow.compute as pc

            chunks = chunks.filter(pc.less_equal(chunks.column("seq"), take[-1]))
        curves = load_curves(chunks)
        pts = {k: {"step": c.step.tolist(), "value": c.value.tolist(), "time": c.time.tolist()}
               for k, c in curves.items()}
        return pts, take[-1], cut


def _encode_cursor(cursor: dict[str, int]) -> str:
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return "z" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def _decode_cursor(text: str | None, limit: int | None = 64 * _MAX_CURSOR) -> dict[str, int]:
    """A cursor from an event id; ``limit`` caps what a client's id may decompress to."""
    if not text:
        return {}
    try:
        packed = text.startswith("z")  # an uncompressed (older) id starts with "e" ({")
        body = text[1:] if packed else text
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if packed:
            d = zlib.decompressobj()
            raw = d.decompress(raw, limit or 0)
            if d.unconsumed_tail:  # past the cap: refuse rather than read a cut cursor
                raise ValueError
        d = json.loads(raw)
        if not isinstance(d, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in d.items()):
            raise ValueError
        return d
    except (ValueError, UnicodeDecodeError, zlib.error):
        raise UserInputError("malformed stream cursor",
                             hint="pass the id of the last event received, unchanged") from None


def _sse(event: str, data: dict[str, Any], cid: str | None) -> str:
    try:
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        payload = json.dumps(jsonable(data), separators=(",", ":"), allow_nan=False)
    head = f"event: {event}\n"
    if cid is not None:
        head += f"id: {cid}\n"
    return f"{head}data: {payload}\n\n"


@router.get("/stream", summary="Live deltas (Server-Sent Events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "an event stream"}})
async def stream(
    request: Request,
    who: Viewer,
    run: Annotated[list[str], Query(description="runs to follow (default: all, or the "
                                                "project's)")] = [],  # noqa: B006
    project: Annotated[str | None, Query(max_length=128)] = None,
    key: Annotated[list[str], Query(description="metric keys (default: all)")] = [],  # noqa: B006
    since: Annotated[str | None, Query(max_length=_MAX_CURSOR)] = None,
    min_interval: Annotated[float, Query(ge=0.05, le=60.0)] = 1.0,
    max_points: Annotated[int, Query(ge=100, le=200_000)] = 20_000,
    last_event_id: Annotated[str | None, Header(max_length=_MAX_CURSOR)] = None,
) -> StreamingResponse:
    """Follow runs: a snapshot, then at most one delta per ``min_interval`` seconds."""
    for r in run:
        if not re.match(RUN_ID_PATTERN, r):
            raise UserInputError(f"invalid run id {r!r}", hint="run ids are letters and digits")
    if project is not None:
        validate_name("project", project)
    hub: StreamHub = request.app.state.hub
    tokens: TokenStore = request.app.state.tokens
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    cursor, lost = hub.resume(last_event_id or since)
    client = _Client(runs=frozenset(run) if run else None, project=project,
                     keys=list(key) or None, cursor=cursor, max_points=max_points,
                     resumed=bool(last_event_id or since) and not lost)

    async def events() -> AsyncIterator[str]:
        hub.add(client)
        try:
            if lost:
                yield _sse("reset", {
                    "error": "this stream cursor is no longer held by the server (it restarted "
                             "or dropped the cursor); the stream restarts at now",
                    "hint": "re-read each run's history (GET /api/runs/{id}/history) to fill "
                            "the gap"}, None)
            snap = await run_in_threadpool(hub.snapshot, client)
            yield _sse("snapshot", snap, hub.cursor_id(client))
            last = checked = time.monotonic()
            client.wake.set()  # a resumed cursor may be behind already: catch up at once
            while True:
                try:
                    await asyncio.wait_for(client.wake.wait(), timeout=HEARTBEAT)
                    woke = True
                except TimeoutError:
                    woke = False
                # The token is checked again at least every AUTH_CHECK_S, busy or not (a
                # stream of frequent deltas never times out): a revoked or expired token
                # stops receiving within seconds. A check is a stat and a dict lookup.
                if not woke or time.monotonic() - checked >= AUTH_CHECK_S:
                    checked = time.monotonic()
                    if tokens.authenticate(token) is None:
                        yield _sse("error", {"error": tokens.why_invalid(token),
                                             "hint": "reconnect with a valid token"}, None)
                        return
                if not woke:
                    yield ": keep-alive\n\n"
                    continue
                wait = min_interval - (time.monotonic() - last)
                if wait > 0:
                    await asyncio.sleep(wait)  # coalesce: more changes, one message
                client.wake.clear()
                data, more, rewound = await run_in_threadpool(hub.delta, client)
                if rewound:  # no id: the delta right after carries the cursor past it
                    yield _sse("rewind", {"runs": rewound}, None)
                if data:
                    yield _sse("delta", data, hub.cursor_id(client))
                last = time.monotonic()
                if more:
                    client.wake.set()
        finally:
            hub.remove(client)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
