"""The agents' part of the graph: agent state, decisions, overrides and config leases.

:class:`ControlStore` is the interface (with :class:`MemoryControlStore` for fast unit tests
and :class:`LanceControlStore` on the data directory's LanceDB). Writes take the directory's
ingest lock, so agents in several processes and the API server never race commits, and a
lease check-and-claim is atomic across them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "AGENT_HEARTBEAT_S",
    "AgentRow",
    "AgentStatus",
    "ControlStore",
    "Decision",
    "LanceControlStore",
    "MemoryControlStore",
    "Override",
    "OverrideStatus",
    "new_id",
]

#: Seconds between the saves of a running (or paused) agent's state, even when nothing
#: changed: one silent for three of them may be dead (the API and the fleet view say so).
AGENT_HEARTBEAT_S = 60.0


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class AgentStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"


class OverrideStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"


@dataclass(frozen=True)
class AgentRow:
    """An agent, its objective (as a dict) and its persisted loop state."""

    agent_id: str
    objective: str
    project: str
    spec: dict[str, Any]
    status: AgentStatus = AgentStatus.RUNNING
    state: dict[str, Any] = field(default_factory=dict)
    hlc: str = ""
    updated_at: float = 0.0
    host: str = ""
    pid: int = 0


@dataclass(frozen=True)
class Decision:
    """One decision with its evidence: why this config, why this stop."""

    agent_id: str
    project: str
    trial_id: str
    kind: str  # launch | stop | retry | fail | complete | override | reevaluate | finish
    summary: str
    explanation: dict[str, Any]
    hlc: str
    time: float
    decision_id: str = field(default_factory=lambda: new_id("d"))


@dataclass(frozen=True)
class Override:
    """A person's (or a script's) instruction to an agent, applied at its next step."""

    agent_id: str
    action: str  # pause | resume | stop | stop_run | budget | concurrency | space | pin
    params: dict[str, Any]
    actor: str
    reason: str
    hlc: str
    time: float
    status: OverrideStatus = OverrideStatus.PENDING
    result: str = ""
    override_id: str = field(default_factory=lambda: new_id("o"))


class ControlStore(ABC):
    """Persistence of agents. Every method may be called from any process."""

    @abstractmethod
    def save_agent(self, row: AgentRow) -> None: ...

    @abstractmethod
    def get_agent(self, agent_id: str) -> AgentRow | None: ...

    @abstractmethod
    def list_agents(self, project: str | None = None) -> list[AgentRow]: ...

    @abstractmethod
    def add_decisions(self, decisions: Sequence[Decision]) -> None: ...

    @abstractmethod
    def decisions(self, agent_id: str | None = None, project: str | None = None,
                  trial_id: str | None = None) -> list[Decision]:
        """Decisions in HLC order."""

    def stored_decisions(self, agent_id: str, decision_ids: Sequence[str]) -> set[str]:
        """Which of ``decision_ids`` the agent's decisions hold already (what a retried
        batch must not store twice)."""
        wanted = set(decision_ids)
        return {d.decision_id for d in self.decisions(agent_id=agent_id)
                if d.decision_id in wanted}

    @abstractmethod
    def add_override(self, o: Override) -> None: ...

    @abstractmethod
    def overrides(self, agent_id: str, status: OverrideStatus | None = None) -> list[Override]:
        """An agent's overrides in HLC order."""

    @abstractmethod
    def resolve_override(self, override_id: str, status: OverrideStatus, result: str) -> None: ...

    @abstractmethod
    def claim_lease(self, key: str, agent_id: str, trial_id: str, hlc: str,
                    limit: tuple[str, int] | None = None) -> str | None:
        """Claim ``key`` for ``agent_id``: None if claimed now (or already ours), else why
        not: the trial id of the holder, or ``"project budget"`` when ``limit`` =
        ``(prefix, n)`` and ``n`` leases with that prefix exist (a budget shared by every
        agent of a project). Atomic across processes."""

    @abstractmethod
    def count_leases(self, prefix: str) -> int:
        """Leases whose key starts with ``prefix`` (configs launched in a project)."""

    @abstractmethod
    def lease(self, key: str) -> tuple[str, str] | None:
        """Who holds ``key``: ``(agent_id, trial_id)``, or None when no one does."""


class MemoryControlStore(ControlStore):
    """In-memory, thread-safe; for unit tests."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentRow] = {}
        self._decisions: list[Decision] = []
        self._overrides: dict[str, Override] = {}
        self._leases: dict[str, tuple[str, str]] = {}
        self._mu = threading.Lock()

    def save_agent(self, row: AgentRow) -> None:
        with self._mu:
            self._agents[row.agent_id] = row

    def get_agent(self, agent_id: str) -> AgentRow | None:
        return self._agents.get(agent_id)

    def list_agents(self, project: str | None = None) -> list[AgentRow]:
        return [a for a in self._agents.values() if project in (None, a.project)]

    def add_decisions(self, decisions: Sequence[Decision]) -> None:
        with self._mu:
            self._decisions.extend(decisions)

    def decisions(self, agent_id: str | None = None, project: str | None = None,
                  trial_id: str | None = None) -> list[Decision]:
        out = [d for d in self._decisions if agent_id in (None, d.agent_id)
               and project in (None, d.project) and trial_id in (None, d.trial_id)]
        return sorted(out, key=lambda d: d.hlc)

    def add_override(self, o: Override) -> None:
        with self._mu:
            self._overrides[o.override_id] = o

    def overrides(self, agent_id: str, status: OverrideStatus | None = None) -> list[Override]:
        out = [o for o in self._overrides.values() if o.agent_id == agent_id
               and status in (None, o.status)]
        return sorted(out, key=lambda o: o.hlc)

    def resolve_override(self, override_id: str, status: OverrideStatus, result: str) -> None:
        with self._mu:
            self._overrides[override_id] = replace(self._overrides[override_id], status=status,
                                                   result=result)

    def claim_lease(self, key: str, agent_id: str, trial_id: str, hlc: str,
                    limit: tuple[str, int] | None = None) -> str | None:
        with self._mu:
            held = self._leases.get(key)
            if held is None:
                if limit is not None and self.count_leases(limit[0]) >= limit[1]:
                    return "project budget"
                self._leases[key] = (agent_id, trial_id)
                return None
            return None if held == (agent_id, trial_id) else held[1]

    def count_leases(self, prefix: str) -> int:
        return sum(1 for k in self._leases if k.startswith(prefix))

    def lease(self, key: str) -> tuple[str, str] | None:
        return self._leases.get(key)


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str, allow_nan=True)


class LanceControlStore(ControlStore):
    """The agents' tables in the data directory's LanceDB (writes under the ingest lock)."""

    def __init__(self, store: Any, lock: Any) -> None:
        self.store = store
        self.lock = lock

    def _rows(self, table: str, where: str | None = None) -> list[dict[str, Any]]:
        tbl = self.store.table(table)
        if tbl is None:
            return []
        q = tbl.search()
        if where:
            q = q.where(where)
        return q.limit(None).to_arrow().to_pylist()  # type: ignore[no-any-return]

    def _add(self, table: str, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        from .schemas import TABLES

        self.store.write_table(table).add(pa.Table.from_pylist(rows, schema=TABLES[table][0]))

    def _upsert(self, table: str, key: str, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        from .schemas import TABLES

        data = pa.Table.from_pylist(rows, schema=TABLES[table][0])
        (self.store.write_table(table).merge_insert(key).when_matched_update_all()
         .when_not_matched_insert_all().execute(data))

    @staticmethod
    def _q(v: str) -> str:
        from .lance import sql_str

        return sql_str(v)

    def save_agent(self, row: AgentRow) -> None:
        d = asdict(row)
        d.update(spec=_json(row.spec), state=_json(row.state), status=str(row.status),
                 updated_at=time.time())
        with self.lock:
            self._upsert("agents", "agent_id", [d])

    @staticmethod
    def _agent(r: dict[str, Any]) -> AgentRow:
        return AgentRow(agent_id=r["agent_id"], objective=r["objective"], project=r["project"],
                        spec=json.loads(r["spec"]), status=AgentStatus(r["status"]),
                        state=json.loads(r["state"] or "{}"), hlc=r["hlc"] or "",
                        updated_at=r["updated_at"] or 0.0, host=r["host"] or "",
                        pid=r["pid"] or 0)

    def get_agent(self, agent_id: str) -> AgentRow | None:
        rows = self._rows("agents", f"agent_id = {self._q(agent_id)}")
        return self._agent(rows[0]) if rows else None

    def list_agents(self, project: str | None = None) -> list[AgentRow]:
        rows = self._rows("agents", f"project = {self._q(project)}" if project else None)
        return sorted((self._agent(r) for r in rows), key=lambda a: a.hlc)

    def add_decisions(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        rows = [{**asdict(d), "explanation": _json(d.explanation)} for d in decisions]
        with self.lock:
            self._add("decisions", rows)

    def decisions(self, agent_id: str | None = None, project: str | None = None,
                  trial_id: str | None = None) -> list[Decision]:
        conds = [f"{c} = {self._q(v)}" for c, v in (("agent_id", agent_id), ("project", project),
                                                     ("trial_id", trial_id)) if v]
        rows = self._rows("decisions", " AND ".join(conds) if conds else None)
        out = [Decision(**{**r, "explanation": json.loads(r["explanation"])}) for r in rows]
        return sorted(out, key=lambda d: d.hlc)

    def stored_decisions(self, agent_id: str, decision_ids: Sequence[str]) -> set[str]:
        ids = sorted(set(decision_ids))
        if not ids:
            return set()
        tbl = self.store.table("decisions")
        if tbl is None:
            return set()
        where = (f"agent_id = {self._q(agent_id)} AND decision_id IN ("
                 + ", ".join(self._q(i) for i in ids) + ")")
        got = tbl.search().where(where).select(["decision_id"]).limit(None).to_arrow()
        return {str(x) for x in got["decision_id"].to_pylist()}

    def add_override(self, o: Override) -> None:
        d = {**asdict(o), "params": _json(o.params), "status": str(o.status)}
        with self.lock:
            self._add("overrides", [d])

    def overrides(self, agent_id: str, status: OverrideStatus | None = None) -> list[Override]:
        where = f"agent_id = {self._q(agent_id)}"
        if status is not None:
            where += f" AND status = {self._q(str(status))}"
        out = [Override(**{**r, "params": json.loads(r["params"]),
                           "status": OverrideStatus(r["status"])})
               for r in self._rows("overrides", where)]
        return sorted(out, key=lambda o: o.hlc)

    def resolve_override(self, override_id: str, status: OverrideStatus, result: str) -> None:
        with self.lock:
            tbl = self.store.write_table("overrides")
            tbl.update(where=f"override_id = {self._q(override_id)}",
                       values={"status": str(status), "result": result})

    def claim_lease(self, key: str, agent_id: str, trial_id: str, hlc: str,
                    limit: tuple[str, int] | None = None) -> str | None:
        with self.lock:
            rows = self._rows("leases", f"lease_key = {self._q(key)}")
            if rows:
                r = rows[0]
                return None if (r["agent_id"], r["trial_id"]) == (agent_id, trial_id) else r["trial_id"]
            if limit is not None and self.count_leases(limit[0]) >= limit[1]:
                return "project budget"
            self._add("leases", [{"lease_key": key, "agent_id": agent_id, "trial_id": trial_id,
                                  "hlc": hlc, "time": time.time()}])
            return None

    def count_leases(self, prefix: str) -> int:
        tbl = self.store.table("leases")
        if tbl is None:
            return 0
        like = prefix.replace("'", "''").replace("%", "\\%").replace("_", "\\_")
        return int(tbl.count_rows(f"lease_key LIKE '{like}%'"))

    def lease(self, key: str) -> tuple[str, str] | None:
        rows = self._rows("leases", f"lease_key = {self._q(key)}")
        return (str(rows[0]["agent_id"]), str(rows[0]["trial_id"])) if rows else None
