"""Remote reads: the runs, run records and metric histories of an ``assay server`` over HTTP.

:class:`RemoteReader` answers what ``assay.Api(dir)`` answers for the server's data directory,
in the same shapes: :meth:`~RemoteReader.runs` is the same DataFrame (columns, dtypes, order,
``filters``), :meth:`~RemoteReader.run` the same :class:`~assay.store.records.RunRecord` and
:meth:`~RemoteReader.history` every point of every curve. The frames are built by the code
the local :class:`~assay.sdk.api.Api` uses (``run_row``, ``runs_frame``, ``filter_runs`` and
``history_frame``); only the transport differs.

- ``GET /api/runs`` is paged (``limit=1000``, ``next_cursor`` until None). Each row's
  ``summary_stats`` (asked for with ``stats=true``, which a server lists as its
  ``runs_stats`` feature) fill the ``summary_min.*``/``summary_max.*`` columns; a server too
  old to serve them gives a frame without those columns.
- ``GET /api/runs/{id}/history`` downsamples a key's curve above ``max_points`` (its
  ``total`` then exceeds ``returned``). Every point is still read: a first, tiny request
  counts each key's points; keys that fit are fetched together, at most
  ``points_per_request`` points per request; a longer curve is split into step windows
  (halves, recursively) until each window comes back whole.
- The server writes NaN and infinities as the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"``. Where a number is certain (metric values, summary statistics) they are
  read back as floats; in ``config`` and in values set with ``run.summary[...]`` such a
  string is left as it is (a config may hold the text ``"NaN"``), so a non-finite float there
  reads as its string. An environment variable the token may not see is ``None``, as the
  server sends it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import (
    AssayError,
    NotFoundError,
    PermissionDeniedError,
    ServerUnreachableError,
    UserInputError,
)
from ..store.canonical import NON_FINITE_STRINGS
from ..store.history import history_frame
from ..store.records import RunRecord, RunStatus, validate_name
from .frames import check_run_id_arg, filter_runs, history_keys, run_row, runs_frame
from .remote import _auth_headers, _raise_for

__all__ = ["DEFAULT_POINTS_PER_REQUEST", "RemoteReader"]

#: Points one history request may bring back (the server's ``max_points`` limit).
DEFAULT_POINTS_PER_REQUEST = 100_000
_MIN_POINTS = 3  # the server's smallest max_points
_PAGE = 1000  # runs per GET /api/runs page (the server's largest)
_AUDIT_PAGE = 1000  # entries per GET /api/audit page (the server's largest)
_KEYS_URL_BUDGET = 6000  # characters of key=... parameters in one request URL
_RUN_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # what the server's routes accept (RUN_ID_PATTERN)
_TOKEN_HINT = ("pass token= (CLI --token; or set ASSAY_TOKEN) to a token this server knows; a viewer's "
               "token reads: `assay token create NAME --role viewer` on the server")
_RUNS_HINT = "list the server's runs with .runs(); check the run id and the server URL"

_CHUNKS_SCHEMA = pa.schema([("key", pa.string()), ("seq", pa.int64()),
                            ("step", pa.list_(pa.int64())), ("value", pa.list_(pa.float64())),
                            ("time", pa.list_(pa.float64()))])


@dataclasses.dataclass(frozen=True)
class _Series:
    """One key's points as one history answer gave them (maybe downsampled)."""

    total: int
    step: list[int]
    value: list[float | None]
    time: list[float | None]

    @property
    def whole(self) -> bool:
        return len(self.step) >= self.total


class RemoteReader:
    """Read runs, run records and metric histories from an ``assay server``.

    Args:
        server: The server's URL (``http://host:8000``, what ``assay server`` prints).
        token: A bearer token the server knows (a viewer's is enough); None sends none.
        points_per_request: Most points one history request brings back (3 to 100,000);
            longer curves are read in several requests.
        timeout: Seconds to wait for the server to connect and to answer one request.

    Raises:
        UserInputError: ``server`` is not an http(s) URL, or ``points_per_request`` is out of
            range.
    """

    def __init__(self, server: str, token: str | None = None, *,
                 points_per_request: int = DEFAULT_POINTS_PER_REQUEST,
                 timeout: float = 30.0, arrow: bool | None = None) -> None:
        import httpx

        if not isinstance(server, str) or not re.match(r"https?://[^/\s]", server.strip()):
            raise UserInputError(f"server must be an http(s) URL, got {server!r}",
                                 hint="e.g. 'http://127.0.0.1:8000' (what `assay server` "
                                      "prints)")
        if (isinstance(points_per_request, bool) or not isinstance(points_per_request, int)
                or not _MIN_POINTS <= points_per_request <= DEFAULT_POINTS_PER_REQUEST):
            raise UserInputError(
                f"points_per_request must be an integer from {_MIN_POINTS} to "
                f"{DEFAULT_POINTS_PER_REQUEST:_}, got {points_per_request!r}",
                hint=f"the server returns at most {DEFAULT_POINTS_PER_REQUEST:_} points per "
                     "key and request")
        self.server = server.strip().rstrip("/")
        self.points_per_request = points_per_request
        self._arrow = arrow  # None: as the server's features say (asked once)
        self._server_features: frozenset[str] | None = None
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.server, headers=_auth_headers(token),
                                  timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reads --------------------------------------------------------------------------------
    def runs(self, project: str | None = None,
             filters: Mapping[str, Any] | pl.Expr | None = None) -> pl.DataFrame:
        """One row per run, as :meth:`assay.sdk.api.Api.runs` gives it: run columns, then
        ``config.*``, ``summary.*``, ``summary_min.*`` and ``summary_max.*`` columns, sorted by
        ``created_at``; ``filters`` (an expression or column: value) apply as there."""
        try:
            rows = [_listed_row(item) for item in self.run_items(project)]
        except (KeyError, TypeError, AttributeError) as exc:
            raise _odd_answer(self.server, "/api/runs") from exc
        return filter_runs(runs_frame(rows), filters)

    def run_items(self, project: str | None = None) -> Iterator[dict[str, Any]]:
        """The runs as ``GET /api/runs`` lists them (JSON objects: ``config`` and ``summary``
        as logged, not cast to a frame's column types), oldest first, every page."""
        if project is not None and not isinstance(project, str):
            validate_name("project", project)  # raises UserInputError
        # A name no run can have (init validates it) lists nothing, as in a data directory.
        if project is not None and not _valid_name(project):
            return
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": _PAGE, "sort": "created_at", "order": "asc"}
            if "runs_stats" in self._features():  # min/max per key: asked for, not default
                params["stats"] = "true"
            if project is not None:
                params["project"] = project
            if cursor is not None:
                params["cursor"] = cursor
            page = self._get("/api/runs", params)
            items = page.get("runs") if isinstance(page, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise _odd_answer(self.server, "/api/runs")
            yield from items
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def run(self, run_id: str) -> RunRecord:
        """The stored record of one run (config, summary, status, env, git).

        Raises:
            NotFoundError: the server has no such run.
        """
        self._check_run(run_id)
        body = self._get(f"/api/runs/{run_id}", not_found_hint=_RUNS_HINT)
        return _record(body, self.server)

    def projects(self) -> list[str]:
        """The projects that have runs (``GET /api/projects``), sorted."""
        body = self._get("/api/projects")
        return sorted(str(p["project"]) for p in body.get("projects") or []
                      if isinstance(p, dict) and p.get("project") is not None)

    def audit_log(self, target: str | None = None,
                  actor: str | None = None) -> list[dict[str, Any]]:
        """The server's audit trail, oldest first (``GET /api/audit``, a supervisor's token),
        in pages; an entry appended while paging is listed once."""
        params: dict[str, Any] = {k: v for k, v in (("target", target), ("actor", actor))
                                  if v is not None}
        seen: dict[int, dict[str, Any]] = {}
        offset = 0
        while True:
            try:
                body = self._get("/api/audit", {**params, "limit": _AUDIT_PAGE,
                                                "offset": offset})
            except PermissionDeniedError as exc:
                raise PermissionDeniedError(
                    exc.message, hint="the audit trail is a supervisor's to read: pass a "
                                      "supervisor's token (token= or $ASSAY_TOKEN)") from None
            page = body.get("entries") or []
            for e in page:
                seen.setdefault(int(e["seq"]), e)
            offset += len(page)
            if not page or offset >= int(body.get("total", 0)):
                break
        return [seen[k] for k in sorted(seen)]

    def run_positions(self, run_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """``(attach, ingested_seq, last_step)`` of each run of ``run_ids`` the server
        knows, as :meth:`assay.store.base.Store.run_positions`: one request per 100 runs
        (a server older than ``run_positions`` is asked one run at a time)."""
        ids = list(dict.fromkeys(run_ids))
        for rid in ids:
            check_run_id_arg(rid)
        ids = [r for r in ids if _RUN_ID.fullmatch(r)]  # others no run has
        out: dict[str, tuple[int, int, int]] = {}
        if "run_positions" not in self._features():
            for rid in ids:
                try:
                    r = self.run(rid)
                except NotFoundError:
                    continue
                out[rid] = (r.attach, r.ingested_seq, r.last_step)
            return out
        for i in range(0, len(ids), 100):  # 100 ids of up to 64 characters: a 7 kB URL
            body = self._get("/api/runs/positions", {"id": ids[i:i + 100]})
            runs = body.get("runs")
            if not isinstance(runs, dict):
                raise _odd_answer(self.server, "/api/runs/positions")
            for rid, p in runs.items():
                try:
                    out[str(rid)] = (int(p["attach"]), int(p["ingested_seq"]),
                                     int(p["last_step"]))
                except (TypeError, KeyError, ValueError):
                    raise _odd_answer(self.server, "/api/runs/positions") from None
        return out

    def history(self, run_id: str, keys: Sequence[str] | str | None = None) -> pl.DataFrame:
        """Every point of a run (of ``keys`` only, if given): columns run_id, key, step,
        value, time (UTC), sorted by key then step, as :meth:`assay.sdk.api.Api.history`.

        Raises:
            NotFoundError: the server has no such run.
            UserInputError: ``keys`` is neither a key nor a list of keys.
            AssayError: one step of a key holds more points than one request may return.
        """
        self._check_run(run_id)
        wanted = history_keys(keys)
        if wanted is not None and not wanted:
            self._get(f"/api/runs/{run_id}/keys", not_found_hint=_RUNS_HINT)  # it must exist
            return history_frame(run_id, _CHUNKS_SCHEMA.empty_table())
        if self._uses_arrow():
            tables: list[pa.Table] = []
            for batch in [None] if wanted is None else _url_batches(wanted):
                self._chunks(run_id, batch, None, None, tables)
            # Windows are disjoint in steps (the server cuts chunks to them): together they
            # hold each point once, and a step's rewrites stay ordered by seq.
            chunks = pa.concat_tables(tables) if tables else _CHUNKS_SCHEMA.empty_table()
            return history_frame(run_id, chunks)
        pieces: list[tuple[str, _Series]] = []
        for batch in [None] if wanted is None else _url_batches(wanted):
            counts = self._history(run_id, batch, _MIN_POINTS, time=False)
            fits = [k for k, s in counts.items() if s.total <= self.points_per_request]
            for group in _packed(fits, counts, self.points_per_request):
                for k, s in self._history(run_id, group, self.points_per_request).items():
                    # A live run may have grown since it was counted.
                    pieces += (self._windows(run_id, k, None, None, s) if not s.whole
                               else [(k, s)])
            for k, s in counts.items():
                if s.total > self.points_per_request:
                    pieces += self._windows(run_id, k, None, None, s)
        table = pa.table({
            "key": [k for k, _ in pieces],
            "seq": list(range(len(pieces))),
            "step": [s.step for _, s in pieces],
            "value": [s.value for _, s in pieces],
            "time": [s.time for _, s in pieces],
        }, schema=_CHUNKS_SCHEMA)
        return history_frame(run_id, table)

    # -- history as Arrow chunks ---------------------------------------------------------------
    def _features(self) -> frozenset[str]:
        """What the server says it serves (``GET /api/health``), asked once."""
        if self._server_features is None:
            feats = self._get("/api/health").get("features")
            self._server_features = frozenset(
                f for f in (feats if isinstance(feats, list) else []) if isinstance(f, str))
        return self._server_features

    def _uses_arrow(self) -> bool:
        """Whether the server serves raw metric chunks (``GET /api/runs/{id}/chunks``)."""
        if self._arrow is None:
            self._arrow = "history_arrow" in self._features()
        return self._arrow

    def metric_chunks(self, run_id: str, keys: Sequence[str] | None = None, *,
                      seq_after: int | None = None) -> pa.Table:
        """The run's stored metric chunks (columns key, seq, step, value, time; one row per
        chunk, as :meth:`assay.store.base.Store.metric_chunks` gives them), of ``keys`` if
        given; with ``seq_after``, only those stored after it (a server older than
        ``chunks_after`` sends them all and they are filtered here).

        Raises:
            NotFoundError: the server has no such run.
            UserInputError: the server is too old to serve chunks (``history_arrow``).
        """
        self._check_run(run_id)
        if not self._uses_arrow():
            raise UserInputError(f"the assay server at {self.server} is too old to serve "
                                 "metric chunks: it lacks the 'history_arrow' feature",
                                 hint="upgrade the server to this SDK's version")
        wanted = None if keys is None else list(keys)
        if wanted is not None and not wanted:
            return _CHUNKS_SCHEMA.empty_table()
        after = seq_after if "chunks_after" in self._features() else None
        tables: list[pa.Table] = []
        for batch in [None] if wanted is None else _url_batches(wanted):
            self._chunks(run_id, batch, None, None, tables, seq_after=after)
        table = pa.concat_tables(tables) if tables else _CHUNKS_SCHEMA.empty_table()
        if seq_after is not None and after is None:
            table = table.filter(pc.greater(table["seq"], int(seq_after)))
        return table

    def _chunks(self, run_id: str, keys: list[str] | None, lo: int | None, hi: int | None,
                out: list[pa.Table], *, seq_after: int | None = None,
                seq_max: int | None = None) -> None:
        """Append the run's metric chunks holding steps in ``[lo, hi]`` (stored after
        ``seq_after`` and not after ``seq_max``, if given) to ``out``, halving the window
        while the server says it holds more points than one answer may. The windows read the
        chunks the first answer counted (its ``seq_max``): one stored meanwhile would come cut
        to the later windows only, and a reader going on from the highest seq read would
        never see its part in the earlier ones."""
        params: dict[str, Any] = {"key": keys} if keys else {}
        if seq_after is not None:
            params["seq_after"] = seq_after
        if seq_max is not None:
            params["seq_max"] = seq_max
        if lo is not None:
            params["step_min"] = lo
        if hi is not None:
            params["step_max"] = hi
        path = f"/api/runs/{run_id}/chunks"
        resp = self._send(path, params)
        if resp.status_code == 413:
            body = resp.json()
            span = body.get("steps") or [None, None]
            a, b = span  # the first and last step holding points in [lo, hi]
            if not isinstance(a, int) or not isinstance(b, int) or a >= b:
                raise AssayError(
                    f"run {run_id}: one step of its curves holds more points "
                    f"({body.get('points')}) than the server answers at once",
                    hint="ask for fewer keys at a time (keys=[...])")
            mid = a + (b - a) // 2
            if seq_max is None and isinstance(body.get("seq_max"), int):
                seq_max = body["seq_max"]  # an older server sends none: windows as before
            self._chunks(run_id, keys, a, mid, out, seq_after=seq_after, seq_max=seq_max)
            self._chunks(run_id, keys, mid + 1, b, out, seq_after=seq_after, seq_max=seq_max)
            return
        try:
            _raise_for(resp)
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(exc.message, hint=_TOKEN_HINT) from None
        except NotFoundError as exc:
            raise NotFoundError(exc.message, hint=_RUNS_HINT) from None
        try:
            table = pa.ipc.open_stream(resp.content).read_all()
        except pa.ArrowInvalid:
            raise _odd_answer(self.server, path) from None
        out.append(table.select(_CHUNKS_SCHEMA.names).cast(_CHUNKS_SCHEMA))

    # -- history windows ----------------------------------------------------------------------
    def _windows(self, run_id: str, key: str, lo: int | None, hi: int | None,
                 seen: _Series) -> list[tuple[str, _Series]]:
        """Every point of ``key`` at steps ``lo``..``hi`` (None: unbounded), of which ``seen``
        was a downsampled view: split the steps it spans in halves until each comes whole.

        Downsampling keeps a window's first and last point, so ``seen`` spans its steps."""
        if seen.whole:
            return [(key, seen)]
        first, last = seen.step[0], seen.step[-1]
        if first >= last:
            raise AssayError(
                f"step {first} of {key!r} in run {run_id} holds {seen.total} points, more than "
                f"one request may return ({self.points_per_request})",
                hint="raise points_per_request (at most "
                     f"{DEFAULT_POINTS_PER_REQUEST:_}), or read the run with Api(dir=...) on "
                     "the server's machine")
        mid = first + (last - first) // 2
        out: list[tuple[str, _Series]] = []
        for a, b in ((lo, mid), (mid + 1, hi)):
            got = self._history(run_id, [key], self.points_per_request, step_min=a,
                                step_max=b).get(key)
            if got is not None:  # None: a rewound run dropped the window's points meanwhile
                out += self._windows(run_id, key, a, b, got)
        return out

    def _history(self, run_id: str, keys: list[str] | None, max_points: int, *,
                 time: bool = True, step_min: int | None = None,
                 step_max: int | None = None) -> dict[str, _Series]:
        """One ``GET /api/runs/{id}/history`` (``minmax``: no per-point Python loop there)."""
        params: dict[str, Any] = {"max_points": max_points, "method": "minmax",
                                  "time": "true" if time else "false"}
        if keys is not None:
            params["key"] = keys
        for name, bound in (("step_min", step_min), ("step_max", step_max)):
            if bound is not None:
                if bound < 0:
                    raise AssayError(f"run {run_id} logs steps below 0, which the server "
                                     "cannot page", hint="read it with Api(dir=...) on the "
                                                         "server's machine")
                params[name] = bound
        body = self._get(f"/api/runs/{run_id}/history", params, not_found_hint=_RUNS_HINT)
        out: dict[str, _Series] = {}
        try:
            for k, s in body["series"].items():
                step = [int(x) for x in s["step"]]
                value = [_number(x) for x in s["value"]]
                times: list[float | None] = ([_time(x) for x in s["time"]] if time
                                             else [None] * len(step))
                out[k] = _Series(int(s["total"]), step, value, times)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _odd_answer(self.server, f"/api/runs/{run_id}/history") from exc
        return out

    # -- HTTP ---------------------------------------------------------------------------------
    def _check_run(self, run_id: Any) -> None:
        check_run_id_arg(run_id)
        if not _RUN_ID.fullmatch(run_id):  # no run has it (and it would not fit a URL path)
            raise NotFoundError(f"no run {run_id!r} on {self.server}", hint=_RUNS_HINT)

    def _send(self, path: str, params: Mapping[str, Any] | None) -> Any:
        """``GET path``'s response; a server that cannot be reached or does not answer in
        time as an AssayError saying so."""
        import httpx

        try:
            resp = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise ServerUnreachableError(
                f"the assay server at {self.server} did not answer {path} within "
                f"{self._timeout:g} s ({type(exc).__name__})",
                hint="check that `assay server` runs there and is not overloaded; pass a "
                     "larger timeout= for slow links") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachableError(
                f"cannot reach the assay server at {self.server}: {exc}",
                hint="check the URL (scheme, host and port) and that `assay server` runs "
                     "there and is reachable from this machine") from exc
        return resp

    def _get(self, path: str, params: Mapping[str, Any] | None = None, *,
             not_found_hint: str | None = None) -> dict[str, Any]:
        """The JSON object ``GET path`` answers; a refusal as the matching AssayError."""
        resp = self._send(path, params)
        try:
            _raise_for(resp)
        except PermissionDeniedError as exc:  # its hint is for logging (a researcher's token)
            raise PermissionDeniedError(exc.message, hint=_TOKEN_HINT) from None
        except NotFoundError as exc:
            if not_found_hint is None:
                raise
            raise NotFoundError(exc.message, hint=not_found_hint) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _odd_answer(self.server, path)
        return body


# -- answers to frames and records ------------------------------------------------------------
def _listed_row(item: Any) -> dict[str, Any]:
    """A :func:`~assay.sdk.api.run_row` of one ``GET /api/runs`` row.

    The row's ``summary`` merges metric values and values set explicitly (which win); a key
    whose value is its statistics' ``last`` (the same JSON value) is the metric's."""
    values = item.get("summary") or {}
    raw_stats = item.get("summary_stats")
    if isinstance(raw_stats, dict):
        stats = {k: _stats(s) for k, s in raw_stats.items()}
        explicit = {k: v for k, v in values.items()
                    if not (k in raw_stats and _same_json(v, raw_stats[k].get("last")))}
    else:  # a server older than summary_stats in listings: values only, no min/max
        stats, explicit = {}, values
    return run_row(item, item.get("config") or {}, stats, explicit)


def _record(body: dict[str, Any], server: str) -> RunRecord:
    """The :class:`RunRecord` behind ``run_public`` (``summary_stats`` is its summary)."""
    names = {f.name for f in dataclasses.fields(RunRecord)} - {"summary", "status", "tags"}
    try:
        return RunRecord(
            **{k: body[k] for k in names if k in body},
            status=RunStatus(body["status"]),
            tags=tuple(body.get("tags") or ()),
            summary={k: _stats(s) for k, s in (body.get("summary_stats") or {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _odd_answer(server, "/api/runs/{id}") from exc


def _stats(s: Mapping[str, Any]) -> dict[str, Any]:
    """A metric's ``{"last", "min", "max", "step"}`` with non-finite strings as floats."""
    out = {f: _number(x) if isinstance(x, str) else x for f, x in s.items()}
    for f in ("last", "min", "max"):
        out.setdefault(f, None)
    return out


def _number(x: Any) -> Any:
    return NON_FINITE_STRINGS[x] if isinstance(x, str) else x


def _time(x: Any) -> float | None:
    """A point's time; a missing one (NaN on the wire) is None, as the store reads it."""
    if x is None or isinstance(x, str):
        return None
    return float(x)


def _same_json(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _valid_name(name: str) -> bool:
    try:
        validate_name("project", name)
    except UserInputError:
        return False
    return True


def _odd_answer(server: str, what: str) -> AssayError:
    return AssayError(f"{server} answered {what} with something that is not an assay server's "
                      "answer", hint="check that the URL is an assay server's (not a proxy's "
                                     "page) and that it runs the same assay version")


def _url_batches(keys: list[str]) -> Iterator[list[str]]:
    """``keys`` (once each) in groups whose ``key=`` parameters fit one URL."""
    batch: list[str] = []
    size = 0
    for k in dict.fromkeys(keys):
        n = len(quote(k, safe="")) + 5
        if batch and size + n > _KEYS_URL_BUDGET:
            yield batch
            batch, size = [], 0
        batch.append(k)
        size += n
    if batch:
        yield batch


def _packed(keys: list[str], counts: Mapping[str, _Series], budget: int) -> Iterator[list[str]]:
    """``keys`` (each at most ``budget`` points) in groups of at most ``budget`` points whose
    parameters fit one URL."""
    group: list[str] = []
    points = 0
    for k in keys:
        n = counts[k].total
        if group and points + n > budget:
            yield from _url_batches(group)
            group, points = [], 0
        group.append(k)
        points += n
    if group:
        yield from _url_batches(group)
