"""``assay.init(resume=..., resume_from_step=k)``: the SDK's side of a rewind.

The resumed attach writes ``"resume_from_step": k`` into its ``run`` record; the ingester
applies it (see :mod:`assay.store.rewind`). Here: the argument's checks, and the automatic
summary the resumed run starts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..store.rewind import (
    REWIND_FIELD,
    Rewind,
    apply_rewinds,
    chunk_tuples,
    rebuild_summary,
    rewinds,
)

__all__ = ["AUTO", "REWIND_FIELD", "check_resume_from_step", "rewound_summary"]

_MAX_STEP = (1 << 63) - 1
_HINT = ("resume_from_step is the step the resumed run restarts at: points its earlier "
         "attempts logged from there on are superseded (e.g. resume_from_step=0 to start "
         "the curve again, the step of the checkpoint you restart from, or \"auto\": the "
         "step of the first log())")


AUTO = "auto"
"""``resume_from_step="auto"``: the attach rewinds to the step of its first ``log()`` (a
``rewind`` record written just before that point), so a target that starts again from the
top rewinds to 0 and one that restores a checkpoint at step k keeps the points below k."""


def check_resume_from_step(step: Any, resume: str | None) -> int | str | None:
    """``step`` as an int, ``"auto"``, or None when not given.

    Raises:
        UserInputError: not an integer in ``[0, 2**63 - 1)`` or ``"auto"``, or given without
            ``resume``.
    """
    if step is None:
        return None
    if step == AUTO:  # without resume (a command trial's first attempt): nothing to rewind
        return AUTO if resume is not None else None
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise UserInputError(f"resume_from_step must be an integer >= 0, got {step!r}",
                             hint=_HINT)
    step = int(step)
    if not 0 <= step < _MAX_STEP:
        raise UserInputError(f"resume_from_step must be an integer in [0, 2**63 - 1), got "
                             f"{step}", hint=_HINT)
    if resume is None:
        raise UserInputError("resume_from_step needs resume=run_id: only a resumed run can "
                             "restart at a step",
                             hint="assay.init(project=..., resume=run.id, resume_from_step=0)")
    return step


def rewound_summary(root: Path, server: str | None, run_id: str, step: int,
                    summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The automatic summary (``run.summary``) a run resumed at ``step`` starts with.

    Locally it is recomputed from the stored points below ``step`` (resuming ingested every
    earlier attach first), as the ingester will store it. Through a server only the system
    metrics' entries carry on: the server's stored summary is exact, while this process's
    ``run.summary`` covers the points it logs itself.
    """
    if server:
        return {k: dict(v) for k, v in summary.items() if not rewinds(k)}
    from ..store.lance import LanceStore

    store = LanceStore(root)
    remaining = apply_rewinds(store.metric_chunks(run_id), [Rewind(run_id, _MAX_STEP, step)])
    return rebuild_summary(chunk_tuples(remaining), summary)[0]
