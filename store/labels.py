"""Tags and notes of a run, changed after it started (W&B's ``run.tags = ...; run.update()``,
MLflow's ``set_tag``): not sealed in its signed record, so people may edit them any time.

One function for a data directory and a server alike: it reads the run's row fresh under the
ingest lock and writes it back, so an ingest pass (which rereads rows others wrote) never
puts the old labels back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import NotFoundError
from .records import RunRecord, check_notes, check_tags

__all__ = ["set_labels"]


def set_labels(store: Any, lock: Any, run_id: str, *, tags: Sequence[str] | None = None,
               add: Sequence[str] = (), remove: Sequence[str] = (),
               notes: str | None = None) -> tuple[RunRecord, RunRecord]:
    """Replace (``tags``) or edit (``add``, ``remove``) a run's tags and replace its notes;
    returns the run before and after. Checks everything before writing.

    Raises:
        UserInputError: an invalid tag or notes.
        NotFoundError: no such run.
    """
    new_tags = None if tags is None else check_tags(tags)
    add, remove = check_tags(list(add)), check_tags(list(remove))
    text = None if notes is None else check_notes(notes)
    with lock:
        before = store.get_run(run_id)
        if before is None:
            raise NotFoundError(f"no run {run_id!r}", hint="list runs with `assay runs`")
        base = list(before.tags) if new_tags is None else new_tags
        merged = [t for t in dict.fromkeys([*base, *add]) if t not in set(remove)]
        after = replace(before, tags=tuple(merged),
                        notes=before.notes if text is None else text)
        if after != before:
            store.upsert_runs([after])
    return before, after
