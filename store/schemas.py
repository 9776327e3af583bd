"""Arrow schemas of the experiment graph's tables (imported only by store backends)."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["METRICS_SCHEMA", "RUNS_SCHEMA"]

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("project", pa.string()),
        ("name", pa.string()),
        ("status", pa.string()),
        ("created_at", pa.float64()),
        ("updated_at", pa.float64()),
        ("finished_at", pa.float64()),
        ("group", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("notes", pa.string()),
        ("config", pa.string()),  # JSON
        ("summary", pa.string()),  # JSON
        ("summary_set", pa.string()),  # JSON
        ("env", pa.string()),  # JSON
        ("git", pa.string()),  # JSON
        ("error", pa.string()),
        ("host", pa.string()),
        ("pid", pa.int64()),
        ("attach", pa.int64()),
        ("last_step", pa.int64()),
        ("ingested_seq", pa.int64()),
    ]
)

# Metrics are stored as chunks: one row per (run, key, WAL record) holding that record's
# points as list columns. Reading a 1,000,000-point curve is then ~200 rows of contiguous
# lists (about 20 ms) instead of a million-row index take (about 180 ms, measured).
METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("key", pa.string()),
        ("seq", pa.int64()),
        ("step_min", pa.int64()),
        ("step_max", pa.int64()),
        ("step", pa.list_(pa.int64())),
        ("value", pa.list_(pa.float64())),
        ("time", pa.list_(pa.float64())),
    ]
)

# One row per artifact version; the manifest (path, digest, size per file) is a blob.
ARTIFACTS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("type", pa.string()),
        ("project", pa.string()),
        ("digest", pa.string()),  # digest of the canonical manifest
        ("manifest_blob", pa.string()),
        ("files", pa.int64()),
        ("size", pa.int64()),
        ("metadata", pa.string()),  # JSON
        ("description", pa.string()),
        ("created_by", pa.string()),  # run id, or "" when logged outside a run
        ("created_at", pa.float64()),
    ]
)

# Movable names of versions: at most one version per (name, alias).
ALIASES_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("alias", pa.string()),
        ("version", pa.int64()),
        ("updated_at", pa.float64()),
    ]
)

# Tombstones of deleted artifact versions (one row per deletion). A table of its own rather
# than columns of ``artifacts``: data directories written before deletions existed stay
# readable as they are, and the version rows (digests, lineage) never change.
ARTIFACT_DELETIONS_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("digest", pa.string()),  # the version's manifest digest, for the record
        ("deleted_at", pa.float64()),
        ("deleted_by", pa.string()),  # actor, as in the audit trail
        ("reason", pa.string()),
        ("aliases", pa.list_(pa.string())),  # aliases removed with it
    ]
)

# Lineage: run -> artifact version ("produced"), artifact version -> run ("consumed").
# Node ids: "run:<run_id>", "artifact:<name>:v<version>".
EDGES_SCHEMA = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("kind", pa.string()),
        ("created_at", pa.float64()),
    ]
)

# Signed, hash-chained records (assay.store.signing.ChainedRecord rows), one chain per
# ``chain`` ("run:<project>" for finished-run records, "audit" for the audit log).
CHAIN_SCHEMA = pa.schema(
    [
        ("chain", pa.string()),
        ("seq", pa.int64()),
        ("kind", pa.string()),
        ("subject_id", pa.string()),
        ("payload_json", pa.string()),
        ("created_at", pa.string()),
        ("prev_hash", pa.string()),
        ("key_id", pa.string()),
        ("hash", pa.string()),
        ("signature", pa.string()),
    ]
)


# Controller agents: one row per agent, its objective and its persisted loop state.
AGENTS_SCHEMA = pa.schema(
    [
        ("agent_id", pa.string()),
        ("objective", pa.string()),  # objective name
        ("project", pa.string()),
        ("spec", pa.string()),  # JSON of the Objective
        ("status", pa.string()),
        ("state", pa.string()),  # JSON: searcher state, trials, budget use
        ("hlc", pa.string()),
        ("updated_at", pa.float64()),
        ("host", pa.string()),
        ("pid", pa.int64()),
    ]
)

# Every decision an agent makes (launch, stop, retry, fail, complete, override...), with why.
DECISIONS_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("agent_id", pa.string()),
        ("project", pa.string()),
        ("trial_id", pa.string()),
        ("kind", pa.string()),
        ("summary", pa.string()),
        ("explanation", pa.string()),  # JSON evidence
        ("hlc", pa.string()),
        ("time", pa.float64()),
    ]
)

# Human (or API) overrides, applied by the target agent at its next step.
OVERRIDES_SCHEMA = pa.schema(
    [
        ("override_id", pa.string()),
        ("agent_id", pa.string()),
        ("action", pa.string()),
        ("params", pa.string()),  # JSON
        ("actor", pa.string()),
        ("reason", pa.string()),
        ("status", pa.string()),  # pending | applied | rejected
        ("result", pa.string()),
        ("hlc", pa.string()),
        ("time", pa.float64()),
    ]
)

# Leases on configurations, so no two agents run the same config of a project.
LEASES_SCHEMA = pa.schema(
    [
        ("lease_key", pa.string()),  # "<project>/<canonical config key>"
        ("agent_id", pa.string()),
        ("trial_id", pa.string()),
        ("hlc", pa.string()),
        ("time", pa.float64()),
    ]
)

#: Every table of the experiment graph, with the columns that carry a BTREE index.
TABLES: dict[str, tuple[pa.Schema, tuple[str, ...]]] = {
    "runs": (RUNS_SCHEMA, ("run_id",)),
    "metrics": (METRICS_SCHEMA, ("run_id",)),
    "artifacts": (ARTIFACTS_SCHEMA, ("name",)),
    "aliases": (ALIASES_SCHEMA, ()),
    "artifact_deletions": (ARTIFACT_DELETIONS_SCHEMA, ("name",)),
    "edges": (EDGES_SCHEMA, ("src", "dst")),
    "chain": (CHAIN_SCHEMA, ("chain",)),
    "agents": (AGENTS_SCHEMA, ("agent_id",)),
    "decisions": (DECISIONS_SCHEMA, ("agent_id",)),
    "overrides": (OVERRIDES_SCHEMA, ("agent_id",)),
    "leases": (LEASES_SCHEMA, ("lease_key",)),
}
