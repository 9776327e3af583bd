"""A read-only dict shared by records that many threads, agents and policies hold."""

from __future__ import annotations

from typing import Any

__all__ = ["FrozenDict"]


class FrozenDict(dict[str, Any]):
    """A read-only dict: records are shared between policies, agents and threads and must
    not be mutated.

    A ``dict`` subclass (not ``types.MappingProxyType``) so records still pickle, deep-copy and
    ``json.dumps`` like plain dicts, which Ray and the store rely on.
    """

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this mapping is read-only; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))
