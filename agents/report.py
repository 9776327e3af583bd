"""Sweep reports: one objective's agent, summarised as a self-contained HTML page and Markdown.

A report covers the objective (metric, mode, space, budget), the best configurations, the
best-so-far and regret curves over trial index and over time, parameter importance
(Optuna's fANOVA through :func:`assay.policies.param_importance`), every launch and stop
with its evidence, what supervisors overrode, the compute used, and an estimate of what
early stopping saved and what it may have cost in regret.

:func:`write_report` writes ``<data dir>/reports/<objective>-<agent>.html`` and ``.md`` and
stores both as one artifact (``type="report"``, name ``report-<objective>``) produced by a
small run ``report-<agent>`` (tag ``report``) in the objective's project, so the report sits
beside its runs: lineage goes report run -> artifact, and the artifact's metadata (and the
run's config) name the trial runs it covers. Edges from the trial runs themselves are
optional (``link_trials``): the trials' records are already sealed, and ``assay verify``
reads every edge touching a run as part of its record. The runner calls :func:`write_report`
when an objective ends; ``assay report OBJECTIVE`` calls :func:`report_command`.

Everything is read from the experiment graph: the agent's persisted state (trials, curve
tails, budget ledger), its decisions and overrides, and the trials' runs and full curves
when the store has them (a simulated sweep has none: curve tails stand in).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssayError, ConflictError, NotFoundError, UserInputError
from ..store.control import AgentRow, ControlStore, Decision
from . import report_html as _h
from .report_analysis import TrialRow, best_so_far, compute_used, importance, savings, tunable

__all__ = ["REPORT_TYPE", "SweepReport", "TrialRow", "build_report", "render_markdown",
           "report_command", "write_report"]

log = logging.getLogger(__name__)
REPORT_TYPE = "report"


@dataclass
class SweepReport:
    """Everything a report shows, computed once and rendered as HTML and Markdown.

    Table sections (``launches``, ``stops``, ``others``, ``overrides``) are lists of row
    dicts; ``progress`` holds best-so-far and regret points ``by_index`` and ``by_time``;
    ``compute`` and ``saved`` are the figures of the compute sections; ``tunable`` names the
    parameters the search varied.
    """

    agent_id: str
    objective: str
    project: str
    status: str
    spec: dict[str, Any]
    metric: str
    mode: str
    generated_at: float
    started_at: float | None
    duration_s: float | None
    real_clock: bool
    trials: list[TrialRow]
    best: list[TrialRow]
    finish: dict[str, Any] | None
    progress: dict[str, list[dict[str, Any]]]
    importance: dict[str, float]
    importance_note: str
    launches: list[dict[str, Any]]
    stops: list[dict[str, Any]]
    others: list[dict[str, Any]]
    overrides: list[dict[str, Any]]
    compute: dict[str, Any]
    saved: dict[str, Any]
    tunable: list[str] = field(default_factory=list)
    partial: bool = False
    """The trials' runs (on the server they logged to) could not be read: curves are the
    agent's tails. Such a report is written but not stored as an artifact, where it would
    replace a full one as ``latest``."""
    notes: list[str] = field(default_factory=list)

    @property
    def best_trial(self) -> TrialRow | None:
        return self.best[0] if self.best else None


# -- reading the graph ---------------------------------------------------------------------
def _control(root: Path) -> ControlStore:
    from ..store.control import LanceControlStore
    from ..store.ingest import IngestLock
    from ..store.lance import LanceStore

    return LanceControlStore(LanceStore(root), IngestLock(root))


def _runs(root: Path, project: str, ids: set[str], reader: Any = None) -> dict[str, Any]:
    from ..store.lance import LanceStore
    from ..store.records import run_from_row

    out = {}
    if reader is not None:  # the trials logged to a server
        for rid in sorted(ids):
            try:
                out[rid] = reader.run(rid)
            except NotFoundError:
                continue
        return out
    for row in LanceStore(root).runs_table(project).to_pylist():
        if row["run_id"] in ids:
            out[row["run_id"]] = run_from_row(row)
    return out


_PARTIAL = "\0partial"  # a marker among the notes: the trials' runs could not be read


def _server_reader(server: Any, notes: list[str], token: str | None = None) -> Any:
    """A reader of the server the agent's trials logged to (``$ASSAY_TOKEN`` for it), or None
    when they logged here, or when it cannot be asked (a note says why)."""
    if not server:
        return None
    from ..sdk.remote_api import RemoteReader

    try:
        return RemoteReader(str(server), token or os.environ.get("ASSAY_TOKEN") or None)
    except AssayError as exc:
        notes.append(_PARTIAL)
        notes.append(f"the trials logged to {server}, which cannot be read here "
                     f"({exc.message}): curves are the agent's tails of at most 20 points")
        return None


def _curves(root: Path, ids: list[str], metric: str,
            reader: Any = None) -> dict[str, list[tuple[float, float]]]:
    """Full curves of ``metric`` for runs ``ids``, in batched queries (not one per run);
    from ``reader`` (a :class:`~assay.sdk.remote_api.RemoteReader`) one run at a time."""
    from ..store.history import history_frame
    from ..store.lance import LanceStore, sql_str

    out: dict[str, list[tuple[float, float]]] = {}
    if reader is not None:
        for rid in ids:
            df = reader.history(rid, [metric])
            if df.height:
                out[rid] = list(zip(df["step"].cast(float).to_list(), df["value"].to_list()))
        return out
    tbl = LanceStore(root).table("metrics")
    if tbl is None or not ids:
        return out
    import pyarrow.compute as pc

    for i in range(0, len(ids), 200):
        part = ids[i:i + 200]
        where = (f"key = {sql_str(metric)} AND run_id IN ("
                 + ", ".join(sql_str(r) for r in part) + ")")
        got = (tbl.search().where(where).select(["run_id", "key", "seq", "step", "value", "time"])
               .limit(None).to_arrow())
        for rid in part:
            chunk = got.filter(pc.equal(got["run_id"], rid)).drop(["run_id"])
            if chunk.num_rows:
                df = history_frame(rid, chunk)
                out[rid] = list(zip(df["step"].cast(float).to_list(), df["value"].to_list()))
    return out


def build_report(data_dir: str | Path, agent_id: str, *, top_k: int = 5,
                 control: ControlStore | None = None, token: str | None = None) -> SweepReport:
    """Read an agent's sweep from the graph and compute everything its report shows.

    Args:
        data_dir: The data directory.
        agent_id: The agent (one objective's controller).
        top_k: How many of the best configurations to list.
        control: Where agents live (default: the data directory's LanceDB tables).
        token: For the server the agent's trials logged to, when they did (default
            ``$ASSAY_TOKEN``; a viewer's reads their curves).

    Raises:
        NotFoundError: when no such agent exists.
    """
    root = Path(data_dir)
    control = control or _control(root)
    row = control.get_agent(agent_id)
    if row is None:
        known = ", ".join(a.agent_id for a in control.list_agents()[:10]) or "none"
        raise NotFoundError(f"no agent {agent_id!r} in {root}",
                            hint=f"known agents: {known}; see `assay agents`")
    decisions = control.decisions(agent_id=agent_id)
    try:
        overrides = control.overrides(agent_id)
    except Exception:  # noqa: BLE001 - an old store without the table: decisions suffice
        overrides = []
    return _assemble(root, row, decisions, overrides, top_k, token)


def _assemble(root: Path, row: AgentRow, decisions: list[Decision], overrides: list[Any],
              top_k: int, token: str | None = None) -> SweepReport:
    spec = dict(row.spec)
    metric = str(spec.get("metric", ""))
    mode = str(spec.get("mode", "max"))
    sign = 1.0 if mode == "max" else -1.0
    state = dict(row.state)
    st_trials: dict[str, dict[str, Any]] = dict(state.get("trials", {}))
    ledger = dict(state.get("ledger") or {})
    notes: list[str] = []

    launches = [d for d in decisions if d.kind == "launch"]
    order = list(dict.fromkeys([d.trial_id for d in launches if d.trial_id in st_trials]
                               + list(st_trials)))
    times = [d.time for d in decisions]
    t0 = _h.as_float(ledger.get("started_at"))
    if t0 is None:
        t0 = min(times) if times else None
    real_clock = t0 is not None and t0 > 1e9
    ids = set(order)
    reader = _server_reader(state.get("runs_server"), notes, token) if ids else None
    try:
        runs = _runs(root, row.project, ids, reader) if ids else {}
        curves = _curves(root, [i for i in order if i in runs], metric, reader) if runs else {}
    except AssayError as exc:  # the server is away: the report still comes, with tails
        notes.append(_PARTIAL)
        notes.append(f"the trials' runs on {state.get('runs_server')} could not be read "
                     f"({exc.message}): curves are the agent's tails of at most 20 points; "
                     "set ASSAY_TOKEN to a token of that server (a viewer's reads) and write "
                     "the report again")
        runs, curves = {}, {}
    finally:
        if reader is not None:
            reader.close()
    if ids and not runs and not notes:
        where = "the store" if reader is None else f"the server {state.get('runs_server')}"
        notes.append(f"{where} has no runs for these trials (a simulated sweep?): curves "
                     "are the agent's tails of at most 20 points")

    by_trial_end: dict[str, float] = {}
    for d in decisions:
        if d.trial_id and (d.kind in ("complete", "stop", "fail") or (
                d.kind == "override" and d.explanation.get("action") == "stop_run")):
            by_trial_end.setdefault(d.trial_id, d.time)
    launch_of = {d.trial_id: d for d in launches}
    res = dict(spec.get("resources") or {})
    trials: list[TrialRow] = []
    for i, tid in enumerate(order, 1):
        st = st_trials[tid]
        run = runs.get(tid)
        curve = curves.get(tid) or [(float(s), float(v)) for s, v in st.get("curve", [])]
        status = str(st.get("status", ""))
        final = _h.as_float(st.get("final")) if status == "completed" else None
        last = next((v for _, v in reversed(curve) if math.isfinite(v)), None)
        acct = (ledger.get("runs") or {}).get(tid) or {}
        wall = _h.as_float(acct.get("wall_s")) or 0.0
        cpu = _h.as_float(acct.get("cpu_s")) or 0.0
        gpu = _h.as_float(acct.get("gpu_s")) or 0.0
        if not wall and run is not None and run.finished_at:
            wall = max(0.0, run.finished_at - run.created_at)
            cpu = wall * float(res.get("cpus", 1) or 0)
            gpu = wall * float(res.get("gpus", 0) or 0)
        ld = launch_of.get(tid)
        launched = ld.time if ld is not None else (run.created_at if run and real_clock else None)
        end: float | None = by_trial_end.get(tid)
        if run is not None and run.finished_at and real_clock:
            end = run.finished_at
        trials.append(TrialRow(
            trial_id=tid, index=i, config=dict(st.get("config", {})), status=status,
            final=final, last=last, curve=curve,
            method=str((ld.explanation.get("method") if ld else None) or st.get("origin", "")),
            launched_s=None if launched is None or t0 is None else launched - t0,
            ended_s=None if end is None or t0 is None else end - t0,
            wall_s=wall, cpu_s=cpu, gpu_s=gpu, run_name=run.name if run is not None else ""))

    done = [t for t in trials if t.final is not None]
    ranked = sorted(done, key=lambda t: -sign * (t.final or 0.0))
    finish = next((dict(d.explanation, summary=d.summary, time=d.time)
                   for d in reversed(decisions) if d.kind == "finish"), None)
    t_end = finish["time"] if finish else max(times, default=None)
    if finish is None and real_clock and str(row.status) in ("running", "paused"):
        t_end = time.time()  # a live sweep: as of now
    duration = None if t0 is None or t_end is None else max(0.0, t_end - t0)
    imp, imp_note = importance(trials, spec, mode)
    index_of = {t.trial_id: t.index for t in trials}
    keys = tunable(spec, trials)
    return SweepReport(
        agent_id=row.agent_id, objective=row.objective, project=row.project,
        status=str(row.status), spec=spec, metric=metric, mode=mode,
        generated_at=time.time(), started_at=t0, duration_s=duration, real_clock=real_clock,
        trials=trials, best=ranked[:top_k], finish=finish,
        progress=best_so_far(trials, mode),
        importance=imp, importance_note=imp_note,
        launches=_h.launch_rows(launches, index_of, t0, trials, keys),
        stops=_h.stop_rows(decisions, index_of, t0, trials),
        others=_h.other_rows(decisions, index_of, t0),
        overrides=_h.override_rows(overrides, decisions, t0),
        compute=compute_used(trials, spec, duration, ledger),
        saved=savings(trials, spec, mode, decisions), tunable=keys,
        notes=[n for n in notes if n != _PARTIAL], partial=_PARTIAL in notes)


# -- Markdown --------------------------------------------------------------------------------
def _md_cell(v: Any) -> str:
    s = v if isinstance(v, str) else _h.fmt_num(v)
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def render_markdown(r: SweepReport) -> str:
    """The report as Markdown: every section's figures as text and tables (no charts)."""
    from .report_html import compute_rows, describe_param, settings_rows

    s = r.spec
    L = [f"# Sweep report: {r.objective}", "",
         (f"Agent `{r.agent_id}` · project `{r.project}` · status **{r.status}** · "
         f"generated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.generated_at))}"), ""]
    b = r.best_trial
    if b is not None:
        cfg = ", ".join(f"{k}={_h.fmt_num(b.config.get(k))}" for k in r.tunable)
        L += [f"**Best {r.metric}: {_h.fmt_num(b.final)}** (trial #{b.index}, run `{b.trial_id}`"
              + (f" {b.run_name}" if b.run_name else "") + f") with {cfg or 'the fixed config'}", ""]
    else:
        L += ["No trial has completed: there is no best configuration yet.", ""]
    L += ["## Objective", ""]
    L += _md_table(["setting", "value"], [list(x) for x in settings_rows(r)])
    L += _md_table(["parameter", "search space"],
                   [[f"`{k}`", describe_param(v)] for k, v in dict(s.get("space", {})).items()])
    L += [f"## Best configurations (top {len(r.best)})", ""]
    L += _md_table(["rank", "trial", "run", r.metric, *r.tunable, "wall"],
                   [[str(i), f"#{t.index}", f"`{t.trial_id}`", t.final,
                     *[t.config.get(k) for k in r.tunable], _h.fmt_duration(t.wall_s)]
                    for i, t in enumerate(r.best, 1)])
    L += ["## Progress (best so far and regret)", "",
          "Regret is the gap between the best value found so far and the sweep's final best.", ""]
    L += _md_table(["trial", "value", "best so far", "regret", "ended"],
                   [[f"#{p['trial']}", p["value"], p["best"], p["regret"],
                     _h.fmt_when(p.get("t"))] for p in r.progress["by_index"]])
    L += ["## Parameter importance (fANOVA)", ""]
    if r.importance:
        L += _md_table(["parameter", "importance", ""],
                       [[f"`{k}`", f"{v:.1%}", "█" * max(1, round(v * 20))]
                        for k, v in r.importance.items()])
    if r.importance_note:
        L += [f"_{r.importance_note}_", ""]
    L += [f"## Launches ({len(r.launches)})", ""]
    L += _md_table(["when", "trial", "config", "why", "outcome"],
                   [[_h.fmt_when(x["t"]), f"#{x['index']}", x["config"], x["why"], x["outcome"]]
                    for x in r.launches])
    L += [f"## Early stops ({len(r.stops)})", ""]
    if r.stops:
        L += _md_table(["when", "trial", "rule", "at step", "value then", "predicted final",
                        "why"],
                       [[_h.fmt_when(x["t"]), f"#{x['index']}", x["rule"], x["step"], x["value"],
                         x["predicted"], x["message"]] for x in r.stops])
    else:
        L += ["No trial was stopped early.", ""]
    if r.others:
        L += ["## Other decisions", ""]
        L += _md_table(["when", "kind", "trial", "what"],
                       [[_h.fmt_when(x["t"]), x["kind"], x["trial"], x["summary"]]
                        for x in r.others])
    L += [f"## Supervisor overrides ({len(r.overrides)})", ""]
    if r.overrides:
        L += _md_table(["when", "actor", "action", "reason", "status", "result"],
                       [[_h.fmt_when(o["t"]), o["actor"], o["action"], o["reason"], o["status"],
                         o["result"]] for o in r.overrides])
    else:
        L += ["Nobody overrode this agent.", ""]
    L += ["## Compute used", ""]
    L += _md_table(["measure", "value"], [list(x) for x in compute_rows(r.compute)])
    v = r.saved
    L += ["## Compute saved by early stopping", ""]
    L += [v["headline"], ""]
    if v["stopped"]:
        L += _md_table(["trial", "points run", "points saved", "value then", "projected final",
                        "could beat best?"],
                       [[f"#{x['index']}", str(x["points"]), str(x["saved_points"]), x["value"],
                         x["projection"], "yes" if x["beats_best"] else "no"]
                        for x in v["stopped"]])
    L += [v["regret_note"], "", v["replay_note"], ""]
    if r.notes:
        L += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(L).rstrip() + "\n"


# -- writing and storing -------------------------------------------------------------------
def _store_artifact(root: Path, r: SweepReport, html: Path, md: Path,
                    link_trials: bool, server: str | None = None,
                    token: str | None = None) -> Any:
    """Store both files as an artifact produced by a new run ``report-<agent>``: in ``root``,
    or on ``server`` (``token``, default ``$ASSAY_TOKEN``: one that may log runs there)."""
    from .. import sdk

    with tempfile.TemporaryDirectory(dir=html.parent, prefix=".staging-") as tmp:
        for p in (html, md):
            shutil.copy2(p, Path(tmp) / p.name)
        b = r.best_trial
        run = sdk.init(r.project, name=f"report-{r.agent_id}", dir=root, tags=["report"],
                       config={"agent_id": r.agent_id, "objective": r.objective,
                               "trial_runs": [t.trial_id for t in r.trials]},
                       notes=f"sweep report of agent {r.agent_id}",
                       system_metrics_interval=0, capture=False, server=server, token=token)
        kw: dict[str, Any] = {
            "type": REPORT_TYPE,
            "description": f"sweep report of {r.objective} (agent {r.agent_id})",
            "metadata": {"agent_id": r.agent_id, "objective": r.objective,
                         "metric": r.metric, "mode": r.mode,
                         "best": b.final if b else None,
                         "best_run": b.trial_id if b else None,
                         "trial_runs": [t.trial_id for t in r.trials],
                         "files": [html.name, md.name]}}
        try:
            try:
                art = run.log_artifact(tmp, name=f"report-{r.objective}", **kw)
            except ConflictError:
                # Artifact names are shared by the data directory's projects: an objective of
                # the same name in another project owns report-<objective>.
                art = run.log_artifact(tmp, name=f"report-{r.project}-{r.objective}", **kw)
        except BaseException:
            run.finish("failed")
            raise
        run.finish()
    if link_trials:
        from ..sdk.graph import open_graph
        from ..store.lineage import add_edges, artifact_node, run_node

        g = open_graph(root)
        node = artifact_node(art.name, art.version)
        with g.lock:
            add_edges(g.store, [(run_node(t.trial_id), node, "summarized_in") for t in r.trials])
    return art


def write_report(data_dir: str | Path, agent_id: str, *, store: bool = True,
                 link_trials: bool = False, top_k: int = 5,
                 control: ControlStore | None = None, token: str | None = None,
                 server: str | None = None,
                 say: Callable[[bool, str], None] | None = None) -> Path:
    """Write an agent's sweep report and store it as an artifact; returns the HTML path.

    Writes ``<data_dir>/reports/<objective>-<agent_id>.html`` (one self-contained file:
    inline CSS and SVG, no scripts, no external references) and ``.md`` beside it.

    Args:
        data_dir: The data directory.
        agent_id: The agent whose sweep to report.
        store: Also store both files as artifact ``report-<objective>`` (type ``report``),
            produced by a run ``report-<agent_id>`` in the objective's project; the artifact's
            metadata lists the trial runs it covers.
        link_trials: Also add lineage edges ``run:<trial> -> artifact:report-...`` (kind
            ``summarized_in``). Off by default: ``assay verify`` recomputes a finished run's
            produced/used artifacts from every edge touching it, so edges added after a
            trial was sealed read as a change to its signed record.
        top_k: How many of the best configurations to list.
        control: Where the agent lives (default: the data directory; an agent whose trials
            log to a server lives there, :func:`assay.agents.runner.control_for`).
        token: The token for the server the trials logged to, and for ``server``.
        server: Store the artifact on this assay server (its run and version made with
            ``token``, default ``$ASSAY_TOKEN``: a researcher's), not in ``data_dir``; the
            files are written in ``data_dir`` all the same.
        say: Told ``(True, where it was stored)`` or ``(False, why it was not)``; without
            it, a report not stored is logged as a warning.
    """
    from ..sdk.settings import data_dir as resolve
    from .report_html import render_html

    if server and link_trials:
        raise UserInputError("link_trials adds lineage edges in the data directory; a report "
                             "stored on a server cannot have them",
                             hint="leave link_trials out with server=")
    root = resolve(data_dir)
    r = build_report(root, agent_id, top_k=top_k, control=control, token=token)
    out = root / "reports"
    out.mkdir(parents=True, exist_ok=True)
    html = out / f"{r.objective}-{r.agent_id}.html"
    md = html.with_suffix(".md")
    for path, text in ((html, render_html(r)), (md, render_markdown(r))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    where = (f"on {server}" if server else f"on {os.environ['ASSAY_SERVER']}"
             if os.environ.get("ASSAY_SERVER") else f"in {root}")  # as sdk.init picks
    if store and r.partial:
        why = ("the trials' runs could not be read (see its notes), and a stored report would "
               "replace a full one as latest; write it again with --server/--token")
        if say is not None:
            say(False, f"not stored as an artifact: {why}")
        else:
            log.warning("assay: report %s was written but not stored as an artifact: %s",
                        html, why)
    elif store:
        try:
            art = _store_artifact(root, r, html, md, link_trials, server, token)
        except Exception as exc:  # the files are written; a failed store must not fail the sweep
            if say is None:
                log.warning("assay: report %s was written but not stored as an artifact", html,
                            exc_info=True)
            elif isinstance(exc, AssayError):
                say(False, f"not stored as an artifact {where}: {exc.message}"
                           + (f" (hint: {exc.hint})" if exc.hint else ""))
            else:
                say(False, f"not stored as an artifact {where}: {type(exc).__name__}: {exc}")
        else:
            if say is not None:
                say(True, f"stored as artifact {art.name}:v{art.version} {where}")
    return html


def report_command(objective_or_agent: str, dir: Path | None = None,
                   out: Path | None = None, *, server: str | None = None,
                   token: str | None = None,
                   say: Callable[[bool, str], None] | None = None) -> Path:
    """``assay report OBJECTIVE``: write (and store) the report of an agent, named by its id or
    by its objective's name (the most recently updated agent of that objective).

    Args:
        objective_or_agent: An agent id or an objective name.
        dir: The data directory (default ``$ASSAY_DIR``, else ``~/.assay``).
        out: Also copy the report there: a ``.html`` file path (the ``.md`` goes beside it)
            or a folder.
        server: Read the agent from this ``assay server`` (an agent whose trials logged
            there lives there), with ``token`` (default ``$ASSAY_TOKEN``), and store the
            report's artifact there (a viewer's token cannot: the files are still written);
            the files are written under ``dir``.
        say: Told where the artifact was stored, or why not (see :func:`write_report`).

    Returns:
        The HTML report's path (the copy under ``out`` when given).

    Raises:
        NotFoundError: when neither an agent nor an objective has that name.
    """
    from ..sdk.settings import data_dir

    root = data_dir(dir)
    if server:
        from ..store.control_remote import RemoteControlStore

        control: ControlStore = RemoteControlStore(
            server, token or os.environ.get("ASSAY_TOKEN") or None)
    else:
        control = _control(root)
    row = control.get_agent(objective_or_agent)
    if row is None:
        agents = [a for a in control.list_agents() if a.objective == objective_or_agent]
        if not agents:
            names = sorted({a.objective for a in control.list_agents()})
            raise NotFoundError(f"no agent or objective named {objective_or_agent!r} "
                                f"{f'on {server}' if server else f'in {root}'}",
                                hint=("objectives: " + ", ".join(names[:20])) if names
                                else "run an objective first: assay run objective.yaml")
        row = max(agents, key=lambda a: a.updated_at)
    html = write_report(root, row.agent_id, control=control, token=token, server=server,
                        say=say)
    if out is None:
        return html
    out = Path(out).expanduser()
    if out.suffix.lower() in (".html", ".htm"):
        out.parent.mkdir(parents=True, exist_ok=True)
        dest = out
    else:
        out.mkdir(parents=True, exist_ok=True)
        dest = out / html.name
    shutil.copyfile(html, dest)
    shutil.copyfile(html.with_suffix(".md"), dest.with_suffix(".md"))
    return dest
