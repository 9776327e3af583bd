"""The ``assay`` command line."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .api.cli import ServerOpt, TokenOpt  # shared with `assay artifact ...`
from .errors import AssayError, NotFoundError, UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="assay: experiment tracking and research agents, self-hosted.")
console = Console(width=None if sys.stdout.isatty() else 160)
# Errors are not wrapped: a path or a command in one must stay whole to be copied (the
# terminal wraps them; a log keeps them on one line).
err_console = Console(stderr=True, soft_wrap=True)

def _register_server_commands() -> None:
    from .api.cli import artifact_app, token_app
    from .api.cli import server as _server_command

    app.add_typer(token_app, name="token")
    app.add_typer(artifact_app, name="artifact")
    app.command("server")(_server_command)


_register_server_commands()

DirOpt = Annotated[Path | None, typer.Option("--dir", help="data directory (default: $ASSAY_DIR or ~/.assay)")]


def _fail(exc: AssayError) -> None:
    from rich.markup import escape  # "[low, high]" in a message is text, not markup

    err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {escape(exc.hint)}")
    raise typer.Exit(2)


def _existing(dir: Path | None) -> Path:
    """The data directory of a command that reads or maintains data: refused (exit 2) when
    it is not one, so a mistyped --dir or $ASSAY_DIR never creates an empty directory and a
    new key pair. Only `assay run`, `assay server`, `assay token create` and logging a run
    start a new one."""
    from .sdk.api import existing_data_dir

    try:
        return existing_data_dir(dir)
    except AssayError as e:
        _fail(e)
        raise  # unreachable: _fail exits


def _api(dir: Path | None, server: str | None = None, token: str | None = None, *,
         timeout: float = 30.0) -> Any:
    """The Api a command reads through (:func:`assay.api.cli.open_api`); refused: exit 2."""
    from .api.cli import open_api

    try:
        return open_api(dir, server, token, timeout=timeout)
    except AssayError as e:
        _fail(e)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.6g}"
    return "" if v is None else str(v)


@app.command()
def runs(project: Annotated[str | None, typer.Option("--project", "-p")] = None,
         dir: DirOpt = None,
         limit: Annotated[int, typer.Option(help="newest N runs")] = 50,
         status: Annotated[list[str] | None, typer.Option(
             "--status", "-s", help="only runs with this status (repeatable)")] = None,
         tag: Annotated[list[str] | None, typer.Option(
             "--tag", "-t", help="only runs with this tag (repeatable: all of them)")] = None,
         group: Annotated[str | None, typer.Option("--group", "-g")] = None,
         sort: Annotated[str | None, typer.Option(
             help="sort by a column or metric (val/acc, config.lr, created_at; -val/acc "
                  "descending) and list the first N")] = None,
         server: ServerOpt = None, token: TokenOpt = None) -> None:
    """List runs, newest last (or in --sort order, the first N), with their status and
    summary."""
    api = _api(dir, server, token)
    root = api.server or api.dir
    import logging

    from .sdk.frames import no_runs_warning

    api_log = logging.getLogger("assay.sdk.api")  # its did-you-mean is printed below
    was, api_log.disabled = api_log.disabled, True
    try:
        df = api.runs(project=project)
        known = api.projects() if df.height == 0 and project else []
    except AssayError as e:
        _fail(e)
    finally:
        api_log.disabled = was
    if df.height == 0:
        if not project:
            console.print("no runs yet")
            return
        said = no_runs_warning(project, known)
        console.print(said or f"no runs yet in project {project!r} (none in any project)")
        return
    df = _filter_and_sort(df, status, tag, group, sort)
    if df.height == 0:
        console.print("no runs match")
        return
    df = df.head(limit) if sort else df.tail(limit)
    metric_cols = [c for c in df.columns if c.startswith("summary.")
                   and not c.startswith("summary.sys/")][:4]
    if sort and sort.lstrip("-") not in ("created_at", "updated_at", "name", "status") and \
            _column(df, sort.lstrip("-")) not in metric_cols:
        metric_cols = [_column(df, sort.lstrip("-")), *metric_cols][:4]
    t = Table(title=f"runs in {root}" if project is None else f"runs of {project}")
    cols = ["run_id", *(["project"] if project is None else []), "name", "status", "last_step",
            *metric_cols]
    for c in cols:
        t.add_column(c.removeprefix("summary."), overflow="fold")
    for row in df.iter_rows(named=True):
        t.add_row(*[_fmt(row.get(c)) for c in cols])
    console.print(t)


def _column(df: Any, name: str) -> str:
    """A column of the runs frame by its name, or a metric's (``val/acc``: its summary)."""
    if name in df.columns:
        return name
    if f"summary.{name}" in df.columns:
        return f"summary.{name}"
    import difflib

    known = [c.removeprefix("summary.") for c in df.columns]
    close = difflib.get_close_matches(name, known, n=1)
    _fail(UserInputError(f"no column or metric {name!r} to sort by"
                         + (f"; did you mean {close[0]!r}?" if close else ""),
                         hint="a metric (val/acc), config.KEY, or one of: created_at, "
                              "updated_at, name, status, last_step"))
    raise AssertionError  # unreachable: _fail exits


def _filter_and_sort(df: Any, status: list[str] | None, tags: list[str] | None,
                     group: str | None, sort: str | None) -> Any:
    import polars as pl

    if status:
        df = df.filter(pl.col("status").is_in(status))
    for t in tags or ():
        df = df.filter(pl.col("tags").list.contains(t))
    if group is not None:
        df = df.filter(pl.col("group") == group)
    if sort:
        df = df.sort(_column(df, sort.lstrip("-")), descending=sort.startswith("-"),
                     nulls_last=True)
    return df


@app.command()
def show(run_id: str, dir: DirOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False,
         server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Show one run: status, config, summary, git and environment."""
    api = _api(dir, server, token)
    try:
        r = api.run(run_id)
    except AssayError as e:
        _fail(e)
    rec: dict[str, Any] = {
        "run_id": r.run_id, "project": r.project, "name": r.name, "status": str(r.status),
        "group": r.group, "tags": list(r.tags), "notes": r.notes, "last_step": r.last_step,
        "config": r.config, "summary": r.summary_values(),
        "git": {k: v for k, v in r.git.items()},
        "env": {k: v for k, v in r.env.items() if k not in ("packages", "environ")},
        "packages": len(r.env.get("packages", [])), "error": r.error,
    }
    if as_json:
        sys.stdout.write(json.dumps(rec, indent=2, default=str) + "\n")
        return
    console.print(f"[bold]{r.name}[/] ({r.run_id}) in [bold]{r.project}[/]: {r.status}")
    end = r.finished_at if r.finished_at else r.updated_at
    took = f", {timedelta(seconds=round(end - r.created_at))}" if end and r.created_at else ""
    console.print(f"  step {r.last_step}{took}" + (f", group {r.group}" if r.group else "") +
                  (f", tags {', '.join(r.tags)}" if r.tags else ""))
    if r.notes:
        console.print(f"  notes: {r.notes}")
    from rich.markup import escape  # values and tracebacks are text ("[0.1, 0.2]")

    for section in ("config", "summary", "git", "env"):
        console.print(f"[bold]{section}[/]")
        for k, v in rec[section].items():
            console.print(f"  {escape(str(k))}: {escape(_fmt(v))}")
    if r.error:
        console.print(f"[bold red]error[/]\n{escape(r.error)}")


@app.command()
def sync(dir: DirOpt = None,
         timeout: Annotated[float, typer.Option(help="seconds to wait for the ingest lock")] = 60.0,
         server: Annotated[str | None, typer.Option(help="assay server to ship remote runs' outbox to (default $ASSAY_SERVER)")] = None,
         token: Annotated[str | None, typer.Option(help="researcher token (default $ASSAY_TOKEN)")] = None) -> None:
    """Ingest write-ahead logs left by crashed or killed runs (idempotent)."""
    from .store.ingest import sync_orphans
    from .store.ingestd import local_ingester

    root = _existing(dir)
    store, lock, ingester = local_ingester(root)
    try:
        st = sync_orphans(root, store, lock, ingester, timeout=timeout)
    except AssayError as e:
        _fail(e)
    console.print(f"synced {len(st.segments_done)} WAL segment(s): {st.records} records, "
                  f"{st.points} points, {st.runs} run(s)"
                  + (f"; skipped {st.torn_bytes} torn bytes" if st.torn_bytes else ""))
    for path in st.failed:
        err_console.print(f"[bold red]not ingested[/] {path}: kept (see the log above); "
                          "nothing in it is lost")

    srv = server or os.environ.get("ASSAY_SERVER")
    if srv:
        from .sdk.remote import sync_outbox

        done = sync_outbox(root, srv, token or os.environ.get("ASSAY_TOKEN"), timeout=timeout)
        console.print(f"shipped {sum(done.values())}/{len(done)} outbox segment(s) to {srv}")
    if st.failed:
        raise typer.Exit(1)


@app.command()
def compact(dir: DirOpt = None,
            keep_versions_minutes: Annotated[float, typer.Option(help="keep table versions younger than this")] = 10.0) -> None:
    """Compact the store's tables, refresh indices and drop old table versions."""
    from .store.ingest import IngestLock
    from .store.lance import LanceStore

    root = _existing(dir)
    store = LanceStore(root)
    before = store.table_stats()
    with IngestLock(root):
        store.compact(cleanup_older_than=timedelta(minutes=keep_versions_minutes))
    after = store.table_stats()
    for name, s in after.items():
        b = before.get(name, {})
        console.print(f"{name}: {s['rows']} rows, fragments {b.get('fragments')} -> "
                      f"{s['fragments']}, version {s['version']}")


@app.command()
def artifacts(project: Annotated[str | None, typer.Option("--project", "-p")] = None,
              name: Annotated[str | None, typer.Option("--name", "-n")] = None,
              dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """List artifact versions with their aliases, digests and producing runs."""
    api = _api(dir, server, token)
    try:
        df = api.artifacts(project=project, name=name)
    except AssayError as e:
        _fail(e)
    if df.height == 0:
        console.print("no artifacts yet")
        return
    t = Table(title="artifacts")
    for c in ("name", "version", "type", "aliases", "files", "size", "digest", "created_by"):
        t.add_column(c, overflow="fold")
    for r in df.iter_rows(named=True):
        t.add_row(r["name"], f"v{r['version']}", r["type"], ",".join(r.get("aliases") or []),
                  str(r["files"]), str(r["size"]), r["digest"][:23] + "…", r["created_by"])
    console.print(t)


@app.command()
def lineage(spec: Annotated[str, typer.Argument(help="NAME:VERSION, NAME:ALIAS or run:RUN_ID")],
            down: Annotated[bool, typer.Option("--down", help="what was built on it (impact)")] = False,
            depth: Annotated[int | None, typer.Option(help="hops at most")] = None,
            dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Show what an artifact version or run was made from (or, with --down, what used it)."""
    api = _api(dir, server, token)
    try:
        nodes, edges = api.lineage(spec, direction="down" if down else "up", depth=depth)
    except AssayError as e:
        _fail(e)
    console.print(f"[bold]{'downstream of' if down else 'upstream of'} {spec}[/]: "
                  f"{nodes.height} nodes, {edges.height} edges")
    for r in nodes.sort("depth").iter_rows(named=True):
        console.print(f"  {'  ' * r['depth']}{r['id']}")
    for r in edges.iter_rows(named=True):
        console.print(f"  [dim]{r['src']} -{r['kind']}-> {r['dst']}[/]")


#: FAIL lines ``assay verify`` prints per reason; the rest of the same reason are counted.
SHOWN_PER_REASON = 5
_RECORD_PREFIX = re.compile(r"record #-?\d+ \([^)]*\): ")


def _reason_kind(problem: Any) -> str:
    """A problem's reason without the record it names (``record #3 (run abc): ``), which
    records that fail for the same reason (a wrong pinned key: every one) share."""
    return _RECORD_PREFIX.sub("", str(problem.reason), count=1)


def _print_problems(problems: list[Any], *, pinned: bool = False) -> None:
    """One FAIL line per problem, but at most ``SHOWN_PER_REASON`` of each reason (then how
    many more). Where a pinned key is not the data directory's and every other problem is a
    record that does not verify against it, the key problem and one line counting them."""
    from rich.markup import escape

    def fail(text: str) -> None:
        err_console.print(f"[bold red]FAIL[/] {escape(text)}")

    keys = [p for p in problems if p.chain == "key"]
    rest = [p for p in problems if p.chain != "key"]
    if pinned and keys and rest and all(
            _reason_kind(p).startswith("signature does not verify") for p in rest):
        for p in keys:
            fail(str(p))
        fail(f"{len(rest)} record(s) do not verify against the pinned key (first: {rest[0]})")
        return
    hidden: dict[str, list[Any]] = {}  # reason -> the problems beyond the first few
    shown: dict[str, int] = {}
    for p in problems:
        kind = _reason_kind(p)
        shown[kind] = shown.get(kind, 0) + 1
        if shown[kind] <= SHOWN_PER_REASON:
            fail(str(p))
        else:
            hidden.setdefault(kind, []).append(p)
    for kind, more in hidden.items():
        # The records they name still count (helper-66: the runs past the fifth were lost).
        names = sorted({f"{p.chain} {p.subject_id}" for p in more})
        err_console.print(f"  ... and {len(more)} more with the same reason ({escape(kind)}): "
                          + escape(", ".join(names[:50]))
                          + (f" and {len(names) - 50} more" if len(names) > 50 else ""))


@app.command()
def verify(run_id: Annotated[str | None, typer.Argument(help="one run (default: all)")] = None,
           dir: DirOpt = None,
           public_key: Annotated[Path | None, typer.Option(
               "--public-key", help="PEM file from `assay export-key`: verify against this "
                                    "pinned key, not the data directory's")] = None,
           checkpoint: Annotated[list[Path] | None, typer.Option(
               "--checkpoint", help="file from `assay checkpoint`; the chains must still "
                                    "extend it (repeatable)")] = None,
           server: Annotated[str | None, typer.Option(
               "--server", help="ask this assay server to check its data directory (with "
                                "its own key: only as trustworthy as the server)")] = None,
           token: TokenOpt = None) -> None:
    """Recompute and check the signed records of finished runs and the audit log.

    Exits 1 and names each record that fails (changed metric values or steps, config,
    summary values, status, artifact bytes, code and environment, removed or reordered
    records, bad signatures, error text, metric times, summary min/max): the first 5 of
    each reason, then how many more (a wrong --public-key: the key and a count). Not
    sealed: tags and notes, which people edit after a run ends.

    By default the check uses the data directory's own key, so it catches changes made
    without that key, not by someone who can write the directory. Anchors kept outside close
    that gap: --public-key FILE (saved earlier from `assay export-key`) catches a replaced key
    pair and everything re-signed with it; --checkpoint FILE (saved earlier from `assay
    checkpoint`) catches a chain or the audit log cut short or rewritten up to the point the
    checkpoint noted (a run resumed later is sealed again and checked against that seal).
    Exits 2 on a missing or invalid key or checkpoint file.

    --server URL asks that server to run the same check on its data directory, with its own
    key: proof of nothing the server itself could have changed. The anchors are for a check
    made here, where the data directory is, and are refused with --server."""
    from .sdk.api import Api

    if server is not None and (public_key is not None or checkpoint):
        _fail(UserInputError(
            "--public-key and --checkpoint anchor a check made here, of a data directory on "
            "this machine; with --server the server checks itself, with its own key",
            hint="run `assay verify --public-key FILE --checkpoint FILE --dir DIR` where the "
                 "data directory is; or leave them out to ask the server"))
    if server is None and token is not None:
        _fail(UserInputError("--token is for --server", hint="leave --token out, or pass --server"))
    total = None
    try:
        if server is not None:
            checked, problems, total = _verify_on_server(run_id, dir, server, token)
        else:
            checked, problems = Api(_existing(dir)).verify(run_id, public_key=public_key,
                                                           checkpoint=checkpoint)
    except AssayError as e:
        _fail(e)
    on_server = "" if server is None else (
        f"checked by the server {server.strip().rstrip('/')}, on its data directory with its "
        "own key: the answer is only as trustworthy as that server (for a check of your own, "
        "run `assay verify --public-key FILE` where the data directory is)")
    if problems:
        _print_problems(problems, pinned=public_key is not None)
        count = total if total is not None else len(problems)
        listed = (f" (the server listed the first {len(problems)})"
                  if count > len(problems) else "")
        err_console.print(f"{count} problem(s) in {checked} record(s) checked{listed}")
        if on_server:
            err_console.print(on_server)
        raise typer.Exit(1)
    what = "" if run_id else " and the audit log"  # one run's check skips the audit log
    anchors = []
    if public_key is not None:
        anchors.append("against the pinned key")
    if checkpoint:
        anchors.append(f"extending {len(checkpoint)} checkpoint(s)")
    console.print(f"OK: {checked} run record(s){what} verify" +
                  (f" ({', '.join(anchors)})" if anchors else ""))
    if on_server:
        console.print(on_server)


#: Seconds ``assay verify --server`` waits for the answer: the server recomputes every
#: record it checks (metric digests, artifact bytes).
VERIFY_SERVER_TIMEOUT = float(os.environ.get("ASSAY_VERIFY_SERVER_TIMEOUT", "600"))


def _verify_on_server(run_id: str | None, dir: Path | None, server: str,
                      token: str | None) -> tuple[int, list[Any], int]:
    """``GET /api/verify`` (recomputed, not a cached answer): (records checked, the problems
    the server listed, how many it found)."""
    from .sdk.remote_api import _RUNS_HINT, _odd_answer
    from .store.provenance import Problem

    api = _api(dir, server, token, timeout=VERIFY_SERVER_TIMEOUT)
    reader = api._reader()
    try:
        params: dict[str, Any] = {"fresh": "true"}
        if run_id is not None:
            reader._check_run(run_id)
            params["run_id"] = run_id
        body = reader._get("/api/verify", params, not_found_hint=_RUNS_HINT)
    finally:
        api.close()
    try:
        problems = [Problem(str(p["chain"]), str(p["subject_id"]), int(p["seq"]),
                            str(p["reason"])) for p in body["problems"]]
        return int(body["checked"]), problems, int(body.get("problem_count", len(problems)))
    except (KeyError, TypeError, ValueError) as exc:
        raise _odd_answer(api.server, "/api/verify") from exc


@app.command()
def checkpoint(out: Annotated[Path | None, typer.Option(
                   "--out", "-o", help="write it to this file (default: print it)")] = None,
               dir: DirOpt = None) -> None:
    """Write a signed checkpoint: every chain's length and head hash, the key id and the time.

    Keep it outside the data directory (or publish it); `assay verify --checkpoint FILE`
    later proves that no run chain and not the audit log was truncated or rewritten up to
    it."""
    from .sdk.api import Api

    root = _existing(dir)
    try:
        cp = Api(root).checkpoint(out)
    except AssayError as e:
        _fail(e)
    if out is None:
        sys.stdout.write(cp.to_json())
        return
    console.print(f"wrote a checkpoint of {len(cp.heads)} chain(s), signed by {cp.key_id}, "
                  f"to {out}")
    if out.expanduser().resolve().is_relative_to(root):
        err_console.print("[yellow]warning:[/] the checkpoint is inside the data directory; "
                          "whoever can rewrite the data can rewrite it too: keep a copy "
                          "elsewhere")


@app.command("export-key")
def export_key(dir: DirOpt = None) -> None:
    """Print the data directory's public key (PEM), for third parties to verify records.

    A path that is not a data directory is refused (exit 2): a typo must never print a
    brand-new key in place of the one to pin."""
    from .store.signing import PRIVATE_KEY_FILE, KeyPair

    root = _existing(dir)
    try:
        if not (root / PRIVATE_KEY_FILE).exists():
            # A key made now would sign nothing yet, and look like the one to pin.
            raise NotFoundError(f"{root} has no signing key yet: no run has been sealed there",
                                hint="export the key once the directory holds a finished run "
                                     "(or from the directory that signs this one's records)")
        sys.stdout.write(KeyPair.load_or_create(root).export_public_key())
    except AssayError as e:
        _fail(e)


@contextmanager
def live_progress(objective: Any) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A live table of an objective's progress; yields the ``on_progress`` callback."""
    from rich.live import Live

    with Live(console=console, refresh_per_second=2, transient=False) as live:
        yield lambda snap: live.update(_progress_table(snap, objective))
    if not console.is_terminal:  # piped or logged: rich ends the last frame without a newline
        console.line()


def _progress_table(snap: dict[str, Any], objective: Any) -> Table:
    t = Table(title=f"{objective.name}: agent {snap['agent_id']} ({snap['status']})")
    for c in ("running", "completed", "stopped", "failed", "budget left", f"best {objective.metric}",
              "best config"):
        t.add_column(c, overflow="fold")
    c = snap.get("counts", {})
    best = snap.get("best") or {}
    rem = snap.get("remaining", {})
    left = rem.get("trials")
    t.add_row(str(c.get("running", 0) + c.get("pending", 0)), str(c.get("completed", 0)),
              str(c.get("stopped", 0)), str(c.get("failed", 0)),
              "-" if left is None else f"{left} trials", _fmt(best.get("value")),
              json.dumps(best.get("config")) if best else "")
    return t


def _say_which_agent(root: Path, agent_id: str) -> None:
    """Print whether ``--agent-id`` resumes a saved agent or names a new one (a typo in a
    resumed id would otherwise start a whole new sweep without a word)."""
    from .agents.runner import check_trials_server, trials_server
    from .sdk.remote import public_url

    try:
        row = check_trials_server(root, agent_id)
    except AssayError as e:
        _fail(e)
    if row is not None:
        n = len(row.state.get("trials") or {})
        console.print(f"resuming agent {agent_id} ({row.status}, {n} trial(s) so far)")
        return
    server = trials_server()
    where = f"in {root}" + (f" or on {public_url(server)}" if server else "")
    console.print(f"[yellow]no agent {agent_id} {where}[/]: starting a new agent with that "
                  "id (to resume one, check the id with `assay agents`; one kept on a server "
                  "needs $ASSAY_SERVER and $ASSAY_TOKEN exported)")


@app.command("run")
def run_cmd(objective: Annotated[Path, typer.Argument(help="objective YAML file")],
            dir: DirOpt = None,
            address: Annotated[str | None, typer.Option(help="join a Ray cluster ('auto', 'ray://...')")] = None,
            agent_id: Annotated[str | None, typer.Option("--agent-id", help=(
                "resume this agent (saved here, or on $ASSAY_SERVER when set), or give a new "
                "agent this id; which one it is, is printed first"))] = None,
            detach: Annotated[bool, typer.Option(help="run in the background and return")] = False,
            new_agent: Annotated[bool, typer.Option(
                "--new-agent", hidden=True,
                help="--agent-id names a new agent (a detached run, a server's)")] = False) -> None:
    """Run a research objective: an agent on Ray launches, watches and stops trials until the
    budget is spent, then prints the best config and the sweep report."""
    import secrets
    import subprocess

    from .agents.objective import Objective
    from .sdk.settings import data_dir

    try:
        obj = Objective.from_yaml(objective)
    except AssayError as e:
        _fail(e)
    root = data_dir(dir)
    if agent_id and not new_agent:
        _say_which_agent(root, agent_id)
    if detach:
        from .agents.runner import check_resources, check_trials_server

        try:  # refused now, not in the background agent's log
            check_resources(obj, address=address, running=False)
            check_trials_server(root, agent_id)
        except AssayError as e:
            _fail(e)
        aid = agent_id or "ag" + secrets.token_hex(5)
        (root / "logs").mkdir(exist_ok=True)
        log_path = root / "logs" / f"agent-{aid}.log"
        cmd = [sys.executable, "-m", "assay.cli", "run", str(objective.resolve()), "--dir",
               str(root), "--agent-id", aid, *(["--address", address] if address else []),
               *([] if agent_id else ["--new-agent"])]
        with open(log_path, "ab") as out:
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, env={**os.environ, "COLUMNS": "160"})
        from .agents.runner import trials_server
        from .sdk.remote import public_url

        server = trials_server()  # the agent lives there (a server too old to: here)
        where = (f" --server {public_url(server)}" if server
                 else f" --dir {root}" if dir is not None else "")
        console.print(f"agent {aid} started in the background; log: {log_path}\n"
                      f"watch it with `assay agents{where}`; pause/stop with "
                      f"`assay pause {aid} -r \"why\"{where}`")
        return
    from .agents.runner import run_objective

    seen: dict[str, Any] = {"agent_id": agent_id}

    def progress(snap: dict[str, Any]) -> None:
        seen["agent_id"] = snap.get("agent_id") or seen["agent_id"]
        draw(snap)

    with live_progress(obj) as draw:
        try:
            res = run_objective(obj, dir=root, address=address, agent_id=agent_id,
                                on_progress=progress)
        except AssayError as e:
            _fail(e)
        except KeyboardInterrupt:  # helper-67: it ended silently, nothing said how to go on
            aid = seen["agent_id"]
            where = f" --dir {root}" if dir is not None else ""
            err_console.print(
                "interrupted: " + (f"agent {aid} keeps its trials and budget; resume it with "
                                   f"`assay run {objective}{where} --agent-id {aid}` (its "
                                   "running trials are relaunched)" if aid else
                                   "no agent had started yet"))
            raise typer.Exit(130) from None
    console.print(f"[bold]best {obj.metric}[/]: {_fmt(res.best_value)} (run {res.best_run})")
    console.print(f"[bold]best config[/]: {json.dumps(res.best_config)}")
    if res.report:
        console.print(f"[bold]sweep report[/]: {res.report}")
    where = f" --dir {root}" if dir is not None else ""
    runs_at = f" --server {res.runs_server}" if res.runs_server else where
    agent_at = f" --server {res.agent_server}" if res.agent_server else where
    console.print(f"decisions: `assay decisions {res.agent_id}{agent_at}`; runs: "
                  f"`assay runs -p {obj.project}{runs_at}`")


@app.command()
def report(objective: Annotated[str, typer.Argument(help="objective name or agent id")],
           dir: DirOpt = None,
           out: Annotated[Path | None, typer.Option(help="an .html path or a folder")] = None,
           server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Write the sweep report (self-contained HTML + Markdown), stored as an artifact. An
    agent whose trials logged to a server is read there (--server), and its report stored
    there (a viewer's token cannot: the files are written all the same, with a warning)."""
    from rich.markup import escape

    from .agents.report import report_command
    from .sdk.settings import data_dir

    root = data_dir(dir) if server else _existing(dir)
    told: list[tuple[bool, str]] = []
    try:
        path = report_command(objective, dir=root, out=out, server=server, token=token,
                              say=lambda stored, text: told.append((stored, text)))
    except AssayError as e:
        _fail(e)
    console.print(f"report: {path}\nsummary: {path.with_suffix('.md')}")
    for stored, text in told:
        if stored:
            console.print(escape(text))
        else:
            err_console.print(f"[yellow]warning:[/] the report was written but {escape(text)}")


@app.command()
def agents(project: Annotated[str | None, typer.Option("--project", "-p")] = None,
           dir: DirOpt = None, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """List agents with their objective, status and progress."""
    api = _api(dir, server, token)
    try:
        df = api.agents(project)
    except AssayError as e:
        _fail(e)
    if df.height == 0:
        console.print("no agents yet")
        return
    t = Table(title="agents")
    for c in ("agent_id", "objective", "project", "status", "trials", "best"):
        t.add_column(c, overflow="fold")
    for a in df.iter_rows(named=True):
        t.add_row(a["agent_id"], a["objective"], a["project"], a["status"],
                  str(a["trials_total"]), _fmt(a["best_value"]))
    console.print(t)


@app.command()
def decisions(agent_id: str, dir: DirOpt = None,
              limit: Annotated[int, typer.Option(help="newest N (0: all)")] = 50,
              kind: Annotated[str | None, typer.Option(
                  "--kind", "-k", help="only this kind (launch, stop, fail, complete, ...)")] = None,
              as_json: Annotated[bool, typer.Option(
                  "--json", help="one JSON object per line, with the evidence")] = False,
              server: ServerOpt = None, token: TokenOpt = None) -> None:
    """An agent's decisions (launch, stop, override, ...) with their reasons, oldest first;
    a launch shows its config, a failure the end of its error."""
    api = _api(dir, server, token)
    try:
        ds = api.decisions(agent_id, kind=kind, limit=limit if limit > 0 else None)
    except AssayError as e:
        _fail(e)
    if as_json:
        for d in ds.iter_rows(named=True):
            d["explanation"] = json.loads(d["explanation"] or "{}")
            sys.stdout.write(json.dumps(d, default=str) + "\n")
        return
    if ds.height == 0:
        console.print("no decisions" + (f" of kind {kind!r}" if kind else ""))
        return
    from rich.markup import escape

    t = Table(box=None, show_edge=False, pad_edge=False)
    for c in ("time (UTC)", "kind", "trial", "why"):
        t.add_column(c, overflow="fold")
    for d in ds.iter_rows(named=True):
        ev = json.loads(d["explanation"] or "{}")
        why = d["summary"]
        if d["kind"] == "launch" and isinstance(ev.get("config"), dict):
            why += " " + " ".join(f"{k}={_fmt(v)}" for k, v in ev["config"].items())
        elif d["kind"] == "fail" and ev.get("error"):
            lines = [ln for ln in str(ev["error"]).strip().splitlines() if ln.strip()]
            why += f" ({lines[-1][:200]})" if lines and lines[-1] not in why else ""
        when = d["time"].strftime("%Y-%m-%d %H:%M:%S") if d["time"] is not None else ""
        t.add_row(when, d["kind"], d["trial_id"] or "", escape(why))
    console.print(t)


def _override(agent_id: str, action: str, params: dict[str, Any], reason: str,
              dir: Path | None, server: str | None = None, token: str | None = None) -> None:
    api = _api(dir, server, token)
    if not reason.strip():
        _fail(UserInputError("an override needs a reason",
                             hint='pass -r "why": it goes into the audit trail and the '
                                  "agent's decisions"))
    import getpass

    try:
        actor = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (some containers)
        actor = "cli"
    try:
        if action == "stop_run":
            sent = api.stop_run(params["trial_id"], reason=reason, actor=actor)
        else:
            sent = api.override(agent_id, action, params, reason=reason, actor=actor)
    except AssayError as e:
        _fail(e)
    console.print(f"{action} sent to agent {sent['agent_id']} (override {sent['override_id']}); "
                  "it applies at the agent's next step")


ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="why (goes into the audit log)")]


@app.command()
def pause(agent_id: str, reason: ReasonOpt = "", dir: DirOpt = None,
          server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Pause an agent: no new trials; running ones go on."""
    _override(agent_id, "pause", {}, reason, dir, server, token)


@app.command()
def resume(agent_id: str, reason: ReasonOpt = "", dir: DirOpt = None,
           server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Resume a paused agent."""
    _override(agent_id, "resume", {}, reason, dir, server, token)


@app.command()
def stop(agent_id: str, reason: ReasonOpt = "", dir: DirOpt = None,
         server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Stop an agent and its running trials."""
    _override(agent_id, "stop", {}, reason, dir, server, token)


@app.command("stop-run")
def stop_run(run_id: str, reason: ReasonOpt = "", dir: DirOpt = None,
             server: ServerOpt = None, token: TokenOpt = None) -> None:
    """Stop one running trial (its agent stops it at its next step)."""
    _override("", "stop_run", {"trial_id": run_id}, reason, dir, server, token)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
