"""Read routes: projects, runs (filter, sort, paginate), one run, its keys and curves."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NotFoundError, PermissionDeniedError, UserInputError
from ..sdk.capture import scrub_argv, scrub_environ
from ..store.records import RunRecord, RunStatus, validate_name
from .auth import Principal, Researcher, Role, Viewer
from .downsample import Curve, Method, downsample, load_curves
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .query import RunsIndex, RunsQuery
from .store_ext import ServerStore

__all__ = ["RUN_ID_PATTERN", "RunId", "may_see_environ", "router", "run_public"]

RUN_ID_PATTERN = r"^[A-Za-z0-9]{1,64}$"
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="a run id (letters and digits)")]

router = APIRouter(prefix="/api", tags=["runs"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)


def _store(request: Request) -> ServerStore:
    return request.app.state.store  # type: ignore[no-any-return]


def _index(request: Request) -> RunsIndex:
    return request.app.state.index  # type: ignore[no-any-return]


def may_see_environ(who: Principal | None, owner: str | None) -> bool:
    """Whether ``who`` sees the values of a run's environment variables: supervisors and up,
    and the run's owner (the researcher token that started it on this server). Others,
    viewers included, see the variable names only."""
    if who is None:
        return False
    if who.can(Role.SUPERVISOR):
        return True
    return owner is not None and who.can(Role.RESEARCHER) and owner == who.name


def run_public(r: RunRecord, show_environ: bool = False) -> dict[str, Any]:
    """A run record as the API shows it (summary values first, statistics beside).

    The environment's variables and command line are scrubbed again as served (runs captured
    before the SDK scrubbed values still hold them in their signed record); unless
    ``show_environ``, the variables' values are ``null`` (``environ_hidden`` says so).
    """
    d = dataclasses.asdict(r)
    d["status"] = str(r.status)
    d["tags"] = list(r.tags)
    d["summary_stats"] = d.pop("summary")
    d["summary"] = r.summary_values()
    env = d.get("env")
    hidden = False
    if isinstance(env, dict):
        if isinstance(env.get("argv"), list):
            env["argv"] = scrub_argv([str(a) for a in env["argv"]])
        environ = env.get("environ")
        if isinstance(environ, dict):
            clean = scrub_environ({str(k): str(v) for k, v in environ.items()})
            hidden = not show_environ
            env["environ"] = {k: None for k in clean} if hidden else clean
    d["environ_hidden"] = hidden
    return d


def get_run_or_404(store: ServerStore, run_id: str) -> RunRecord:
    r = store.get_run(run_id)
    if r is None:
        raise NotFoundError(f"no run {run_id!r}", hint="list runs with GET /api/runs")
    return r


@router.get("/projects", summary="Projects with run counts")
def list_projects(request: Request, who: Viewer) -> SafeJSONResponse:
    """Every project that has runs: run count, running count, first and last activity."""
    return ok({"projects": _index(request).projects()})


@router.get("/runs", summary="Query runs")
def list_runs(
    request: Request,
    who: Viewer,
    project: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[list[str], Query(description="any of these statuses")] = [],  # noqa: B006
    tag: Annotated[list[str], Query(description="runs carrying all these tags")] = [],  # noqa: B006
    filter: Annotated[list[str], Query(
        description="COLUMN OP VALUE, OP in = != < <= > >= ~ (contains); e.g. "
                    "config.lr<=0.01, summary.val/acc>0.9, name~mlp")] = [],  # noqa: B006
    sort: Annotated[str, Query(max_length=300, description="any column, incl. config.* and "
                                                           "summary.*")] = "created_at",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    cursor: Annotated[str | None, Query(max_length=2000,
                                        description="next_cursor of the previous page")] = None,
    stats: Annotated[bool, Query(description="also each key's min/max/last step "
                                             "(summary_stats)")] = False,
) -> SafeJSONResponse:
    """Runs matching all filters, sorted, one page at a time, with the total count.

    Page with ``offset`` or, stable under concurrent inserts, with ``cursor``.
    """
    if project is not None:
        validate_name("project", project)
    known = [str(s) for s in RunStatus]
    for st in status:  # an unknown one would match no run, silently
        if st not in known:
            close = difflib.get_close_matches(st.lower(), known, n=1)
            raise UserInputError(f"unknown run status {st!r}",
                                 hint=(f"did you mean {close[0]!r}? " if close else "")
                                 + "statuses: " + ", ".join(known))
    q = RunsQuery(project=project, status=tuple(status), tags=tuple(tag), filters=tuple(filter),
                  sort=sort, order=order, limit=limit, offset=offset, cursor=cursor)
    page = _index(request).query(q)
    runs = page.runs if stats else [{k: v for k, v in r.items() if k != "summary_stats"}
                                    for r in page.runs]
    return ok({"total": page.total, "offset": page.offset, "limit": limit,
            "next_cursor": page.next_cursor, "runs": runs})


@router.get("/runs/columns", summary="Columns runs can be filtered and sorted by")
def run_columns(request: Request, who: Viewer,
                project: Annotated[str | None, Query(max_length=128)] = None) -> SafeJSONResponse:
    """Run columns, then ``config.*`` and ``summary.*`` columns present (in a project)."""
    if project is not None:
        validate_name("project", project)
    return ok({"columns": _index(request).columns(project)})


@router.get("/runs/positions", summary="Where each of some runs stands (for pollers)")
def run_positions(request: Request, who: Viewer,
                  id: Annotated[list[str], Query(
                      description="run ids (at most 1000)")] = []) -> SafeJSONResponse:  # noqa: B006
    """``attach``, ``ingested_seq`` and ``last_step`` of each run of ``id`` the server
    knows (unknown ids are left out): one request tells a reader following many runs'
    curves which of them grew since it last read, instead of one ``GET /runs/{id}`` each."""
    ids = list(dict.fromkeys(id))
    if len(ids) > 1000:
        raise UserInputError(f"{len(ids)} run ids in one request; at most 1000",
                             hint="ask for the positions of at most 1000 runs at a time")
    bad = [r for r in ids if not re.fullmatch(RUN_ID_PATTERN, r)]
    if bad:
        raise UserInputError(f"not a run id: {bad[0]!r}",
                             hint="run ids are 1 to 64 letters and digits")
    pos = _store(request).run_positions(ids)
    return ok({"runs": {rid: {"attach": a, "ingested_seq": seq, "last_step": last}
                        for rid, (a, seq, last) in pos.items()}})


@router.get("/runs/{run_id}", summary="One run")
def get_run(request: Request, who: Viewer, run_id: RunId) -> SafeJSONResponse:
    """Config, summary (values and min/max/last step per key), status, env, git.

    The values of the run's environment variables are for its owner and supervisors; other
    callers get the names with ``null`` values and ``environ_hidden: true``.
    """
    r = get_run_or_404(_store(request), run_id)
    owner = None
    if not who.can(Role.SUPERVISOR) and who.can(Role.RESEARCHER):
        remote = getattr(request.app.state, "remote", None)
        owner = remote.owner(run_id) if remote is not None else None
    return ok(run_public(r, show_environ=may_see_environ(who, owner)))


class LabelsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] | None = Field(default=None, max_length=256,
                                   description="replace the tags with these")
    add_tags: list[str] = Field(default_factory=list, max_length=256)
    remove_tags: list[str] = Field(default_factory=list, max_length=256)
    notes: str | None = Field(default=None, max_length=10_000, description="replace the notes")
    reason: str = Field(default="", max_length=2000)


@router.patch("/runs/{run_id}", summary="Change a run's tags or notes")
def patch_run(request: Request, who: Researcher, run_id: RunId,
              body: LabelsBody) -> SafeJSONResponse:
    """Tags and notes are not sealed in a run's signed record, so they may change any time
    (audited: who, why, before and after). A researcher changes the runs their token
    started on this server; a supervisor any run."""
    from ..store.ingest import IngestLock
    from ..store.labels import set_labels

    get_run_or_404(_store(request), run_id)
    if not who.can(Role.SUPERVISOR):
        owner = request.app.state.remote.owner(run_id)
        if owner != who.name:
            raise PermissionDeniedError(
                f"run {run_id} " + (f"belongs to {owner}" if owner else
                                    "was not started by a token of this server") +
                f", so {who.name} may not change its tags or notes",
                hint="change the labels of your own runs, or ask a supervisor")
    before, after = set_labels(request.app.state.store, IngestLock(request.app.state.data_dir),
                               run_id, tags=body.tags, add=body.add_tags,
                               remove=body.remove_tags, notes=body.notes)
    if after != before:
        request.app.state.audit.record(
            who.name, "run.labels", f"run:{run_id}", body.reason,
            {"tags": list(after.tags), "tags_before": list(before.tags),
             "notes_changed": after.notes != before.notes})
    return ok({"run_id": run_id, "tags": list(after.tags), "notes": after.notes})


@router.get("/runs/{run_id}/keys", summary="Metric keys of a run")
def run_keys(request: Request, who: Viewer, run_id: RunId) -> SafeJSONResponse:
    """Every metric key the run logged, with its last value and step, min and max."""
    r = get_run_or_404(_store(request), run_id)
    return ok({"run_id": run_id,
            "keys": [{"key": k, **s} for k, s in sorted(r.summary.items())]})


#: Most points one ``/chunks`` answer holds (about 24 bytes each on the wire); a client
#: asks for step windows past it.
CHUNK_POINTS_LIMIT = int(os.environ.get("ASSAY_CHUNK_POINTS_LIMIT", "4000000"))
ARROW_STREAM = "application/vnd.apache.arrow.stream"


@router.get("/runs/{run_id}/chunks", summary="A run's metric points, every one, as Arrow",
            response_class=Response,
            responses={200: {"content": {ARROW_STREAM: {}},
                             "description": "an Arrow IPC stream of metric chunks"}})
def run_chunks(
    request: Request,
    who: Viewer,
    run_id: RunId,
    key: Annotated[list[str], Query(description="keys to return (default: all)")] = [],  # noqa: B006
    step_min: Annotated[int | None, Query(ge=-2**63, le=2**63 - 1)] = None,
    step_max: Annotated[int | None, Query(ge=-2**63, le=2**63 - 1)] = None,
    seq_after: Annotated[int | None, Query(ge=-1, le=2**63 - 1, description=(
        "only chunks stored after this seq (the highest one an earlier answer held)"))] = None,
    seq_max: Annotated[int | None, Query(ge=-1, le=2**63 - 1, description=(
        "no chunk stored after this seq: windows of one read, as a 413 says"))] = None,
) -> Response:
    """The stored metric chunks (columns ``key``, ``seq``, ``step``, ``value``, ``time``: one
    row per chunk, lists of points; ``seq`` orders the writes) of the keys asked for, cut to
    the steps in ``[step_min, step_max]``, not deduplicated; with ``seq_after``, only the
    chunks stored since an answer whose highest ``seq`` it was (what an agent polling a live
    run's curve reads, :class:`assay.scheduler.StoreMetricSource`); with ``seq_max``, none
    stored after it: what
    :func:`assay.store.history.history_frame` turns into every point, as
    ``assay.Api(server=...).history()`` does. More than ``CHUNK_POINTS_LIMIT`` points is a
    413 whose ``points`` and ``steps`` (the first and last step) say how many and where: ask
    for narrower step windows; its ``seq_max`` (the newest chunk it counted) passed with each
    window reads them all as of that answer, whatever is stored meanwhile."""
    import pyarrow as pa
    import pyarrow.compute as pc

    store = _store(request)
    index = _index(request)
    index.refresh()
    if index.detail(run_id) is None:
        get_run_or_404(store, run_id)
    table = store.metric_chunks(run_id, key or None, step_min=step_min, step_max=step_max,
                                seq_after=seq_after, seq_max=seq_max)
    if table.num_rows and (step_min is not None or step_max is not None):
        table = _cut_chunks(table, step_min, step_max)
    points = int(pc.sum(pc.list_value_length(table.column("step"))).as_py() or 0) \
        if table.num_rows else 0
    if points > CHUNK_POINTS_LIMIT:
        steps = pc.list_flatten(table.column("step"))
        return ok({"error": f"these chunks hold {points} points, more than the "
                            f"{CHUNK_POINTS_LIMIT} one answer may",
                   "hint": "ask for narrower step windows (step_min, step_max)",
                   "points": points,
                   "steps": [int(pc.min(steps).as_py()), int(pc.max(steps).as_py())],
                   "seq_max": int(pc.max(table.column("seq")).as_py())}, 413)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM,
                    headers={"X-Assay-Points": str(points)})


def _cut_chunks(table: Any, lo: int | None, hi: int | None) -> Any:
    """Chunks keeping only their points with ``lo <= step <= hi`` (empty ones dropped)."""
    import polars as pl

    step = pl.col("step")
    keep = (step >= lo if lo is not None else pl.lit(True)) & (
        step <= hi if hi is not None else pl.lit(True))
    frame = pl.DataFrame(pl.from_arrow(table))
    cut = (frame.with_row_index("_chunk").explode(["step", "value", "time"]).filter(keep)
           .group_by("_chunk", maintain_order=True)
           .agg(pl.col("key").first(), pl.col("seq").first(), "step", "value", "time"))
    return cut.drop("_chunk").to_arrow().cast(table.schema)


@router.get("/runs/{run_id}/history", summary="Curves of a run, downsampled")
def run_history(
    request: Request,
    who: Viewer,
    run_id: RunId,
    key: Annotated[list[str], Query(description="keys to return (default: all)")] = [],  # noqa: B006
    max_points: Annotated[int, Query(ge=3, le=100_000)] = 1000,
    method: Method = Method.LTTB,
    step_min: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    step_max: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    time: Annotated[bool, Query(description="include wall-clock times (false reads less)")] = True,
) -> SafeJSONResponse:
    """Each key's points (step, value, time) reduced to at most ``max_points``.

    ``lttb`` keeps the shape of the curve; ``minmax`` keeps every bucket's extremes (spikes).
    ``total`` is the number of points before downsampling.
    """
    store = _store(request)
    index = _index(request)
    index.refresh()  # a version check when nothing changed; cheaper than reading the run
    detail = index.detail(run_id)
    if detail is None:
        detail = {"summary_stats": get_run_or_404(store, run_id).summary}
    curves = load_curves(store.metric_chunks(run_id, key or None, with_time=time,
                                             step_min=step_min, step_max=step_max))
    if step_min is not None or step_max is not None:
        # Only the chunks holding the window were read: a key of the run with no point in
        # it is still answered, empty, as when the whole curve was read and cut.
        have = set(detail.get("summary_stats") or {})
        for k in (key or sorted(have)):
            if k in have and k not in curves:
                curves[k] = Curve(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    series: dict[str, Any] = {}
    for k, c in curves.items():
        if step_min is not None or step_max is not None:
            lo = 0 if step_min is None else int(c.step.searchsorted(step_min, "left"))
            hi = len(c) if step_max is None else int(c.step.searchsorted(step_max, "right"))
            c = c.take(slice(lo, hi))  # type: ignore[arg-type]
        d = downsample(c, max_points, method)
        series[k] = {"total": len(c), "returned": len(d), "step": d.step.tolist(),
                     "value": d.value.tolist()}
        if time:
            series[k]["time"] = d.time.tolist()
    return ok({"run_id": run_id, "method": str(method), "max_points": max_points,
            "series": series})
