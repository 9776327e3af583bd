"""Read routes over the experiment graph: artifacts, lineage, verification, a run's git diff.

Thin HTTP views of :class:`assay.sdk.api.Api` (the same reads ``assay artifacts``,
``assay lineage`` and ``assay verify`` make), for viewers. Verification recomputes every
signed record it checks (metric digests, artifact bytes), so ``GET /api/verify`` without a
run can take a while on a large directory; ask for one run (``?run_id=``) where you can.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import PlainTextResponse, Response

from ..errors import NotFoundError, PermissionDeniedError, UserInputError
from ..sdk.api import Api
from ..store.lineage import lineage, parse_node
from .auth import Role, Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .query import RunsIndex
from .runs import RunId

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["graph"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_SELECTOR = r"^(v\d{1,9}|[A-Za-z][A-Za-z0-9_.\-]{0,63})$"
_NODE_RE = re.compile(r"^(run:[A-Za-z0-9]{1,64}|artifact:[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}:v\d{1,9}"
                      r"|[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}(:[A-Za-z0-9_.\-]{1,64})?)$")
_MAX_DIFF = 4 << 20


def _api(request: Request) -> Api:
    api = getattr(request.app.state, "graph_api", None)
    if api is None:
        api = request.app.state.graph_api = Api(request.app.state.data_dir)
    return api  # type: ignore[no-any-return]


def _rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dicts():
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v):
                row[k] = None
        out.append(row)
    return out


def _artifact_public(row: dict[str, Any]) -> dict[str, Any]:
    import json

    meta = row.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta or "{}")
        except ValueError:
            meta = {"raw": meta}
    return {"name": row["name"], "version": row["version"], "id": f"{row['name']}:v{row['version']}",
            "node": f"artifact:{row['name']}:v{row['version']}", "type": row["type"],
            "project": row["project"], "digest": row["digest"], "files": row["files"],
            "size": row["size"], "created_by": row.get("created_by") or "",
            "created_at": row.get("created_at"), "description": row.get("description") or "",
            "metadata": meta or {}, "aliases": list(row.get("aliases") or []),
            # Viewers may read every blob: the manifest's lets a client download the version.
            "manifest_blob": row.get("manifest_blob") or "",
            **{k: row[k] for k in ("deleted_at", "deleted_by", "delete_reason") if k in row}}


@router.get("/artifacts", summary="Artifact versions")
def list_artifacts(request: Request, who: Viewer,
                   project: Annotated[str | None, Query(pattern=_NAME)] = None,
                   name: Annotated[str | None, Query(pattern=_NAME)] = None,
                   limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                   include_deleted: bool = False) -> SafeJSONResponse:
    """Every version (newest last per name) with type, digest, size and aliases; deleted
    ones too with ``include_deleted`` (with who deleted them, when and why), for supervisors
    only: a deleted version's digest names its manifest, whose files stay readable until
    garbage collection, and deletion is how leaked data is taken back."""
    if include_deleted and not who.can(Role.SUPERVISOR):
        raise PermissionDeniedError(
            f"{who.name} ({who.role}) may not list deleted artifact versions",
            hint="supervisors see deleted versions (who deleted them, when and why); leave "
                 "include_deleted out for the live ones")
    df = _api(request).artifacts(project=project, name=name, include_deleted=include_deleted)
    rows = [_artifact_public(r) for r in _rows(df)] if df.height else []
    return ok({"total": len(rows), "artifacts": rows[-limit:]})


@router.get("/artifacts/{name}/{version}", summary="One artifact version and its files")
def get_artifact(request: Request, who: Viewer,
                 name: Annotated[str, Path(pattern=_NAME)],
                 version: Annotated[str, Path(pattern=_SELECTOR,
                                              description="v3, latest or an alias")],
                 ) -> SafeJSONResponse:
    """A version by number (``v3``) or alias (``latest``, ``prod``), with its manifest."""
    art = _api(request).artifact(f"{name}:{version}")
    v = art._v
    out = _artifact_public({**v.__dict__, "aliases": v.aliases})
    out["manifest"] = [{"path": e.path, "digest": e.digest, "size": e.size}
                       for e in art.files()[:2000]]
    return ok(out)


def _resolve_node(api: Api, node: str) -> str:
    if not _NODE_RE.match(node):
        raise UserInputError(f"not a lineage node: {node!r}",
                             hint="run:<id>, artifact:<name>:v<n>, or <name>:<version or alias>")
    if node.startswith("run:"):
        api.run(node[4:])  # 404 for an unknown run
        return node
    reg = api._graph().artifacts  # deleted versions keep their lineage
    if node.startswith("artifact:"):
        p = parse_node(node)
        return str(reg.get(f"{p['name']}:v{p['version']}", include_deleted=True).node)
    return str(reg.get(node, include_deleted=True).node)


@router.get("/lineage", summary="Lineage graph around a run or artifact version")
def get_lineage(request: Request, who: Viewer,
                node: Annotated[str, Query(max_length=200, description=(
                    "run:<id>, artifact:<name>:v<n> or <name>:<version or alias>"))],
                direction: Literal["up", "down", "both"] = "both",
                depth: Annotated[int | None, Query(ge=1, le=50)] = None,
                max_nodes: Annotated[int, Query(ge=1, le=5000)] = 500) -> SafeJSONResponse:
    """Nodes and edges ``up`` (made from), ``down`` (built on it) or ``both``, described.

    Run nodes carry name, project and status; artifact nodes their type. More than
    ``max_nodes`` nodes are cut (nearest first) and ``truncated`` says so.
    """
    api = _api(request)
    start = _resolve_node(api, node)
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in (("up", "down") if direction == "both" else (direction,)):
        n, e = lineage(api.store, start, d, depth)
        for row in n.to_dicts():
            row["depth"] = -row["depth"] if d == "up" else row["depth"]
            old = nodes.get(row["id"])
            if old is None or abs(row["depth"]) < abs(old["depth"]):
                nodes[row["id"]] = row
        for row in e.to_dicts():
            edges[(row["src"], row["dst"], row["kind"])] = row
    ordered = sorted(nodes.values(), key=lambda r: (abs(r["depth"]), r["id"]))
    truncated = len(ordered) > max_nodes
    keep = {r["id"] for r in ordered[:max_nodes]}
    _describe(request.app.state.index, api, [nodes[i] for i in keep])
    return ok({"root": start, "direction": direction, "truncated": truncated,
               "nodes": [r for r in ordered if r["id"] in keep],
               "edges": [e for e in edges.values() if e["src"] in keep and e["dst"] in keep]})


def _describe(index: RunsIndex, api: Api, nodes: list[dict[str, Any]]) -> None:
    index.refresh()
    names = sorted({n["name"] for n in nodes if n["kind"] == "artifact"})
    types: dict[str, str] = {}
    deleted: set[tuple[str, int]] = set()
    if names:
        # Deleted versions too: lineage keeps them, and they must read as deleted, with
        # their type, not as live versions that 404 when opened.
        df = api.artifacts(include_deleted=True)
        if df.height:
            df = df.filter(pl.col("name").is_in(names))
            for row in df.select("name", "type").unique().to_dicts():
                types[row["name"]] = row["type"]
            if "deleted_at" in df.columns:
                deleted = {(r["name"], int(r["version"])) for r in df.filter(
                    pl.col("deleted_at").is_not_null()).select("name", "version").to_dicts()}
    for n in nodes:
        if n["kind"] == "run":
            d = index.detail(n["run_id"]) or {}
            n.update(label=d.get("name") or n["run_id"], status=d.get("status"),
                     project=d.get("project"))
        else:
            n.update(label=f"{n['name']}:v{n['version']}", type=types.get(n["name"], ""),
                     deleted=(n["name"], int(n["version"])) in deleted)


_VERIFY_TABLES = ("runs", "metrics", "chain", "edges", "artifacts", "artifact_deletions")


class _VerifyCache:
    """Recent verification results, valid while no table they read has a new version.

    Verifying a run re-reads every metric row (about a second for a million points); a run
    page asks on every view, so a result is reused for up to ``VERIFY_TTL`` seconds while the
    tables are unchanged (a write through LanceDB, tampering included, makes a new version).
    ``fresh=true`` always recomputes.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str | None, tuple[tuple[int, ...], float, dict[str, Any]]] = {}


VERIFY_TTL = 60.0


def _versions(api: Api) -> tuple[int, ...]:
    out = []
    for name in _VERIFY_TABLES:
        tbl = api.store.table(name)
        out.append(-1 if tbl is None else int(tbl.version))
    return tuple(out)


@router.get("/verify", summary="Verify signed run records (and the audit chain)")
def verify(request: Request, who: Viewer,
           run_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,64}$")] = None,
           fresh: bool = False) -> SafeJSONResponse:
    """Recompute and check every finished run's signed record, or one run's.

    ``sealed`` is false for a run that has no record yet (still running). Without
    ``run_id`` the graph's audit chain is checked too. Slow on large directories; a result
    is reused while the tables it read are unchanged (at most a minute; ``fresh`` recomputes).
    """
    api = _api(request)
    status = None
    if run_id is not None:
        status = str(api.run(run_id).status)
    cache: _VerifyCache | None = getattr(request.app.state, "verify_cache", None)
    if cache is None:
        cache = request.app.state.verify_cache = _VerifyCache()
    key = _versions(api)
    with cache.lock:
        hit = cache.items.get(run_id)
    if not fresh and hit is not None and hit[0] == key and time.monotonic() - hit[1] < VERIFY_TTL:
        return ok({**hit[2], "cached": True})
    checked, problems = api.verify(run_id)
    out = {"ok": not problems, "checked": checked, "run_id": run_id,
           "sealed": None if run_id is None else (checked > 0 and status != "running"),
           "status": status, "verified_at": time.time(),
           "problems": [{"chain": p.chain, "subject_id": p.subject_id, "seq": p.seq,
                         "reason": p.reason} for p in problems[:1000]],
           "problem_count": len(problems)}
    with cache.lock:
        if len(cache.items) > 1000:
            cache.items.clear()
        cache.items[run_id] = (key, time.monotonic(), out)
    return ok({**out, "cached": False})


@router.get("/runs/{run_id}/diff", summary="The git diff a run captured (text)",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "the diff"}})
def run_diff(request: Request, who: Viewer, run_id: RunId) -> Response:
    """``git diff HEAD`` of tracked files when the run started (first 4 MiB)."""
    api = _api(request)
    git = api.run(run_id).git or {}
    digest = git.get("diff_blob")
    if not digest:
        raise NotFoundError(f"run {run_id!r} captured no diff",
                            hint="the working tree was clean, or not a git checkout")
    from ..sdk.graph import open_graph

    with open_graph(api.dir).blobs.open(digest) as f:
        data = f.read(_MAX_DIFF)
    return PlainTextResponse(data.decode("utf-8", "replace"),
                             headers={"X-Content-Type-Options": "nosniff"})
