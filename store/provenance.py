"""Signed run records, the audit log, and ``assay verify``.

When a run finishes, the ingester seals its record: config, summary (with each metric's
min/max), status and error text, digests over all its metric rows and their times, the
digests of the artifact versions it produced and used, and its code and environment
capture, canonicalized, hashed, chained to the previous record of its project (chain
``run:<project>``) and signed with the data directory's Ed25519 key. Tags and notes are not
sealed: people edit them after a run ends (and agents tag runs ``stale``).
:func:`verify` recomputes every one of those from the stored data and checks every chain, so
a changed metric value, config entry, artifact byte, or a removed record is caught and named.

Every change to shared state (a run's status, an alias move, an override) appends an entry
to the data directory's audit trail (:mod:`.audit`): who, when, what, why. Run chains are
stored in the ``chain`` table; appends happen under the data directory's ingest lock, so each
chain stays linear across processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFoundError
from .artifacts import deleted_versions
from .audit import AuditEntry, AuditTrail
from .blobs import BlobStore
from .digest import rows_digest
from .history import history_frame
from .ingest import IngestLock
from .lance import LanceStore, sql_str
from .manifests import get_manifest
from .records import RunRecord, RunStatus
from .rewind import Rewind
from .schemas import CHAIN_SCHEMA
from .signing import ChainedRecord, KeyPair, PublicKeyLike, seal, verify_audit_log, verify_chain
from .wal import attach_is_live

__all__ = ["ChainStore", "Finalizer", "Problem", "run_record_payload", "verify"]

log = logging.getLogger(__name__)

def run_chain(project: str) -> str:
    return f"run:{project}"


class ChainStore:
    """Reads and appends the chains of the ``chain`` table."""

    def __init__(self, store: LanceStore) -> None:
        self.store = store

    def records(self, chain: str) -> list[ChainedRecord]:
        """Every record of a chain, in ``seq`` order."""
        tbl = self.store.table("chain")
        if tbl is None:
            return []
        t = tbl.search().where(f"chain = {sql_str(chain)}").limit(None).to_arrow()
        rows = sorted(t.to_pylist(), key=lambda r: r["seq"])
        return [ChainedRecord.from_row(r) for r in rows]

    def chains(self, prefix: str = "") -> list[str]:
        tbl = self.store.table("chain")
        if tbl is None:
            return []
        names = set(tbl.search().select(["chain"]).limit(None).to_arrow()["chain"].to_pylist())
        return sorted(n for n in names if n.startswith(prefix))

    def head(self, chain: str) -> ChainedRecord | None:
        """The last record of a chain (callers that append hold the ingest lock)."""
        tbl = self.store.table("chain")
        if tbl is None:
            return None
        seqs = tbl.search().where(f"chain = {sql_str(chain)}").select(["seq"]).limit(None)
        col = seqs.to_arrow()["seq"].to_pylist()
        if not col:
            return None
        top = max(col)
        t = tbl.search().where(f"chain = {sql_str(chain)} AND seq = {top}").limit(None).to_arrow()
        return ChainedRecord.from_row(t.to_pylist()[0])

    def append(self, chain: str, records: Iterable[ChainedRecord]) -> None:
        import pyarrow as pa

        rows = [{"chain": chain, **r.to_row()} for r in records]
        if rows:
            self.store.write_table("chain").add(pa.Table.from_pylist(rows, schema=CHAIN_SCHEMA))


def run_record_payload(store: LanceStore, run: RunRecord) -> dict[str, Any]:
    """What a finished run's signed record covers, recomputed from the stored data."""
    from .lineage import run_artifacts

    hist = history_frame(run.run_id, store.metric_chunks(run.run_id))
    produced, used = run_artifacts(store, run.run_id)
    return {
        "v": RECORD_VERSION,
        "run_id": run.run_id,
        "project": run.project,
        "name": run.name,
        "group": run.group,
        "status": str(run.status),
        "error": run.error,
        "config": run.config,
        "summary": run.summary_values(),
        "summary_stats": {k: {f: v.get(f) for f in ("min", "max", "step")}
                          for k, v in sorted(run.summary.items())},
        "metrics": {"rows": hist.height, "digest": rows_digest(hist.select("key", "step", "value")),
                    "times": _times_digest(hist)},
        "artifacts": {"produced": produced, "used": used},
        "git": run.git,
        "env": run.env,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "attach": run.attach,
    }


RECORD_VERSION = 4
"""Version 2 also seals the error text, each metric's min/max/step summary and the metric
rows' times; version 3 the run's group; version 4 the audit trail's newest entry when the
run was sealed (``audit_anchor``). Older records (version 1: no ``v``) are checked on the
fields they hold."""
_V2_ONLY = ("v", "error", "summary_stats")
_V3_ONLY = ("group",)
_SEALED_ONLY = ("audit_anchor",)
"""Fields of the record that are not recomputed from the stored run, but checked apart."""


def _times_digest(hist: Any) -> str:
    """SHA-256 of the metric rows' times (microseconds), in the history's (key, step) order."""
    import hashlib

    import polars as pl

    micros = hist.get_column("time").cast(pl.Int64).fill_null(-1).to_numpy()
    return "sha256:" + hashlib.sha256(b"assay.times_digest.v1\n" +
                                      micros.astype("<i8").tobytes()).hexdigest()


def _as_sealed(payload: dict[str, Any], sealed: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` cut to the fields a record of ``sealed``'s version holds."""
    v = sealed.get("v", 1)
    if v >= RECORD_VERSION:
        return payload
    if v >= 3:
        return {**payload, "v": v}
    old = {k: x for k, x in payload.items() if k not in _V3_ONLY}
    if v >= 2:
        return {**old, "v": v}
    old = {k: x for k, x in old.items() if k not in _V2_ONLY}
    old["metrics"] = {k: x for k, x in payload["metrics"].items() if k != "times"}
    return old


class Finalizer:
    """Called by the ingester for runs that finished: seals their record, audits the status."""

    def __init__(self, store: LanceStore, data_dir: Path, lock: IngestLock) -> None:
        self.store = store
        self.lock = lock
        self.key = KeyPair.load_or_create(data_dir)
        self.chains = ChainStore(store)
        self.audit = AuditTrail(data_dir, self.key)

    def __call__(self, runs: list[RunRecord]) -> None:
        for run in runs:
            with self.lock:
                chain = run_chain(run.project)
                payload = run_record_payload(self.store, run)
                payload["audit_anchor"] = self.audit.anchor()
                rec = seal(payload, self.chains.head(chain), self.key, kind="run",
                           subject_id=run.run_id)
                self.chains.append(chain, [rec])
            self.audit.record(f"run:{run.run_id}", "run.status", f"run:{run.run_id}",
                              run.error.splitlines()[-1] if run.error else "",
                              {"status": str(run.status), "record": rec.hash})

    def rewound(self, rw: Rewind, dropped: int) -> None:
        """Audit a rewind the ingester applied (a replay after a crash may repeat the entry;
        ``seq`` tells the copies apart from a second rewind)."""
        self.audit.record(f"run:{rw.run_id}", "run.rewind", f"run:{rw.run_id}",
                          f"attach {rw.attach} restarts the run at step {rw.step}",
                          {"attach": rw.attach, "step": rw.step, "seq": rw.seq,
                           "points_superseded": dropped})


@dataclass(frozen=True)
class Problem:
    """One failed check of ``assay verify``: which record, and why."""

    chain: str
    subject_id: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"{self.chain} #{self.seq} ({self.subject_id}): {self.reason}"


def _diff(want: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) | set(got)):
            if k not in got:
                out.append(f"{path}{k} removed")
            elif k not in want:
                out.append(f"{path}{k} added")
            else:
                out += _diff(want[k], got[k], f"{path}{k}.")
        return out
    same = json.dumps(want, sort_keys=True, default=str) == json.dumps(got, sort_keys=True,
                                                                        default=str)
    return [] if same else [f"{path.rstrip('.')} changed"]


def _check_artifacts(blobs: BlobStore, payload: Mapping[str, Any],
                     deleted: Mapping[tuple[str, int], Any] | None = None) -> list[str]:
    bad = []
    for role in ("produced", "used"):
        for a in payload.get("artifacts", {}).get(role, []):
            if deleted and (a["name"], a["version"]) in deleted:
                # Deleted on purpose (tombstone + audit entry): its bytes may be collected.
                # The record's digests are still compared with the version rows above.
                continue
            try:
                for e in get_manifest(blobs, a["manifest_blob"]):
                    with blobs.open(e.digest) as f:
                        while f.read(1 << 20):
                            pass
            except IntegrityError as exc:
                bad.append(f"artifact {a['name']}:v{a['version']} ({role}): {exc.message}")
            except Exception as exc:  # noqa: BLE001 - a missing blob is as bad as a changed one
                bad.append(f"artifact {a['name']}:v{a['version']} ({role}): {exc}")
    return bad


def _check_git_diff(blobs: BlobStore, payload: Mapping[str, Any]) -> list[str]:
    """The sealed record names the blob of the code's uncommitted diff: where it is stored,
    its bytes must still hash to it (read through the blob store, which checks the digest).
    A missing one is reported when the record says it was stored here (``diff_stored``: a
    local run's blob store, or a remote run's server once the SDK sent it there); older
    records, and remote runs whose upload failed, keep theirs in the client's data directory,
    so absence proves nothing for them."""
    git = payload.get("git")
    digest = git.get("diff_blob") if isinstance(git, Mapping) else None
    if not digest:
        return []
    try:
        with blobs.open(digest) as f:
            while f.read(1 << 20):
                pass
    except IntegrityError as exc:
        return [f"the git diff blob {digest}: {exc.message}"]
    except (NotFoundError, FileNotFoundError):
        if isinstance(git, Mapping) and git.get("diff_stored") is True:
            return [f"the git diff blob {digest} is missing (the record says it was stored)"]
        return []
    return []


def _audited_deletions(deleted: Mapping[tuple[str, int], Any],
                       audit_records: list[ChainedRecord] | None) -> dict[tuple[str, int], Any]:
    """The tombstones the signed audit trail confirms: a tombstone row alone (which anyone
    who can write the table can add) must not excuse a version's bytes from the check.
    Without a trail (``None``) every tombstone counts."""
    if not deleted or audit_records is None:
        return dict(deleted) if audit_records is None else {}
    confirmed = set()
    for rec in audit_records:
        e = AuditEntry.from_record(rec)
        if e.action == "artifact.delete" and e.target.startswith("artifact:"):
            confirmed.add((e.target[len("artifact:"):], int(e.details.get("version", -1))))
    return {k: v for k, v in deleted.items() if k in confirmed}


def verify(store: LanceStore, blobs: BlobStore, public_key: PublicKeyLike,
           run_id: str | None = None,
           audit: AuditTrail | None = None) -> tuple[int, list[Problem]]:
    """Check every run record (or one run's) and the audit trail. Returns (checked, problems)."""
    chains = ChainStore(store)
    problems: list[Problem] = []
    checked = 0
    names = chains.chains("run:")
    if run_id is not None:
        run = store.get_run(run_id)
        names = [run_chain(run.project)] if run is not None else []
    sealed: set[str] = set()
    # The whole trail is read only when needed (a full verify, or deletions to confirm):
    # one run's check looks its anchor up in the trail's index (read incrementally).
    tombstones = deleted_versions(store)
    audit_records = (audit.records() if audit is not None and (run_id is None or tombstones)
                     else [])
    deleted = _audited_deletions(tombstones, audit_records if audit is not None else None)
    for name in names:
        recs = chains.records(name)
        for p in verify_chain(recs, public_key):
            problems.append(Problem(name, p.subject_id or "?", p.seq if p.seq is not None else -1,
                                    str(p)))
        latest: dict[str, ChainedRecord] = {}
        for r in recs:
            latest[r.subject_id] = r  # older records of a resumed run are history
        sealed.update(latest)
        for rid, rec in latest.items():
            if run_id is not None and rid != run_id:
                continue
            run = store.get_run(rid)
            if run is None:
                checked += 1
                problems.append(Problem(name, rid, rec.seq, "the run is missing from the store"))
                continue
            sealed_attach = int(rec.payload.get("attach", 0))
            if run.status is RunStatus.RUNNING and run.attach > sealed_attach:
                # Resumed and still running: its newest seal describes an earlier attach,
                # which this one continues (and may have rewound). It is sealed again, and
                # checked, once it finishes: if a writer of that attach may still be at
                # work. A row that only says so (edited) is not let through.
                if attach_is_live(Path(store.root) / "wal", rid, run.attach):
                    continue
                checked += 1
                problems.append(Problem(
                    name, rid, rec.seq,
                    f"the run's row says attach {run.attach} is running, but no write-ahead "
                    f"log of it exists (a running attach keeps one until it is ingested to "
                    f"its end): the row does not match its signed record of attach "
                    f"{sealed_attach}"))
                continue
            checked += 1
            held = {k: x for k, x in rec.payload.items() if k not in _SEALED_ONLY}
            for d in _diff(held, _as_sealed(run_record_payload(store, run), rec.payload)):
                problems.append(Problem(name, rid, rec.seq, d))
            anchor = rec.payload.get("audit_anchor")
            if audit is not None and isinstance(anchor, Mapping) \
                    and audit.hash_at(anchor.get("seq")) != anchor.get("hash"):
                problems.append(Problem(name, rid, rec.seq, (
                    f"the audit trail lacks entry {anchor.get('seq')} "
                    f"({str(anchor.get('hash'))[:12]}), which this run's signed record names as "
                    "its newest when the run was sealed: the trail was cut back, deleted or "
                    "rewritten")))
            for d in _check_artifacts(blobs, rec.payload, deleted) + _check_git_diff(
                    blobs, rec.payload):
                problems.append(Problem(name, rid, rec.seq, d))
    runs = store.runs_table()
    for rid, project, status in zip(runs["run_id"].to_pylist(), runs["project"].to_pylist(),
                                    runs["status"].to_pylist()):
        if status != "running" and rid not in sealed and run_id in (None, rid):
            checked += 1
            problems.append(Problem(run_chain(project), rid, -1,
                                    "finished run has no signed record (it was removed from "
                                    "the chain's end, or never sealed)"))
    if run_id is None and audit is not None:
        # Against ``public_key`` (a pinned key, say), not the audit trail's own key.
        for p in verify_audit_log(audit_records, public_key):
            problems.append(Problem("audit", "audit", -1, str(p)))
        problems += _sealed_but_missing(audit_records,
                                        {r.hash for n in names for r in chains.records(n)})
    return checked, problems


def _sealed_but_missing(audit_records: list[ChainedRecord], hashes: set[str]) -> list[Problem]:
    """Every seal is also in the signed audit trail (``run.status`` with the record's hash):
    a chain record (say, the newest run's, removed with its run) that the audit trail names
    but the chain lacks was removed."""
    out = []
    for rec in audit_records:
        e = AuditEntry.from_record(rec)
        h = e.details.get("record") if e.action == "run.status" else None
        if isinstance(h, str) and h not in hashes:
            rid = e.target.removeprefix("run:")
            out.append(Problem("audit", rid, -1, f"the audit trail names sealed record "
                               f"{h[:12]} of run {rid}, which no chain holds (the record was "
                               "removed)"))
    return out
