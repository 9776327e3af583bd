"""People in charge, from Python: agents, their decisions and overrides for ``assay.Api``.

Two backends answer the same calls with the same shapes (the ones the server's REST API
serves, :mod:`assay.agents.public`): :class:`LocalControl` reads and writes a data directory
(as the ``assay pause|resume|stop`` commands do), :class:`RemoteControl` talks to an
``assay server`` (``/api/agents``, ``/api/decisions``, ``/api/agents/{id}/overrides``,
``/api/runs/{id}/stop``), where roles apply: viewers read, researchers override the agents
they declared, supervisors any agent.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import AssayError, NotFoundError, PermissionDeniedError, UserInputError

__all__ = [
    "LocalControl",
    "RemoteControl",
    "agents_frame",
    "check_agent_id",
    "check_override_reason",
    "decisions_frame",
    "overrides_frame",
]

_AGENT_ID = re.compile(r"^[A-Za-z0-9]{4,64}$")
_DECISIONS_PAGE = 5000  # the most GET /api/decisions answers at once
#: seconds an override whose answer was lost (or a 502/503/504) is sent again, with its key
OVERRIDE_RETRY_S = 10.0
_RUN_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
#: Every kind of decision an agent records (agents/agent.py, agents/overrides.py).
DECISION_KINDS = ("launch", "complete", "stop", "fail", "retry", "resume", "skip", "stale",
                  "override", "retrain", "wait", "finish")


def check_agent_id(agent_id: Any) -> str:
    """An agent id's form (4-64 letters and digits): no agent has another."""
    if not isinstance(agent_id, str):
        raise UserInputError(f"an agent id is a string, got {agent_id!r}",
                             hint="e.g. 'ag3f9c1e2a7b': `assay agents` (Api().agents()) lists them")
    if not _AGENT_ID.match(agent_id):
        raise NotFoundError(f"no agent {agent_id!r}: agent ids are 4-64 letters and digits",
                            hint="list the agents with `assay agents` (Api().agents())")
    return agent_id


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise UserInputError(f"not a run id: {run_id!r}",
                             hint="run ids are letters and digits: `assay runs` lists them")
    return run_id


def check_override_reason(reason: Any) -> str:
    """An override names why (the audit trail and the agent's decisions keep it)."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise UserInputError(
            "an override needs a reason: a non-blank string of at most 2000 characters",
            hint='say why, e.g. reason="loss diverging on every trial since the data change"')
    return reason.strip()


class LocalControl:
    """Agents of a local data directory (the ones ``assay run`` started there)."""

    def __init__(self, root: Path) -> None:
        from ..store.control import LanceControlStore
        from ..store.ingest import IngestLock
        from ..store.lance import LanceStore

        self.root = root
        self.control = LanceControlStore(LanceStore(root), IngestLock(root))

    def _row(self, agent_id: str) -> Any:
        a = self.control.get_agent(agent_id)
        if a is None:
            raise NotFoundError(f"no agent {agent_id!r} in {self.root}",
                                hint="list the agents with `assay agents` (Api().agents())")
        return a

    def agents(self, project: str | None = None) -> list[dict[str, Any]]:
        from ..agents.public import agent_public

        return [agent_public(a) for a in self.control.list_agents(project)]

    def agent(self, agent_id: str) -> dict[str, Any]:
        from ..agents.public import agent_public

        return agent_public(self._row(agent_id), trials=True)

    def decisions(self, agent_id: str | None, project: str | None, trial_id: str | None,
                  kind: str | None, limit: int | None) -> list[dict[str, Any]]:
        from ..agents.public import decision_public

        if agent_id is not None:
            self._row(agent_id)
        ds = self.control.decisions(agent_id=agent_id, project=project, trial_id=trial_id)
        if kind:
            ds = [d for d in ds if d.kind == kind]
        return [decision_public(d) for d in (ds[-limit:] if limit else ds)]

    def overrides(self, agent_id: str) -> list[dict[str, Any]]:
        from ..agents.public import override_public

        self._row(agent_id)
        return [override_public(o) for o in self.control.overrides(agent_id)]

    def override(self, agent_id: str, action: str, params: Mapping[str, Any], reason: str,
                 actor: str, key: str | None = None) -> dict[str, Any]:
        """Check the override as the agent would (nothing is stored when it is refused),
        store it and audit it. Returns ``{override_id, agent_id, action, status}``; with an
        idempotency ``key`` this actor used for this agent before, that override's answer."""
        from ..agents.hlc import HybridLogicalClock
        from ..agents.overrides import check_sendable, idempotent_override_id, replay, send_override
        from ..store.audit import AuditTrail

        a = self._row(agent_id)
        oid = None if key is None else idempotent_override_id(actor, a.agent_id, key)
        if oid is not None and key is not None:
            again = replay(self.control, a.agent_id, oid, action, params, key)
            if again is not None:
                return again
        check_sendable(a, action, params, control=self.control,
                       again="run the objective again (`assay run OBJECTIVE.yaml`) to go on")
        try:  # the audit trail signs with the directory's key: refused before anything is stored
            audit = AuditTrail(self.root)
        except OSError as exc:
            raise AssayError(
                f"cannot open the audit trail of {self.root} to record the override: "
                f"{exc.strerror or exc}",
                hint="overrides are audited with the data directory's signing key: run this as "
                     "the user who owns the directory, or send it through its server "
                     "(Api(server=...), assay ... --server)") from None
        o = send_override(self.control, audit, a, action, params, actor, reason,
                          HybridLogicalClock("sdk"), override_id=oid)
        return {"override_id": o.override_id, "agent_id": a.agent_id, "action": action,
                "status": "pending"}

    def stop_run(self, run_id: str, reason: str, actor: str,
                 key: str | None = None) -> dict[str, Any]:
        """Stop a trial through the agent that launched it."""
        owners = [d.agent_id for d in self.control.decisions(trial_id=run_id)
                  if d.kind == "launch"]
        if not owners:
            from ..store.lance import LanceStore

            if LanceStore(self.root).get_run(run_id) is None:
                raise NotFoundError(f"no run {run_id!r} in {self.root}",
                                    hint="check the id: Api().runs() lists runs, "
                                         "Api().agent(AGENT_ID) an agent's trials")
            raise NotFoundError(f"run {run_id!r} was not launched by an agent",
                                hint="stop_run acts on agent trials; see Api().agents()")
        return self.override(owners[-1], "stop_run", {"trial_id": run_id}, reason, actor, key)


class RemoteControl:
    """Agents of an ``assay server``, over its REST API (the token's role applies)."""

    def __init__(self, http: Any, server: str) -> None:
        self.http, self.server = http, server
        self._server_features: frozenset[str] | None = None

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        """The JSON object the server answers; a refusal as the matching AssayError, with
        hints for this SDK (not for HTTP clients or for logging runs)."""
        import httpx

        try:
            resp = self.http.request(method, url, **kw)
        except httpx.TimeoutException as exc:
            raise AssayError(f"the assay server at {self.server} did not answer {url} in time "
                             f"({type(exc).__name__})",
                             hint="check that `assay server` runs there and is not "
                                  "overloaded; Api(server=..., timeout=...) waits longer"
                             ) from None
        except httpx.TransportError as exc:
            raise AssayError(f"cannot reach the assay server at {self.server}: {exc}",
                             hint="check the URL (server= or $ASSAY_SERVER) and that "
                                  "`assay server` runs there") from None
        return self._answer(resp, url)

    def _send(self, url: str, body: dict[str, Any], key: str | None) -> Any:
        """POST an override with an ``Idempotency-Key`` (the caller's, or a new one): a lost
        answer, a timeout or a 502/503/504 is retried for ``OVERRIDE_RETRY_S`` with the same
        key, which the server stores at most once. A server too old for keys gets one try."""
        import uuid

        import httpx

        if "override_idempotency" not in self._features():
            if key is not None:
                raise UserInputError(
                    f"the server {self.server} is too old to take an idempotency key",
                    hint="leave idempotency_key out (the override is then sent once, not "
                         "retried), or upgrade the server")
            return self._call("POST", url, json=body)
        key = key or uuid.uuid4().hex
        deadline = time.monotonic() + OVERRIDE_RETRY_S
        wait = 0.2
        while True:
            try:
                resp = self.http.request("POST", url, json=body,
                                         headers={"Idempotency-Key": key})
                if resp.status_code not in (502, 503, 504):
                    return self._answer(resp, url)
                why = f"it answered HTTP {resp.status_code}"
            except httpx.TransportError as exc:  # timeouts too: the answer may be lost
                why = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + wait > deadline:
                raise AssayError(
                    f"the assay server at {self.server} did not confirm {url} within "
                    f"{OVERRIDE_RETRY_S:g} s ({why}); the override may or may not be stored",
                    hint=f"send it again with idempotency_key={key!r}: a server that stored "
                         "it answers that override and stores no second one")
            time.sleep(wait)
            wait = min(2.0, wait * 2)

    def _answer(self, resp: Any, url: str) -> Any:
        from .remote import _raise_for

        try:
            _raise_for(resp)
        except PermissionDeniedError as exc:
            hint = ("pass token= (CLI --token; or set $ASSAY_TOKEN) to a token this server "
                    "knows: viewers read, researchers override the agents they declared, "
                    "supervisors any"
                    if resp.status_code == 401 else exc.hint)
            raise PermissionDeniedError(exc.message, hint=hint) from None
        except NotFoundError as exc:
            hint = exc.hint
            if exc.message.endswith("Not Found"):  # no such route: not an assay server's root
                hint = (f"check the server URL {self.server}: the server's root, as `assay "
                        "server` prints it (without /api)")
            elif "/api/" in (hint or ""):  # the server's hint names its HTTP routes
                hint = ("Api(server=...).agents() lists the agents, .runs() the runs "
                        "(`assay agents --server URL`, `assay runs --server URL`)")
            raise NotFoundError(exc.message, hint=hint) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise AssayError(f"{self.server} answered {url} with something that is not an "
                             "assay server's JSON",
                             hint="check the URL: it should be what `assay server` prints")
        return body

    def agents(self, project: str | None = None) -> list[dict[str, Any]]:
        params = {"project": project} if project is not None else {}
        return [_agent_numbers(a) for a in self._call("GET", "/api/agents",
                                                      params=params).get("agents", [])]

    def agent(self, agent_id: str) -> dict[str, Any]:
        return _agent_numbers(dict(self._call("GET", f"/api/agents/{agent_id}")))

    def decisions(self, agent_id: str | None, project: str | None, trial_id: str | None,
                  kind: str | None, limit: int | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {k: v for k, v in (("agent_id", agent_id), ("project", project),
                                                    ("trial_id", trial_id), ("kind", kind))
                                  if v is not None}
        if agent_id is not None:
            self.agent(agent_id)  # 404 for an unknown agent, as locally (not an empty list)
        # The server answers the newest `limit` (at most 5000 at once) and the total.
        params["limit"] = min(limit or _DECISIONS_PAGE, _DECISIONS_PAGE)
        body = self._call("GET", "/api/decisions", params=params)
        rows = list(body.get("decisions") or [])
        total = int(body.get("total", len(rows)))
        want = total if limit is None else min(limit, total)
        if want <= len(rows):
            return rows
        if "decisions_offset" not in self._features():
            raise AssayError(
                f"the server holds {total} matching decisions and serves the newest "
                f"{_DECISIONS_PAGE} at once (it is too old to page through them)",
                hint="narrow it with agent_id=, trial_id= or kind=, or pass limit=5000 (the "
                     "newest 5000)")
        # Pages counted from the oldest are stable while agents append newer decisions.
        start = total - want
        rows = []
        while len(rows) < want:
            params.update(offset=start + len(rows), limit=min(_DECISIONS_PAGE, want - len(rows)))
            page = list(self._call("GET", "/api/decisions", params=params).get("decisions") or [])
            if not page:
                break
            rows += page
        return rows

    def _features(self) -> frozenset[str]:
        if self._server_features is None:
            feats = self._call("GET", "/api/health").get("features")
            self._server_features = frozenset(
                f for f in (feats if isinstance(feats, list) else []) if isinstance(f, str))
        return self._server_features

    def overrides(self, agent_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/api/agents/{agent_id}/overrides")["overrides"])

    def override(self, agent_id: str, action: str, params: Mapping[str, Any], reason: str,
                 actor: str, key: str | None = None) -> dict[str, Any]:
        body = {"action": action, "params": dict(params), "reason": reason}
        return dict(self._send(f"/api/agents/{agent_id}/overrides", body, key))

    def stop_run(self, run_id: str, reason: str, actor: str,
                 key: str | None = None) -> dict[str, Any]:
        return dict(self._send(f"/api/runs/{run_id}/stop", {"reason": reason}, key))


def _time(t: Any) -> datetime | None:
    return datetime.fromtimestamp(float(t), UTC) if isinstance(t, int | float) and t else None


def agents_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per agent: ids, objective, status, owner, metric and mode, trials (in all and
    per status), the best trial and its value, concurrency, last update (UTC)."""
    statuses = sorted({s for r in rows for s in (r.get("counts") or {})})
    out = []
    for r in rows:
        best = r.get("best") or {}
        row: dict[str, Any] = {
            "agent_id": r["agent_id"], "objective": r.get("objective"),
            "project": r.get("project"), "status": r.get("status"), "owner": r.get("owner"),
            "metric": r.get("metric"), "mode": r.get("mode"),
            "trials_total": r.get("trials_total", 0)}
        for s in statuses:
            row[f"trials.{s}"] = (r.get("counts") or {}).get(s, 0)
        row.update({"best_trial_id": best.get("trial_id"), "best_value": best.get("value"),
                    "concurrency": r.get("concurrency"), "updated_at": _time(r.get("updated_at"))})
        out.append(row)
    schema: dict[str, Any] = {
              "agent_id": pl.String, "objective": pl.String, "project": pl.String,
              "status": pl.String, "owner": pl.String, "metric": pl.String, "mode": pl.String,
              "trials_total": pl.Int64, **{f"trials.{s}": pl.Int64 for s in statuses},
              "best_trial_id": pl.String, "best_value": pl.Float64, "concurrency": pl.Int64,
              "updated_at": pl.Datetime("us", "UTC")}
    return pl.DataFrame(out, schema=schema)


def _json_text(obj: Any) -> str:
    """Strict JSON (NaN and infinities as the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``, as the server writes them), so ``str.json_decode()`` reads it."""
    def safe(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
        if isinstance(x, Mapping):
            return {str(k): safe(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [safe(v) for v in x]
        return x

    return json.dumps(safe(obj), allow_nan=False, default=str)


def _numbers(x: Any) -> Any:
    """A number the server wrote as ``"NaN"``/``"Infinity"``/``"-Infinity"``, back as a float."""
    from ..store.canonical import NON_FINITE_STRINGS

    return NON_FINITE_STRINGS[x] if isinstance(x, str) and x in NON_FINITE_STRINGS else x


def _agent_numbers(a: dict[str, Any]) -> dict[str, Any]:
    """An agent as the server sent it, with its numbers (best value, trials' finals and
    curves) as floats again, as a data directory's are."""
    best = a.get("best")
    if isinstance(best, dict):
        a["best"] = {**best, "value": _numbers(best.get("value"))}
    trials = a.get("trials")
    if isinstance(trials, list):
        for t in trials:
            if isinstance(t, dict):
                t["final"] = _numbers(t.get("final"))
                if isinstance(t.get("curve"), list):
                    t["curve"] = [[p[0], _numbers(p[1])] if isinstance(p, list) and len(p) == 2
                                  else p for p in t["curve"]]
    return a


def decisions_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per decision, oldest first; ``explanation`` (the evidence) as JSON text:
    ``pl.col("explanation").str.json_decode()`` or ``json.loads`` reads it."""
    schema: dict[str, Any] = {
              "decision_id": pl.String, "agent_id": pl.String, "project": pl.String,
              "trial_id": pl.String, "kind": pl.String, "summary": pl.String,
              "time": pl.Datetime("us", "UTC"), "hlc": pl.String, "explanation": pl.String}
    return pl.DataFrame([{**{k: r.get(k) for k in schema}, "time": _time(r.get("time")),
                          "explanation": _json_text(r.get("explanation"))}
                         for r in rows], schema=schema)


def overrides_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per override sent to an agent, oldest first, with what became of it."""
    schema: dict[str, Any] = {
              "override_id": pl.String, "action": pl.String, "params": pl.String,
              "actor": pl.String, "reason": pl.String, "status": pl.String,
              "result": pl.String, "time": pl.Datetime("us", "UTC"), "hlc": pl.String}
    return pl.DataFrame([{**{k: r.get(k) for k in schema}, "time": _time(r.get("time")),
                          "params": _json_text(r.get("params"))} for r in rows],
                        schema=schema)


def check_kind(kind: Any) -> str | None:
    if kind is None:
        return None
    if not isinstance(kind, str) or kind not in DECISION_KINDS:
        raise UserInputError(f"unknown decision kind {kind!r}",
                             hint="one of: " + ", ".join(DECISION_KINDS))
    return kind
