"""``Api(server=...).lineage()``: the lineage frames of a data directory, read from its server.

``GET /api/lineage`` answers with the nodes and edges :func:`assay.store.lineage.lineage`
finds on the server, described for the dashboard (labels, statuses, types, a ``deleted``
flag) and with a signed ``depth`` (negative going up). :func:`remote_lineage` turns that
answer back into the two frames ``Api(dir).lineage()`` gives for the same directory: the
same columns and dtypes, the same rows, in the same order.

- The order of a local query is breadth first, each node where the first edge reaching it
  is; the server sorts its nodes by distance instead, but keeps the edges in the order the
  query found them, so the local order is rebuilt from the edges.
- The server answers at most 5000 nodes and cuts the rest (``truncated``): a cut graph is
  refused here, never returned as if whole.
- The server takes ``depth`` up to 50; a deeper limit is asked without one and the answer
  cut here to what the limit reaches (the edges the last hop followed included, as locally).
"""

from __future__ import annotations

from typing import Any, cast

import polars as pl

from ..errors import AssayError, NotFoundError
from ..store.artifacts import parse_spec
from ..store.lance import LanceStore
from ..store.lineage import lineage, parse_node
from .frames import check_run_id_arg
from .remote_api import _RUNS_HINT, _odd_answer

__all__ = ["check_lineage_args", "remote_lineage"]

#: Nodes asked for per query (the server's largest ``max_nodes``).
_MAX_NODES = 5000
#: The server's largest ``depth``.
_MAX_DEPTH = 50
_ARTIFACTS_HINT = ("list the server's versions with Api(server=...).artifacts(name=...); "
                   "deleted ones too with include_deleted=True (supervisors)")


class _NoEdges:
    """A store without an edges table (what an empty data directory is to lineage)."""

    def table(self, name: str) -> None:
        return None


def _empty(direction: str, depth: int | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``lineage()`` on a store without edges: it checks ``direction`` and ``depth`` before
    it reads anything, then frames the start node alone. Asked here so that both come from
    it, the errors and the frames' schemas, and cannot drift from a local query's."""
    return lineage(cast(LanceStore, _NoEdges()), "run:-", direction, depth)


def check_lineage_args(spec: Any, direction: Any, depth: Any) -> None:
    """Refuse, before any data is read, what :meth:`~assay.sdk.api.Api.lineage` cannot ask:
    a ``spec`` that is neither ``run:<id>`` nor an artifact reference, a direction other than
    ``up``/``down``, a ``depth`` that is not a positive int (UserInputError). Both paths, a
    data directory's and a server's, call it first, so they refuse alike."""
    if isinstance(spec, str) and spec.startswith("run:"):
        check_run_id_arg(spec[4:])
    else:
        parse_spec(spec)  # not a string too: "artifact reference must be a string ..."
    _empty(direction, depth)


def remote_lineage(reader: Any, spec: str, direction: str = "up",
                   depth: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(nodes, edges)`` of :meth:`Api.lineage <assay.sdk.api.Api.lineage>` from the server
    ``reader`` (a :class:`~assay.sdk.remote_api.RemoteReader`: its client, token and error
    mapping) reads.

    Raises:
        UserInputError: as :func:`check_lineage_args`.
        NotFoundError: the server has no such run or artifact version.
        PermissionDeniedError: the server refused the token (or its absence).
        AssayError: the graph has more than 5000 nodes within ``depth`` (the hint says to
            pass a smaller one), or the server cannot be reached.
    """
    check_lineage_args(spec, direction, depth)
    nodes_schema, edges_schema = (f.schema for f in _empty(direction, depth))
    is_run = spec.startswith("run:")
    if is_run:
        reader._check_run(spec[4:])  # an id no run can have: NotFoundError, as locally
        node = spec
    else:
        name, sel = parse_spec(spec)
        node = f"{name}:{sel}"
    params: dict[str, Any] = {"node": node, "direction": direction, "max_nodes": _MAX_NODES}
    if depth is not None and depth <= _MAX_DEPTH:
        params["depth"] = int(depth)  # True is 1 (a local query takes it)
    try:
        body = reader._get("/api/lineage", params)
    except NotFoundError as exc:
        # The server's hint for a run names dir= and ASSAY_DIR; for a version it lists the
        # name's versions and aliases, which is kept.
        if is_run or not exc.hint:
            raise NotFoundError(exc.message,
                                hint=_RUNS_HINT if is_run else _ARTIFACTS_HINT) from None
        raise
    if body.get("truncated"):
        raise AssayError(
            f"the lineage {direction} from {spec} has more than {_MAX_NODES} nodes"
            + ("" if depth is None else f" within depth {depth}")
            + f", more than {reader.server} answers at once",
            hint="pass a smaller depth= (e.g. depth=3), or query it with Api(dir=DATA_DIR) "
                 "on the server's machine")
    try:
        root = str(body["root"])
        dist = {str(n["id"]): _distance(n["depth"], direction) for n in body["nodes"]}
        edges = [(str(e["src"]), str(e["dst"]), str(e["kind"])) for e in body["edges"]]
        rows = _rows(root, dist, edges, direction, depth)
    except (KeyError, TypeError, ValueError, AssayError) as exc:
        raise _odd_answer(reader.server, "/api/lineage") from exc
    if depth is not None:  # the edges a local query's last hop followed, and none further
        near = 1 if direction == "up" else 0  # the end the query came from
        edges = [e for e in edges if dist.get(e[near], depth) < depth]
    return (pl.DataFrame(rows, schema=nodes_schema),
            pl.DataFrame(edges, schema=edges_schema, orient="row"))


def _distance(raw: Any, direction: str) -> int:
    """Hops from the start: the server signs depth (negative going up), lineage() does not."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TypeError(f"depth {raw!r}")
    d = -raw if direction == "up" else raw
    if d < 0:
        raise ValueError(f"depth {raw!r} going {direction}")
    return d


def _rows(root: str, dist: dict[str, int], edges: list[tuple[str, str, str]], direction: str,
          depth: int | None) -> list[dict[str, Any]]:
    """The nodes frame's rows in a local query's order: the start, then each node where the
    first edge (in the order the query followed them) reaches it."""
    if dist.get(root) != 0:
        raise ValueError(f"the root {root!r} is not at depth 0")
    order = {root: 0}
    for src, dst, _ in edges:
        order.setdefault(src if direction == "up" else dst, len(order))
    ranked = sorted(dist, key=lambda n: (order.get(n, len(order)), dist[n], n))
    out = []
    for n in ranked:
        if depth is not None and dist[n] > depth:
            continue
        p = parse_node(n)
        out.append({"id": n, "kind": p["kind"], "name": p.get("name"),
                    "version": p.get("version"), "run_id": p.get("run_id"), "depth": dist[n]})
    return out
