""":class:`RemoteControlStore`: the agents' control store kept by an ``assay server``.

An agent whose trials log to a team server keeps its state, decisions, overrides and config
leases there too, over the routes of :mod:`assay.api.agent_store` (server feature
``agent_store``): the fleet dashboard and supervisors see it, overrides sent to the server
reach it, and agents of one project on several machines share leases (no config launched
twice, one project budget). The semantics are :class:`~assay.store.control.LanceControlStore`'s
(the server holds one): same rows back, decisions, overrides and agents in HLC order, an
atomic check-and-claim of leases.

What differs from a data directory:

- The token decides who may write: the server sets an agent's ``spec["owner"]`` to the
  token's name when it registers it, and only that owner (or a supervisor) writes its row,
  decisions, override outcomes and leases. An agent's row must exist before its decisions,
  overrides or leases, and agent ids are 4-64 letters and digits (the API's form).
- Values (``spec``, ``state``, ``explanation``, ``params``) travel as JSON: what
  ``LanceControlStore`` would give back (tuples as lists, other objects as their ``str``).
  NaN and infinities, which strict JSON lacks, travel as the strings ``"NaN"``,
  ``"Infinity"`` and ``"-Infinity"``, and a string with one of those values (or one starting
  with NUL) gets a leading NUL, the convention of :mod:`assay.store.canonical`, so a float
  comes back a float and a string a string (:func:`encode_value`, :func:`decode_value`).
- A server that does not answer (connection refused, timeouts, 502/503/504, 429) is retried
  for ``retry_for`` seconds with a short backoff, then an :class:`~assay.errors.AssayError`
  names the server. Every write is idempotent, so a retry after a lost answer changes
  nothing: decisions and overrides by id, a lease already held by its claimer, a row put
  again. Refusals (400, 401, 403, 404, 409, 413) are raised at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Self

from ..errors import (
    AssayError,
    NotFoundError,
    PermissionDeniedError,
    ServerUnreachableError,
    UserInputError,
)
from .canonical import from_strict_json, to_strict_json
from .control import AgentRow, AgentStatus, ControlStore, Decision, Override, OverrideStatus

__all__ = ["FEATURE", "RemoteControlStore", "decode_value", "encode_value"]

FEATURE = "agent_store"
"""The server feature (``GET /api/health``) that says it serves the routes used here."""

_AGENT_ID = re.compile(r"^[A-Za-z0-9]{4,64}$")
_OVERRIDE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_PAGE = 5000  # the most decisions the server answers at once


def encode_value(v: Any) -> Any:
    """A JSON value with NaN and infinities as strings and strings that would read as them
    escaped with a leading NUL (see the module docstring); dict order is kept. The
    convention of :func:`~assay.store.canonical.to_strict_json`."""
    return to_strict_json(v)


def decode_value(v: Any) -> Any:
    """The inverse of :func:`encode_value`."""
    return from_strict_json(v)


def _plain(v: Any) -> Any:
    """``v`` as LanceControlStore stores it (``json.dumps(default=str)``, read back), encoded."""
    return encode_value(json.loads(json.dumps(v, default=str, allow_nan=True)))


def row_from_json(d: Mapping[str, Any]) -> AgentRow:
    return AgentRow(agent_id=d["agent_id"], objective=d["objective"], project=d["project"],
                    spec=decode_value(d["spec"]), status=AgentStatus(d["status"]),
                    state=decode_value(d["state"]), hlc=d["hlc"],
                    updated_at=float(d["updated_at"]), host=d["host"], pid=int(d["pid"]))


def decision_from_json(d: Mapping[str, Any]) -> Decision:
    return Decision(agent_id=d["agent_id"], project=d["project"], trial_id=d["trial_id"],
                    kind=d["kind"], summary=d["summary"],
                    explanation=decode_value(d["explanation"]), hlc=d["hlc"],
                    time=float(d["time"]), decision_id=d["decision_id"])


def override_from_json(d: Mapping[str, Any]) -> Override:
    return Override(agent_id=d["agent_id"], action=d["action"], params=decode_value(d["params"]),
                    actor=d["actor"], reason=d["reason"], hlc=d["hlc"], time=float(d["time"]),
                    status=OverrideStatus(d["status"]), result=d["result"],
                    override_id=d["override_id"])


def _agent_path(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
        raise UserInputError(f"an agent kept by a server has an id of 4-64 letters and digits, "
                             f"not {agent_id!r}", hint="agent ids are made by new_id-like "
                                                       "helpers: 'ag' and hex digits")
    return f"/api/agents/{agent_id}"


class RemoteControlStore(ControlStore):
    """The control store of an ``assay server`` (see the module docstring).

    Args:
        server: the server's root URL, as ``assay server`` prints it (``$ASSAY_SERVER``).
        token: a researcher's (or supervisor's) token; viewers can only read.
        timeout: seconds per HTTP request.
        retry_for: seconds during which a server that does not answer is retried.

    Thread-safe (one ``httpx.Client``). Close it with :meth:`close` or use it as a context
    manager.
    """

    def __init__(self, server: str, token: str | None, timeout: float = 30.0, *,
                 retry_for: float = 8.0) -> None:
        import httpx

        from ..sdk.remote import _auth_headers

        self.server = server.rstrip("/")
        self.retry_for = retry_for
        self._http = httpx.Client(base_url=self.server, headers=_auth_headers(token),
                                  timeout=timeout)
        self._checked = False
        self._serves: bool | None = None
        self._check_mu = threading.Lock()
        self._override_agents: dict[str, str] = {}  # override id -> agent id, as listed

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, url: str, **kw: Any) -> Any:
        """One request, retried while the server does not answer; its JSON object."""
        import httpx

        start = time.monotonic()
        delay, tries = 0.2, 0
        while True:
            tries += 1
            why: str
            try:
                resp = self._http.request(method, url, **kw)
            except httpx.TransportError as exc:
                why, wait = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, delay
            else:
                if resp.status_code not in _RETRY_STATUS:
                    return self._answer(resp, url)
                why, wait = f"it answered {resp.status_code}", delay
                after = resp.headers.get("Retry-After", "")
                if after.replace(".", "", 1).isdigit():
                    wait = max(delay, min(float(after), 5.0))
            elapsed = time.monotonic() - start
            if elapsed + wait > self.retry_for:
                raise ServerUnreachableError(
                    f"the assay server at {self.server} did not answer {method} {url} "
                    f"({tries} tries in {elapsed:.1f} s; last: {why})",
                    hint=f"check that `assay server` runs at {self.server} ($ASSAY_SERVER) and "
                         "that this machine reaches it; the agent's state is kept there")
            time.sleep(wait)
            delay = min(delay * 2, 2.0)

    def _answer(self, resp: Any, url: str) -> Any:
        from ..sdk.remote import _raise_for

        try:
            _raise_for(resp)
        except PermissionDeniedError as exc:
            if resp.status_code != 401:
                raise
            raise PermissionDeniedError(
                exc.message, hint="pass a token this server knows ($ASSAY_TOKEN): a "
                                  "researcher's, made with `assay token create NAME --role "
                                  "researcher` on the server") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise AssayError(f"{self.server} answered {url} with something that is not an assay "
                             "server's JSON", hint="check the URL: the server's root, as "
                                                   "`assay server` prints it (without /api)")
        return body

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        self._require_feature()
        return self._send(method, url, **kw)

    def whoami(self) -> dict[str, Any]:
        """The token's name and role on the server (``GET /api/whoami``).

        Raises:
            PermissionDeniedError: the server refuses the token.
        """
        return dict(self._send("GET", "/api/whoami"))

    def serves(self) -> bool:
        """Whether the server keeps agents' state (its ``/api/health`` lists
        :data:`FEATURE`); asked once. Raises ServerUnreachableError when it cannot tell."""
        if self._serves is None:
            feats = self._send("GET", "/api/health").get("features")
            self._serves = isinstance(feats, list) and FEATURE in feats
        return self._serves

    def _require_feature(self) -> None:
        if self._checked:
            return
        with self._check_mu:
            if self._checked:
                return
            from .. import __version__

            if not self.serves():
                body = self._send("GET", "/api/health")
                raise AssayError(
                    f"the server {self.server} (assay {body.get('version', '?')}) cannot keep "
                    f"agents' state: it lacks the {FEATURE!r} feature",
                    hint=f"upgrade the server to assay {__version__} (this client's version), "
                         "or keep the agent's state in a local data directory")
            self._checked = True

    # -- agents ---------------------------------------------------------------------------
    def save_agent(self, row: AgentRow) -> None:
        """Create or replace the row (the server sets ``updated_at``, and ``spec["owner"]``
        to the token's name unless a supervisor names another)."""
        body = {"objective": row.objective, "project": row.project, "spec": _plain(row.spec),
                "status": str(row.status), "state": _plain(row.state), "hlc": row.hlc,
                "host": row.host, "pid": row.pid}
        self._call("PUT", _agent_path(row.agent_id) + "/row", json=body)

    def get_agent(self, agent_id: str) -> AgentRow | None:
        if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
            return None  # no agent kept by a server has such an id
        try:
            return row_from_json(self._call("GET", _agent_path(agent_id) + "/row")["agent"])
        except NotFoundError:
            return None

    def list_agents(self, project: str | None = None) -> list[AgentRow]:
        params = {"project": project} if project else {}
        return [row_from_json(d) for d in self._call("GET", "/api/agent-rows",
                                                     params=params)["agents"]]

    # -- decisions ------------------------------------------------------------------------
    def add_decisions(self, decisions: Sequence[Decision]) -> None:
        """Post decisions, grouped by agent (each agent's row must exist); a decision whose
        id the server holds already is skipped, so a retry never duplicates."""
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for d in decisions:
            by_agent.setdefault(d.agent_id, []).append(
                {**asdict(d), "explanation": _plain(d.explanation)})
        for agent_id, rows in by_agent.items():
            for i in range(0, len(rows), _PAGE):
                self._call("POST", _agent_path(agent_id) + "/decisions",
                           json={"decisions": rows[i:i + _PAGE]})

    def decisions(self, agent_id: str | None = None, project: str | None = None,
                  trial_id: str | None = None) -> list[Decision]:
        params: dict[str, Any] = {k: v for k, v in (("agent_id", agent_id), ("project", project),
                                                    ("trial_id", trial_id)) if v}
        out: list[Decision] = []
        while True:  # pages from the oldest: stable while agents append newer ones
            body = self._call("GET", "/api/decisions/raw",
                              params={**params, "offset": len(out), "limit": _PAGE})
            page = body["decisions"]
            out += (decision_from_json(d) for d in page)
            if not page or len(out) >= int(body["total"]):
                return out

    # -- overrides ------------------------------------------------------------------------
    def add_override(self, o: Override) -> None:
        """Store an override as sent by the token's holder (``o.actor`` must be its name);
        the server audits it as its own override route does."""
        self._call("POST", _agent_path(o.agent_id) + "/overrides/raw",
                   json={**asdict(o), "params": _plain(o.params), "status": str(o.status)})

    def overrides(self, agent_id: str, status: OverrideStatus | None = None) -> list[Override]:
        if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
            return []
        params = {"status": str(status)} if status is not None else {}
        try:
            body = self._call("GET", _agent_path(agent_id) + "/overrides/raw", params=params)
        except NotFoundError:
            return []  # no such agent: none sent to it, as a data directory says
        out = [override_from_json(d) for d in body["overrides"]]
        self._override_agents.update((o.override_id, o.agent_id) for o in out)
        return out

    def resolve_override(self, override_id: str, status: OverrideStatus, result: str) -> None:
        """Record what became of an override. The server needs its agent: the agent's own
        pending overrides (listed before) name it, else the server is asked."""
        if not _OVERRIDE_ID.match(override_id):
            raise NotFoundError(f"no override {override_id!r}",
                                hint="overrides(agent_id) lists an agent's overrides")
        agent_id = self._override_agents.get(override_id) or self._override_agent(override_id)
        self._call("POST", f"{_agent_path(agent_id)}/overrides/{override_id}/resolve",
                   json={"status": str(status), "result": result})

    def _override_agent(self, override_id: str) -> str:
        body = self._call("GET", "/api/overrides/raw", params={"override_id": override_id})
        rows = body["overrides"]
        if not rows:
            raise NotFoundError(f"no override {override_id!r} on {self.server}",
                                hint="overrides(agent_id) lists an agent's overrides")
        return str(rows[0]["agent_id"])

    # -- leases ---------------------------------------------------------------------------
    def claim_lease(self, key: str, agent_id: str, trial_id: str, hlc: str,
                    limit: tuple[str, int] | None = None) -> str | None:
        body = {"key": key, "agent_id": agent_id, "trial_id": trial_id, "hlc": hlc,
                "limit": None if limit is None else [limit[0], int(limit[1])]}
        holder = self._call("POST", "/api/leases/claim", json=body)["holder"]
        return None if holder is None else str(holder)

    def count_leases(self, prefix: str) -> int:
        return int(self._call("GET", "/api/leases/count", params={"prefix": prefix})["count"])

    def lease(self, key: str) -> tuple[str, str] | None:
        body = self._call("GET", "/api/leases/one", params={"key": key})
        if body.get("agent_id") is None:
            return None
        return str(body["agent_id"]), str(body["trial_id"])
