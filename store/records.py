"""Record types of the experiment graph: run states, run records and table schemas."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from ..errors import UserInputError

__all__ = [
    "RESERVED_PREFIX",
    "RunRecord",
    "RunStatus",
    "merge_summary",
    "relogs",
    "run_from_row",
    "run_to_row",
    "validate_name",
]

RESERVED_PREFIX = "sys/"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class RunStatus(StrEnum):
    """Lifecycle of a run. ``crashed`` is set by recovery when a process died mid-run."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    CRASHED = "crashed"

    @property
    def finished(self) -> bool:
        return self is not RunStatus.RUNNING


def validate_name(kind: str, value: object) -> str:
    """Check a project, run or group name: 1-128 chars of letters, digits, ``_ . -``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise UserInputError(
            f"invalid {kind} name {value!r}",
            hint=f"a {kind} name is 1-128 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (e.g. 'digits-mlp')",
        )
    return value


def check_tags(tags: object) -> list[str]:
    """A run's tags: a list of strings of 1-64 characters (one string is one tag), in order,
    without repeats."""
    from collections.abc import Iterable, Mapping

    if isinstance(tags, (bytes, Mapping)) or not isinstance(tags, Iterable):
        raise UserInputError(f"tags must be a list of strings, got {type(tags).__name__}",
                             hint='e.g. tags=["baseline", "fp16"]')
    items = [tags] if isinstance(tags, str) else list(tags)
    for t in items:
        if not isinstance(t, str) or not t or len(t) > 64:
            raise UserInputError(f"invalid tag {t!r}", hint="tags are strings of 1-64 characters")
    return list(dict.fromkeys(items))


def check_notes(notes: object) -> str:
    if not isinstance(notes, str) or len(notes) > 10_000:
        raise UserInputError("notes must be a string of at most 10,000 characters",
                             hint="write a few lines; keep longer reports as an artifact")
    return notes


@dataclass(frozen=True)
class RunRecord:
    """A run as stored in the graph (one row of the ``runs`` table).

    ``summary`` maps each metric key to ``{"last", "min", "max", "step"}``; ``summary_set``
    holds values the user set explicitly (they win over the automatic ones).
    """

    run_id: str
    project: str
    name: str
    status: RunStatus
    created_at: float
    updated_at: float
    finished_at: float | None = None
    group: str = ""
    tags: tuple[str, ...] = ()
    notes: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    summary_set: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    host: str = ""
    pid: int = 0
    attach: int = 0
    last_step: int = -1
    ingested_seq: int = -1

    def summary_values(self) -> dict[str, Any]:
        """Last value of each metric, overridden by explicitly set summary values."""
        out: dict[str, Any] = {k: v["last"] for k, v in self.summary.items()}
        out.update(self.summary_set)
        return out


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), default=str)


def run_to_row(r: RunRecord) -> dict[str, Any]:
    """The ``runs`` table row of a record (JSON columns serialized)."""
    return {
        "run_id": r.run_id,
        "project": r.project,
        "name": r.name,
        "status": str(r.status),
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "finished_at": r.finished_at,
        "group": r.group,
        "tags": list(r.tags),
        "notes": r.notes,
        "config": _dumps(r.config),
        "summary": _dumps(r.summary),
        "summary_set": _dumps(r.summary_set),
        "env": _dumps(r.env),
        "git": _dumps(r.git),
        "error": r.error,
        "host": r.host,
        "pid": r.pid,
        "attach": r.attach,
        "last_step": r.last_step,
        "ingested_seq": r.ingested_seq,
    }


def run_from_row(row: dict[str, Any]) -> RunRecord:
    """Inverse of :func:`run_to_row`."""
    import json

    return RunRecord(
        run_id=row["run_id"],
        project=row["project"],
        name=row["name"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        group=row["group"] or "",
        tags=tuple(row["tags"] or ()),
        notes=row["notes"] or "",
        config=json.loads(row["config"] or "{}"),
        summary=json.loads(row["summary"] or "{}"),
        summary_set=json.loads(row["summary_set"] or "{}"),
        env=json.loads(row["env"] or "{}"),
        git=json.loads(row["git"] or "{}"),
        error=row["error"] or "",
        host=row["host"] or "",
        pid=row["pid"] or 0,
        attach=row["attach"] or 0,
        last_step=row["last_step"] if row["last_step"] is not None else -1,
        ingested_seq=row["ingested_seq"] if row["ingested_seq"] is not None else -1,
    )


def relogs(summary: dict[str, dict[str, float]], keys: Sequence[str],
            steps: Sequence[int]) -> bool:
    """Whether a chunk goes back to a step of ``keys`` below the step of a key's last value
    (a resume without a rewind logging earlier steps again, or out-of-order steps): the
    summary is then rebuilt from the stored points, last write per step. Logging the last
    step again (MLflow's step-less ``log_metric`` logs step 0 every time) does not count:
    rebuilding on every such point would read the run's whole history on every pass."""
    if not steps:
        return False
    if any(b < a for a, b in pairwise(steps)):  # back to an earlier step in the chunk
        return True
    lo = min(steps)
    return any(k in summary and lo < summary[k]["step"] for k in keys)


def merge_summary(
    summary: dict[str, dict[str, float]],
    keys: Sequence[str],
    steps: Sequence[int],
    columns: Sequence[Sequence[float]],
) -> None:
    """Fold a chunk of points into a run's automatic summary, in place.

    ``columns[i]`` holds key ``keys[i]``'s values at ``steps``. Per key the summary keeps the
    last value (by log order), its step, and the min and max of the non-NaN values.
    """
    if not steps:
        return
    last_step = steps[-1]
    for key, col in zip(keys, columns):
        finite = [v for v in col if not math.isnan(v)]  # +-inf are data and stay
        s = summary.get(key)
        if s is None:
            s = summary[key] = {"last": col[-1], "step": last_step, "min": math.nan, "max": math.nan}
        else:
            s["last"] = col[-1]
            s["step"] = last_step
        if finite:
            lo, hi = min(finite), max(finite)
            if not s["min"] <= lo:  # also true when the stored min is NaN
                s["min"] = lo
            if not s["max"] >= hi:
                s["max"] = hi
