"""``assay.Api``: read runs, configs, summaries and metric histories as polars DataFrames."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import polars as pl

from ..errors import ConflictError, NotFoundError, UserInputError
from ..store.history import history_frame
from ..store.lance import LanceStore
from ..store.records import RunRecord, run_from_row
from .frames import (
    check_run_id_arg,
    filter_runs,
    history_keys,
    no_runs_warning,
    run_row,
    runs_frame,
    warn_missing_keys,
)
from .settings import data_dir

#: Seconds ``verify`` waits for an ingest pass in progress to finish.
VERIFY_LOCK_TIMEOUT = float(os.environ.get("ASSAY_VERIFY_LOCK_TIMEOUT", "120"))

if TYPE_CHECKING:
    from ..store.checkpoint import Checkpoint, CheckpointLike
    from ..store.signing import PublicKeyLike

__all__ = ["Api", "existing_data_dir"]

log = logging.getLogger(__name__)

#: Entries only assay makes in a data directory (runs, a remote run's outbox, a server's
#: tokens and audit trail): a folder holding none of them is not one.
_DATA_DIR_MARKERS = ("lance", "wal", "blobs", "audit", "outbox", "wal-quarantine",
                     "signing_key.pem", "auth/tokens.json", "ingest.lock")

class Api:
    """Runs, metrics, artifacts, agents and their decisions: in a data directory (``dir``,
    else ``$ASSAY_DIR``, else ``~/.assay``), or on an ``assay server`` when ``server=`` names
    one (``Api(server=os.environ["ASSAY_SERVER"])`` for the one your runs log to), with
    ``token`` (else ``$ASSAY_TOKEN``). ``$ASSAY_SERVER`` alone never redirects an Api: a
    data directory stays the default (agents started with ``assay run`` while it is set live
    on that server: read them with ``server=``).

    On a server the token's role applies: viewers read, researchers override the agents they
    declared, supervisors any agent. What reads the data directory's files itself (verify,
    checkpoint, gc, the audit log, deleting versions) runs where the directory is.
    Reads see every commit of every process: handles re-check the table version per read.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None, *,
                 server: str | None = None, token: str | None = None,
                 timeout: float = 30.0) -> None:
        if dir is not None and server is not None:
            raise UserInputError("pass dir= or server=, not both",
                                 hint="dir= reads a data directory on this machine; server= "
                                      "asks an assay server over HTTP")
        self.server: str | None = None
        self._remote: Any = None
        self._artifacts: Any = None
        self._http: Any = None
        self._ctl: Any = None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
                0 < timeout < 86_400):
            raise UserInputError(f"timeout must be a number of seconds > 0, got {timeout!r}",
                                 hint="e.g. timeout=30 (how long one request to a server may "
                                      "take)")
        self._timeout = float(timeout)
        if server is not None:
            self.server = _check_server(server)
            self._token = token if token is not None else os.environ.get("ASSAY_TOKEN") or None
            # No data directory here: the methods that read one say so (_local_only).
            self.dir = cast(Path, None)
            self.store = cast(LanceStore, None)
            return
        if token is not None:
            raise UserInputError("token= is for server=: a data directory needs none",
                                 hint="leave token out, or pass server= too")
        if dir is not None and not Path(dir).expanduser().is_dir():  # a typo reads as empty
            raise NotFoundError(f"no assay data directory at {dir}",
                                hint="check the path (assay.init(dir=...) creates it with "
                                     "the first run; leave dir out for $ASSAY_DIR or ~/.assay)")
        self.dir = data_dir(dir)
        self.store = LanceStore(self.dir)

    # -- where the data is --------------------------------------------------------------------
    @property
    def is_remote(self) -> bool:
        """True when this Api asks a server (``server=``)."""
        return self.server is not None

    def _reader(self) -> Any:
        if self._remote is None:
            from .remote_api import RemoteReader

            self._remote = RemoteReader(self.server, self._token,  # type: ignore[arg-type]
                                        timeout=self._timeout)
        return self._remote

    def _control(self) -> Any:
        from .control_api import LocalControl, RemoteControl

        if self.server is not None:
            if self._http is None:
                self._http = _http_client(self.server, self._token, self._timeout)
                self._ctl = RemoteControl(self._http, self.server)  # keeps /api/health's
            return self._ctl
        return LocalControl(self.dir)

    def _agent_id(self, agent_id: Any) -> str:
        """An agent id to look up: any name in a data directory (``assay run --agent-id``
        takes one), the form the server's routes take on a server."""
        from .control_api import check_agent_id

        if self.server is not None:
            return check_agent_id(agent_id)
        if not isinstance(agent_id, str) or not agent_id:
            raise UserInputError(f"an agent id is a non-empty string, got {agent_id!r}",
                                 hint="`assay agents` (Api().agents()) lists them")
        return agent_id

    def _local_only(self, what: str) -> None:
        if self.server is not None:
            raise UserInputError(
                f"{what} reads the data directory's files itself, and this Api asks the server "
                f"{self.server}",
                hint="run it on the server's machine with Api(dir=DATA_DIR) (or the matching "
                     "`assay ... --dir DATA_DIR` command)")

    def _remote_artifacts(self) -> Any:
        if self._artifacts is None:
            from .remote_artifacts import RemoteArtifacts

            # Someone waiting at a prompt: a server that is away fails in seconds, not the
            # ten minutes a training run's uploads outlast a restart with.
            self._artifacts = RemoteArtifacts(self.server, self._token,  # type: ignore[arg-type]
                                              timeout=self._timeout, retry_budget=5.0,
                                              attempts=2)
        return self._artifacts

    def _remote_graph(self) -> Any:
        """What an Artifact handle needs from a server: its registry, and this machine's
        data directory for the download cache."""
        from .remote_artifacts import RemoteGraph, server_cache

        return RemoteGraph(server_cache(data_dir(None), self.server),  # type: ignore[arg-type]
                           self._remote_artifacts())

    def close(self) -> None:
        """Close the HTTP connections of a server's Api (a local one holds none). The Api
        opens new ones if used again; Artifact handles it gave out cannot download after."""
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._artifacts is not None:
            self._artifacts.close()
            self._artifacts = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def runs(self, project: str | None = None,
             filters: Mapping[str, Any] | pl.Expr | None = None) -> pl.DataFrame:
        """One row per run: run columns, then ``config.*``, ``summary.*`` (last or set value),
        ``summary_min.*`` and ``summary_max.*`` columns.

        ``filters`` is a polars expression (``pl.col("config.lr") < 1e-3``) or a mapping of
        column to required value (``{"status": "completed", "config.depth": 2}``).
        """
        if self.server is not None:
            df: pl.DataFrame = self._reader().runs(project=project, filters=filters)
            if project is not None and df.height == 0:
                self._say_no_runs(project)
            return df
        rows = []
        for raw in self.store.runs_table(project).to_pylist():
            r = run_from_row(raw)
            rows.append(run_row(raw, r.config, r.summary, r.summary_set))
        if project is not None and not rows:
            self._say_no_runs(project)
        return filter_runs(runs_frame(rows), filters)

    def _say_no_runs(self, project: str) -> None:
        said = no_runs_warning(project, self.projects())
        if said:
            log.warning("assay: %s", said)

    def projects(self) -> list[str]:
        """The projects that have runs, sorted."""
        if self.server is not None:
            return self._reader().projects()  # type: ignore[no-any-return]
        tbl = self.store.table("runs")
        if tbl is None:
            return []
        col = tbl.search().select(["project"]).limit(None).to_arrow().column("project")
        return sorted(set(col.to_pylist()))

    def run(self, run_id: str) -> RunRecord:
        """The stored record of one run (config, summary, status, env, git)."""
        check_run_id_arg(run_id)
        if self.server is not None:
            return self._reader().run(run_id)  # type: ignore[no-any-return]
        r = self.store.get_run(run_id)
        if r is None:
            raise NotFoundError(f"no run {run_id!r} in {self.dir}",
                                hint="list runs with `assay runs`; check dir= or ASSAY_DIR")
        return r

    def update_run(self, run_id: str, *, tags: Sequence[str] | None = None,
                   add_tags: Sequence[str] = (), remove_tags: Sequence[str] = (),
                   notes: str | None = None, reason: str = "",
                   actor: str | None = None) -> RunRecord:
        """Change a run's tags (``tags`` replaces them; ``add_tags``/``remove_tags`` edit
        them) or its ``notes``, at any time (they are not sealed in its signed record), like
        W&B's ``run.tags = [...]; run.update()``. Audited with ``reason``. On a server, a
        researcher changes their own runs, a supervisor any. Returns the run as it is now."""
        from ..store.labels import set_labels
        from ..store.records import check_notes, check_tags

        check_run_id_arg(run_id)
        _check_reason(reason)
        if tags is not None:
            check_tags(tags)
        check_tags(list(add_tags))
        check_tags(list(remove_tags))
        if notes is not None:
            check_notes(notes)
        if self.server is not None:
            body = {"tags": None if tags is None else list(tags), "add_tags": list(add_tags),
                    "remove_tags": list(remove_tags), "notes": notes, "reason": reason}
            self._control()._call("PATCH", f"/api/runs/{run_id}", json=body)
            return self.run(run_id)
        from ..store.ingest import IngestLock

        g = self._graph("Api.update_run()")
        before, after = set_labels(self.store, IngestLock(self.dir), run_id, tags=tags,
                                   add=add_tags, remove=remove_tags, notes=notes)
        if after != before:
            g.audit.record(actor or _local_actor(), "run.labels", f"run:{run_id}", reason,
                           {"tags": list(after.tags), "tags_before": list(before.tags),
                            "notes_changed": after.notes != before.notes})
        return after

    def history(self, run_id: str, keys: Sequence[str] | str | None = None) -> pl.DataFrame:
        """Every point of a run: columns run_id, key, step, value, time (UTC)."""
        if self.server is not None:
            got: pl.DataFrame = self._reader().history(run_id, keys)
            wanted = history_keys(keys)
            if wanted and not set(wanted) <= set(got["key"].unique().to_list()):
                warn_missing_keys(run_id, wanted, got, self.run(run_id).summary)  # as here
            return got
        rec = self.run(run_id)
        keys = history_keys(keys)
        df = history_frame(run_id, self.store.metric_chunks(run_id, keys))
        warn_missing_keys(run_id, keys, df, rec.summary)  # a typo'd key reads as no rows
        return df


    # -- artifacts, lineage, verification ------------------------------------------------------
    def _graph(self, what: str = "this") -> Any:
        from .graph import open_graph

        self._local_only(what)
        return open_graph(self.dir)

    def artifacts(self, project: str | None = None, name: str | None = None, *,
                  include_deleted: bool = False) -> pl.DataFrame:
        """Artifact versions (name, version, type, digest, files, size, aliases, ...).

        Deleted versions only with ``include_deleted`` (then with ``deleted_at``,
        ``deleted_by`` and ``delete_reason`` columns)."""
        if self.server is not None:
            return self._remote_artifacts().list(  # type: ignore[no-any-return]
                project=project, name=name, include_deleted=include_deleted)
        return self._graph("Api.artifacts()").artifacts.list(
            project=project, name=name, include_deleted=include_deleted)

    def delete_artifact(self, spec: str, *, reason: str = "", delete_aliases: bool = False,
                        actor: str | None = None) -> Any:
        """Delete one artifact version (``name:v3``), like W&B's ``artifact.delete()``.

        The version stops resolving (``get``/``use``/aliases/listing); its record, digest and
        lineage stay, and the deletion (who, when, ``reason``) is in the audit trail. A version
        that still has aliases (``latest`` included) is refused unless ``delete_aliases``.
        Its blobs are freed by :meth:`gc`. Returns the deleted version. On a server the
        token's name is the actor (researchers delete the versions their runs logged).
        """
        if self.server is not None:
            from ..store.artifacts import parse_version_spec

            name, version = parse_version_spec(spec)  # refused here, as the server would
            ra = self._remote_artifacts()
            av = ra.get(name, f"v{version}")
            ra.delete(f"{name}:v{version}", reason=reason, delete_aliases=delete_aliases)
            return av
        return self._graph("Api.delete_artifact()").artifacts.delete(
            spec, actor=actor or _local_actor(), reason=reason, delete_aliases=delete_aliases)

    def gc(self, *, grace: float | None = None, dry_run: bool = False,
           actor: str | None = None) -> Any:
        """Remove blobs no live artifact version or run needs, older than ``grace`` seconds
        (default an hour, so uploads in flight are safe). Returns a
        :class:`~assay.store.gc.GcReport` (counts, bytes, digests); ``dry_run`` deletes
        nothing. Local blob stores only."""
        return self._graph("Api.gc()").artifacts.gc(grace=grace, dry_run=dry_run,
                                                    actor=actor or _local_actor())

    def artifact(self, spec: str) -> Any:
        """One artifact version by ``name:latest`` / ``name:v3`` / ``name:ALIAS``: its
        ``download()`` (from a server too, every file digest-checked; cached under this
        machine's data directory by default), aliases, metadata and files."""
        from .graph import Artifact

        if self.server is not None:
            from ..store.artifacts import parse_spec

            name, sel = parse_spec(spec)
            g = self._remote_graph()
            return Artifact(g.artifacts.get(name, sel or "latest"), g)
        g = self._graph("Api.artifact()")
        return Artifact(g.artifacts.get(spec), g)

    def set_alias(self, spec: str, alias: str, *, reason: str = "",
                  actor: str | None = None) -> Any:
        """Point ``alias`` at the version ``spec`` names (``model:v0``, or ``model:staging``
        for the version another alias names), moving it from the version it named before,
        like W&B's ``artifact.aliases.append("prod"); artifact.save()``. Audited (who, why,
        from, to). Returns the version's :class:`~assay.sdk.graph.Artifact`.

        Raises:
            UserInputError: ``alias`` is ``latest`` (assay moves it), a version (``v3``) or
                not a name; ``spec`` has no version.
            NotFoundError: no such version (the hint lists the versions and aliases), or it
                was deleted.
        """
        from ..store.artifacts import parse_spec
        from .graph import Artifact

        name, _ = parse_spec(spec)
        if ":" not in spec:
            raise UserInputError(f"{spec!r} does not say which version gets {alias!r}",
                                 hint=f"name it: {name}:v3, or {name}:latest")
        _check_user_alias(name, alias)
        _check_reason(reason)
        if self.server is not None:  # the token's name is the actor there
            target = self.artifact(spec)  # model:staging: the version that alias names now
            self._remote_artifacts().set_alias(f"{name}:v{target.version}", alias,
                                               reason=reason)
            return self.artifact(f"{name}:{alias}")
        g = self._graph("Api.set_alias()")
        av = g.artifacts.set_alias(spec, alias, actor=actor or _local_actor(), reason=reason)
        return Artifact(av, g)

    def remove_alias(self, name: str, alias: str, *, reason: str = "",
                     actor: str | None = None, expect_version: int | None = None) -> Any:
        """Remove ``alias`` from artifact ``name`` (the version stays; audited). Returns the
        :class:`~assay.sdk.graph.Artifact` the alias named, as it is now.

        Raises:
            UserInputError: ``alias`` is ``latest`` (assay keeps it on the newest version),
                or ``name`` carries a version.
            NotFoundError: ``name`` has no such alias (the hint lists its aliases).
        """
        from ..store.artifacts import parse_spec
        from ..store.records import validate_name
        from .graph import Artifact

        if not isinstance(name, str) or ":" in name:
            bare = name.partition(":")[0] if isinstance(name, str) else "model"
            raise UserInputError(f"remove_alias takes the artifact's name, not {name!r}",
                                 hint=f"e.g. remove_alias({bare!r}, {alias!r})")
        validate_name("artifact", name)
        _check_user_alias(name, alias)
        parse_spec(f"{name}:{alias}")  # an alias assay could never have stored: 400, not 404
        _check_reason(reason)
        if self.server is not None:
            named = self.artifact(f"{name}:{alias}")  # 404 with the server's hint if none
            version = named.version if expect_version is None else expect_version
            self._remote_artifacts().remove_alias(name, alias, reason=reason,
                                                  expect_version=version)
            return self.artifact(f"{name}:v{version}")
        g = self._graph("Api.remove_alias()")
        reg = g.artifacts
        if reg.list(name=name).height == 0:
            raise NotFoundError(f"artifact {name!r} has no live version",
                                hint="`assay artifacts` lists artifacts and their aliases; "
                                     "`assay artifact list --deleted` deleted versions")
        version = reg.remove_alias(name, alias, actor or _local_actor(), reason,
                                   expect_version=expect_version)
        return Artifact(reg.get(name, f"v{version}"), g)

    def lineage(self, spec: str, direction: str = "up",
                depth: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Nodes and edges up (what it was made from) or down (what was built on it) from an
        artifact version (``name:alias``, ``name:v3``; deleted versions too) or a run
        (``run:<id>``), at most ``depth`` hops away. Returns (nodes, edges): nodes have
        columns id, kind, name, version, run_id and depth (hops, 0 for the start), edges src,
        dst and kind.

        On a server the same frames come over HTTP (a viewer's token reads them); a graph of
        more than 5000 nodes within ``depth`` is refused there (pass a smaller ``depth``)."""
        from ..store.lineage import lineage, run_node
        from .remote_lineage import check_lineage_args, remote_lineage

        check_lineage_args(spec, direction, depth)
        if self.server is not None:
            return remote_lineage(self._reader(), spec, direction, depth)
        g = self._graph("Api.lineage()")
        if spec.startswith("run:"):
            node = run_node(self.run(spec[4:]).run_id)
        else:
            node = g.artifacts.get(spec, include_deleted=True).node
        return lineage(g.store, node, direction, depth)

    def verify(self, run_id: str | None = None, *,
               public_key: PublicKeyLike | os.PathLike[str] | None = None,
               checkpoint: CheckpointLike | Sequence[CheckpointLike] | None = None,
               ) -> tuple[int, list[Any]]:
        """Recompute and check every signed run record (or one run's) and the audit chain.
        Returns (records checked, problems); each problem names its record and why.

        Args:
            run_id: Check one run's chain only (the audit trail is then skipped).
            public_key: A pinned key (PEM text, key object, or a PEM file's path, as
                ``assay export-key`` printed it): records must verify against it, and a data
                directory key that differs is reported.
            checkpoint: Checkpoint(s) from :meth:`checkpoint` (objects or file paths): each
                must be signed by the key in use, and every chain it names must still hold
                the head it noted (appending since is fine; truncating or rewriting is not).
                All its chains are checked, with a ``run_id`` too.

        Raises:
            UserInputError: a key or checkpoint file is missing or invalid (checked before
                the data directory is opened; nothing in it changes).
        """
        from ..store import checkpoint as anchor
        from ..store.provenance import ChainStore, verify

        pinned = None if public_key is None else anchor.read_public_key(public_key)
        checkpoints = anchor.load_checkpoints(checkpoint)
        g = self._graph("Api.verify()")
        if run_id is not None:
            self.run(run_id)
        key = g.audit.key if pinned is None else pinned
        problems: list[Any] = [] if pinned is None else anchor.check_pinned_key(g.audit.key,
                                                                                  pinned)
        def check() -> tuple[int, list[Any]]:
            checked, found = verify(g.store, g.blobs, key, run_id, g.audit)
            for cp in checkpoints:
                found += anchor.check_checkpoint(cp, ChainStore(g.store), g.audit, key)
            return checked, found

        checked, found = check()
        if found:
            # An ingest pass commits a run's points, then seals its record: read in between,
            # a finished run looks unsealed (or, resumed, altered). Problems are checked again
            # under the ingest lock, which no pass holds halfway; a clean directory (the
            # usual answer) never holds up ingestion.
            if not g.lock.acquire(VERIFY_LOCK_TIMEOUT):
                raise ConflictError(
                    f"the data directory {self.dir} was being ingested for "
                    f"{VERIFY_LOCK_TIMEOUT:g} s", hint="verify again in a moment (a large "
                    "backlog is being ingested)")
            try:
                checked, found = check()
            finally:
                g.lock.release()
        return checked, problems + found

    def checkpoint(self, out: str | os.PathLike[str] | None = None) -> Checkpoint:
        """A signed note of every chain's length and head hash (run chains and the audit
        trail), to keep outside the data directory or publish; pass it to
        ``verify(checkpoint=...)`` later to prove that no chain was truncated or rewritten
        up to it. Written as JSON to ``out`` when given. Returns the
        :class:`~assay.store.checkpoint.Checkpoint` (``.to_json()`` gives the document)."""
        from ..store.checkpoint import make_checkpoint
        from ..store.provenance import ChainStore

        g = self._graph("Api.checkpoint()")
        cp = make_checkpoint(ChainStore(g.store), g.audit, g.audit.key)
        if out is not None:
            path = Path(out).expanduser()
            try:
                path.write_text(cp.to_json(), encoding="utf-8")
            except OSError as exc:
                raise UserInputError(f"cannot write checkpoint to {path}: {exc.strerror or exc}",
                                     hint="pass a writable path outside the data directory"
                                     ) from exc
        return cp

    def audit_log(self, *, target: str | None = None,
                  actor: str | None = None) -> list[dict[str, Any]]:
        """The audit trail, oldest first: seq, at, actor, action, target, reason, details
        (only ``target``'s or ``actor``'s entries when given). On a server a supervisor's
        token reads it."""
        if self.server is not None:
            return self._reader().audit_log(target, actor)  # type: ignore[no-any-return]
        _, rows = self._graph("Api.audit_log()").audit.entries(limit=10**9, target=target,
                                                                actor=actor)
        return rows[::-1]

    # -- agents: progress, decisions, overrides ------------------------------------------------
    def agents(self, project: str | None = None) -> pl.DataFrame:
        """One row per agent: objective, project, status, owner, metric and mode, trial
        counts (``trials_total`` and ``trials.<status>``), the best trial and its value,
        concurrency, last update."""
        from .control_api import agents_frame

        if project is not None:
            _check_project(project)
        return agents_frame(self._control().agents(project))

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent as the API shows it, with its objective ``spec``, current ``budget``
        and ``concurrency``, and every trial (id, status, config, final value, ...)."""
        return self._control().agent(self._agent_id(agent_id))  # type: ignore[no-any-return]

    def decisions(self, agent_id: str | None = None, *, project: str | None = None,
                  trial_id: str | None = None, kind: str | None = None,
                  limit: int | None = None) -> pl.DataFrame:
        """Decisions (launch, stop, complete, override, ...) with their evidence, oldest
        first: why each config was chosen, why each trial was stopped. ``limit``: the newest
        N. The ``explanation`` column holds the evidence as JSON text."""
        from .control_api import check_kind, check_run_id, decisions_frame

        if agent_id is not None:
            self._agent_id(agent_id)
        if trial_id is not None:
            check_run_id(trial_id)
        if project is not None:
            _check_project(project)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise UserInputError(f"limit must be an int >= 1, got {limit!r}")
        rows = self._control().decisions(agent_id, project, trial_id, check_kind(kind), limit)
        return decisions_frame(rows)

    def overrides(self, agent_id: str) -> pl.DataFrame:
        """The overrides sent to an agent, oldest first, with their outcome: ``pending``
        until its next step, then ``applied`` or ``rejected`` (``result`` says why)."""
        from .control_api import overrides_frame

        return overrides_frame(self._control().overrides(self._agent_id(agent_id)))

    def override(self, agent_id: str, action: str, params: Mapping[str, Any] | None = None,
                 *, reason: str, actor: str | None = None,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """Send an override, applied at the agent's next step and recorded with who and why
        (in its decisions and the audit trail). ``action``: ``pause``, ``resume``, ``stop``,
        ``stop_run`` (``{"trial_id": ...}``), ``budget`` (``{"budget": {"trials": 40}}``),
        ``concurrency`` (``{"concurrency": 2}``), ``space`` (``{"space": {...}}``) or ``pin``
        (``{"config": {...}}``). It is checked as the agent would check it: a bad one, or one
        for an agent that ended, raises and stores nothing.

        Params are sent as JSON: NumPy scalars become numbers; NaN and infinities are
        refused. ``actor`` names who sent it in a data directory (default ``user:<login>``);
        on a server the token's name is the actor. ``idempotency_key`` (1-128 of
        ``A-Za-z0-9_.:-``): the same override sent again with it stores nothing new and
        answers the first one (``replayed``); on a server, an answer lost in transit is
        retried with a key of its own when none is given.

        Returns:
            ``{"override_id", "agent_id", "action", "status": "pending"}``; follow it with
            :meth:`overrides`.
        """
        from ..agents.overrides import check_idempotency_key
        from .control_api import check_override_reason

        self._agent_id(agent_id)
        why = check_override_reason(reason)
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        if not isinstance(action, str) or action not in _ACTIONS:
            raise UserInputError(f"unknown override action {action!r}",
                                 hint="one of: " + ", ".join(_ACTIONS))
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise UserInputError(f"params must be a mapping, got {type(params).__name__}",
                                 hint='e.g. {"concurrency": 2}')
        return self._control().override(  # type: ignore[no-any-return]
            agent_id, action, _plain_params(params), why, actor or _local_actor(), key)

    def pause(self, agent_id: str, *, reason: str) -> dict[str, Any]:
        """Pause an agent: it launches no new trial; running ones go on."""
        return self.override(agent_id, "pause", reason=reason)

    def resume(self, agent_id: str, *, reason: str) -> dict[str, Any]:
        """Resume a paused agent."""
        return self.override(agent_id, "resume", reason=reason)

    def stop_agent(self, agent_id: str, *, reason: str) -> dict[str, Any]:
        """Stop an agent and its running trials (each stop is recorded)."""
        return self.override(agent_id, "stop", reason=reason)

    def set_budget(self, agent_id: str, budget: Mapping[str, Any], *,
                   reason: str) -> dict[str, Any]:
        """Change an agent's budget limits (``{"trials": 40}``, ``{"wall_clock": "2h"}``);
        the limits not named stay."""
        return self.override(agent_id, "budget", {"budget": budget}, reason=reason)

    def set_concurrency(self, agent_id: str, concurrency: int, *, reason: str) -> dict[str, Any]:
        """Change how many trials the agent runs at once."""
        return self.override(agent_id, "concurrency", {"concurrency": concurrency},
                             reason=reason)

    def set_space(self, agent_id: str, space: Mapping[str, Any], *,
                  reason: str) -> dict[str, Any]:
        """Replace the agent's search space (queued suggestions and pins outside it drop)."""
        return self.override(agent_id, "space", {"space": space}, reason=reason)

    def pin(self, agent_id: str, config: Mapping[str, Any], *, reason: str) -> dict[str, Any]:
        """Have the agent run ``config`` next (as soon as a slot is free)."""
        return self.override(agent_id, "pin", {"config": config}, reason=reason)

    def stop_run(self, run_id: str, *, reason: str, actor: str | None = None,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """Stop one running trial through the agent that launched it (``idempotency_key``
        as for :meth:`override`)."""
        from ..agents.overrides import check_idempotency_key
        from .control_api import check_override_reason, check_run_id

        check_run_id(run_id)
        why = check_override_reason(reason)
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        return self._control().stop_run(  # type: ignore[no-any-return]
            run_id, why, actor or _local_actor(), key)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ACTIONS = ("pause", "resume", "stop", "stop_run", "budget", "concurrency", "space", "pin")


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Override params as the JSON both paths store (NumPy scalars as numbers); NaN and
    infinities are refused: the agent could not compare a config or a limit with them."""
    import math

    from .jsonable import to_jsonable

    plain = to_jsonable(dict(params), what="override params")

    def check(x: Any, path: str) -> None:
        if isinstance(x, float) and not math.isfinite(x):
            raise UserInputError(f"override params {path} is {x}: not a number the agent can use",
                                 hint="send finite numbers")
        if isinstance(x, dict):
            for k, v in x.items():
                check(v, f"{path}.{k}" if path else k)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                check(v, f"{path}[{i}]")

    check(plain, "")
    return plain  # type: ignore[no-any-return]


def _check_project(project: Any) -> None:
    from ..store.records import validate_name

    validate_name("project", project)


def _check_server(server: Any) -> str:
    """An ``http(s)://host[:port]`` URL, without a trailing slash."""
    from urllib.parse import urlsplit

    url = server.strip().rstrip("/") if isinstance(server, str) else ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserInputError(f"server must be an http(s) URL, got {server!r}",
                             hint="e.g. server='http://127.0.0.1:8000' (what `assay server` "
                                  "prints)")
    return url


def _http_client(server: str, token: str | None, timeout: float) -> Any:
    import httpx

    from .remote import _auth_headers

    return httpx.Client(base_url=server, headers=_auth_headers(token),
                        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))


def existing_data_dir(dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory ``dir`` (else ``$ASSAY_DIR``, else ``~/.assay``) when it already is
    one; unlike :func:`~assay.sdk.settings.data_dir`, never creates it.

    For commands that read or maintain data (the CLI's listings, verify, export-key,
    checkpoint, sync, gc, ...): a mistyped path must not read as an empty directory, nor get
    a new signing key whose public half looks like the real one.

    Raises:
        NotFoundError: the path does not exist, is not a folder, or holds no assay data.
        UserInputError: it is a URL (``s3://...``), not a local folder.
    """
    from .settings import resolve_data_dir

    given = dir is not None or bool(os.environ.get("ASSAY_DIR"))
    path = resolve_data_dir(dir)
    where = ("" if dir is not None else " (from $ASSAY_DIR)" if given
             else " (the default; set --dir or $ASSAY_DIR for another)")
    if not path.exists():
        why = "it does not exist"
    elif not path.is_dir():
        why = "it is a file"
    elif not any((path / m).exists() for m in _DATA_DIR_MARKERS):
        why = "the folder holds no assay data"
    else:
        return path
    raise NotFoundError(
        f"no assay data directory at {path}{where}: {why}",
        hint="check the path; nothing was created there. A data directory starts with the "
             "first run logged to it (assay.init(dir=...)), `assay run --dir` or `assay "
             "server --dir`")


def _check_user_alias(name: str, alias: Any) -> None:
    if alias == "latest":
        raise UserInputError(
            "'latest' is managed by assay: it always names the newest live version",
            hint=f"log a new version to move it, or delete {name}'s newest version to move it "
                 "back; use your own alias (e.g. 'prod') to pin a version")
    if not isinstance(alias, str) or not alias:
        raise UserInputError(f"alias must be a non-empty string, got {alias!r}",
                             hint="e.g. 'prod' or 'best'")
    if re.fullmatch(r"v\d+", alias):
        raise UserInputError(f"invalid alias {alias!r}: it is a version number",
                             hint=f"aliases start with a letter and are not versions (e.g. "
                                  f"'prod'); {name}:{alias} already names that version")


def _check_reason(reason: Any) -> None:
    if not isinstance(reason, str) or len(reason) > 2000:
        raise UserInputError("reason must be a string of at most 2000 characters",
                             hint="say briefly why (it goes into the audit trail)")


def _local_actor() -> str:
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (some containers)
        return "user"
