"""Lineage: edges between runs and artifact versions, and queries up and down them.

Edges point the way data flows: ``run:<id> -> artifact:<name>:v<n>`` (the run produced the
version) and ``artifact:<name>:v<n> -> run:<id>`` (the run consumed it). "Up" from a node
follows edges backwards (what it was made from), "down" forwards (everything built on it:
impact analysis). Each hop is one indexed query (BTREE on ``src`` and ``dst``), so a query
costs a few milliseconds per hop whatever the size of the graph.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import polars as pl
import pyarrow as pa

from ..errors import UserInputError
from .lance import LanceStore, sql_str
from .schemas import EDGES_SCHEMA

__all__ = ["add_edges", "artifact_node", "lineage", "parse_node", "run_artifacts", "run_node"]


def artifact_node(name: str, version: int) -> str:
    return f"artifact:{name}:v{version}"


def run_node(run_id: str) -> str:
    return f"run:{run_id}"


def parse_node(node: str) -> dict[str, Any]:
    """``{"kind": "run", "run_id"}`` or ``{"kind": "artifact", "name", "version"}``."""
    kind, _, rest = node.partition(":")
    if kind == "run" and rest:
        return {"kind": "run", "run_id": rest}
    if kind == "artifact":
        name, _, v = rest.rpartition(":")
        if name and v.startswith("v") and v[1:].isdigit():
            return {"kind": "artifact", "name": name, "version": int(v[1:])}
    raise UserInputError(f"not a lineage node id: {node!r}",
                         hint="node ids are 'run:<id>' or 'artifact:<name>:v<n>'")


def add_edges(store: LanceStore, edges: Iterable[tuple[str, str, str]]) -> int:
    """Add (src, dst, kind) edges not already present. Callers hold the ingest lock."""
    edges = list(dict.fromkeys(edges))
    if not edges:
        return 0
    tbl = store.table("edges")
    if tbl is not None:
        srcs = sorted({s for s, _, _ in edges})
        where = "src IN (" + ", ".join(sql_str(s) for s in srcs) + ")"
        have = tbl.search().where(where).select(["src", "dst", "kind"]).limit(None).to_arrow()
        seen = set(zip(have["src"].to_pylist(), have["dst"].to_pylist(), have["kind"].to_pylist()))
        edges = [e for e in edges if e not in seen]
    if not edges:
        return 0
    now = time.time()
    data = pa.Table.from_pylist([{"src": s, "dst": d, "kind": k, "created_at": now}
                                 for s, d, k in edges], schema=EDGES_SCHEMA)
    store.write_table("edges").add(data)
    return len(edges)


def _hop(tbl: Any, frontier: list[str], direction: str) -> pa.Table:
    col = "dst" if direction == "up" else "src"
    out = []
    for i in range(0, len(frontier), 500):  # keep each IN list a reasonable size
        part = frontier[i : i + 500]
        where = f"{col} IN (" + ", ".join(sql_str(n) for n in part) + ")"
        out.append(tbl.search().where(where).select(["src", "dst", "kind"]).limit(None).to_arrow())
    return pa.concat_tables(out) if out else EDGES_SCHEMA.empty_table().select(["src", "dst", "kind"])


def lineage(store: LanceStore, node: str, direction: str = "up",
            depth: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Nodes and edges reachable from ``node`` going ``up`` or ``down``, ``depth`` hops at most.

    Returns ``(nodes, edges)``: nodes have columns id, kind, name, version, run_id, depth;
    edges have src, dst, kind.
    """
    if direction not in ("up", "down"):
        raise UserInputError(f"direction must be 'up' or 'down', got {direction!r}",
                             hint="up: what it was made from; down: what was built on it")
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise UserInputError(f"depth must be a positive int, got {depth!r}",
                             hint="leave it out for no limit")
    parse_node(node)
    tbl = store.table("edges")
    seen = {node: 0}
    edge_parts: list[pa.Table] = []
    frontier = [node]
    level = 0
    while frontier and tbl is not None and (depth is None or level < depth):
        level += 1
        got = _hop(tbl, frontier, direction)
        if got.num_rows == 0:
            break
        edge_parts.append(got)
        nxt = got["src" if direction == "up" else "dst"].to_pylist()
        frontier = []
        for n in nxt:
            if n not in seen:
                seen[n] = level
                frontier.append(n)
    edges = (pl.from_arrow(pa.concat_tables(edge_parts)).unique(maintain_order=True)
             if edge_parts else pl.DataFrame(schema={"src": pl.String, "dst": pl.String,
                                                     "kind": pl.String}))
    rows = []
    for n, d in seen.items():
        p = parse_node(n)
        rows.append({"id": n, "kind": p["kind"], "name": p.get("name"),
                     "version": p.get("version"), "run_id": p.get("run_id"), "depth": d})
    nodes = pl.DataFrame(rows, schema={"id": pl.String, "kind": pl.String, "name": pl.String,
                                       "version": pl.Int64, "run_id": pl.String,
                                       "depth": pl.Int64})
    return nodes, edges  # type: ignore[return-value]


def run_artifacts(store: LanceStore, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The artifact versions a run produced and used, with their digests (sorted)."""
    tbl = store.table("edges")
    if tbl is None:
        return [], []
    me = sql_str(run_node(run_id))
    t = tbl.search().where(f"src = {me} OR dst = {me}").limit(None).to_arrow().to_pylist()
    # Only data edges count: run -> run links (re-evaluations) and edges added after a run
    # was sealed (a report built on it) are not what the run produced or used.
    produced = [parse_node(e["dst"]) for e in t if e["src"] == run_node(run_id)
                and e["kind"] == "produced" and e["dst"].startswith("artifact:")]
    used = [parse_node(e["src"]) for e in t if e["dst"] == run_node(run_id)
            and e["kind"] == "consumed" and e["src"].startswith("artifact:")]
    return _describe(store, produced), _describe(store, used)


def _describe(store: LanceStore, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not nodes:
        return []
    tbl = store.table("artifacts")
    if tbl is None:
        return []
    names = sorted({n["name"] for n in nodes})
    rows = tbl.search().where("name IN (" + ", ".join(sql_str(n) for n in names) + ")").select(
        ["name", "version", "digest", "manifest_blob"]).limit(None).to_arrow().to_pylist()
    by = {(r["name"], r["version"]): r for r in rows}
    out = [by[(n["name"], n["version"])] for n in nodes if (n["name"], n["version"]) in by]
    return sorted(out, key=lambda r: (r["name"], r["version"]))
