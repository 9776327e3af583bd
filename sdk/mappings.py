"""A run's ``config`` and ``summary``, as the mappings ``run.config`` and ``run.summary``:
reads come from memory, every change is queued as a WAL record (refused once the run is
finished)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError
from .jsonable import to_jsonable

if TYPE_CHECKING:
    from .run import Run

__all__ = ["Config", "Summary"]


class Config(MutableMapping[str, Any]):
    """A run's configuration; every change after ``init`` is recorded."""

    def __init__(self, run: Run, data: dict[str, Any]) -> None:
        self._run = run
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        raise UserInputError("config entries cannot be deleted once recorded",
                             hint="set the entry to None instead")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def update(self, other: Any = (), /, **kw: Any) -> None:  # type: ignore[override]
        self._run._check_open("config changes are")
        upd = to_jsonable(dict(other, **kw), what="config")
        self._data.update(upd)
        self._run._enqueue({"k": "config", "update": upd})

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


class Summary(MutableMapping[str, Any]):
    """Last value of each metric (and its min/max); explicit assignments override."""

    def __init__(self, run: Run, explicit: dict[str, Any]) -> None:
        self._run = run
        self._explicit = explicit

    def _auto(self) -> dict[str, dict[str, float]]:
        self._run.flush()
        w = self._run._writer
        with w.summary_lock:
            return {k: dict(v) for k, v in w.summary.items()}

    def __getitem__(self, key: str) -> Any:
        if key in self._explicit:
            return self._explicit[key]
        run = self._run
        if not run._finished and key in run._last:  # as the writer will have it, at once
            return float(run._last[key])  # (after finish(): as stored)
        return self._auto()[key]["last"]

    def __contains__(self, key: object) -> bool:
        if key in self._explicit or (not self._run._finished and key in self._run._last):
            return True
        return key in self.to_dict()

    def __setitem__(self, key: str, value: Any) -> None:
        self._run._check_open("summary changes are")
        upd = to_jsonable({key: value}, what="summary")
        self._explicit.update(upd)
        self._run._enqueue({"k": "summary", "update": upd})

    def __delitem__(self, key: str) -> None:
        raise UserInputError("summary entries cannot be deleted", hint="set it to None instead")

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def min(self, key: str) -> float:
        return self._auto()[key]["min"]

    def max(self, key: str) -> float:
        return self._auto()[key]["max"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v["last"] for k, v in self._auto().items()}
        out.update(self._explicit)
        return out
