"""MLflow's search syntax, the subset its clients use: ``AND``-joined comparisons.

``metrics.acc > 0.9 AND params.lr = '0.01' AND tags.team LIKE 'vision%' AND
attributes.status IN ('FINISHED', 'RUNNING')``. As in MLflow's ``SearchUtils``, a key may be
quoted with backticks or double quotes (``metrics.`val loss```, ``metrics."val loss"``): a
double-quoted token right after ``metrics.``/``params.``/``tags.``/``attributes.`` (or alone
where an identifier is expected) is a key, while a value may be a single- or double-quoted
string. Run attributes take MLflow's aliases (``created`` is ``start_time``, ``"run name"``
is ``run_name``). ``order_by`` entries are ``<identifier> [ASC|DESC]``. Anything else is a 400
naming the part that was not understood.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError

__all__ = ["Clause", "matches", "page_offset", "page_token", "parse_filter", "parse_order_by",
           "sort_key"]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
    | (?P<op>!=|<>|>=|<=|=|>|<|\(|\)|,)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*\.(?:`[^`]+`|"(?:[^"]|"")+")
               | `[^`]+`|[A-Za-z_][\w./:\-]*)
    )""", re.VERBOSE)
_KINDS = {"metric": "metrics", "metrics": "metrics", "param": "params", "params": "params",
          "parameter": "params", "parameters": "params", "tag": "tags", "tags": "tags",
          "attribute": "attributes", "attributes": "attributes", "attr": "attributes",
          "run": "attributes", "dataset": "datasets", "datasets": "datasets"}
_ATTRS = {"status", "run_name", "run_id", "user_id", "artifact_uri", "lifecycle_stage",
          "start_time", "end_time", "experiment_id", "name", "creation_time",
          "last_update_time"}
_RUN_ALIASES = {"created": "start_time", "Created": "start_time", "run name": "run_name",
                "Run name": "run_name", "Run Name": "run_name"}  # SearchUtils.translate_key_alias


@dataclass(frozen=True)
class Clause:
    kind: str  # metrics | params | tags | attributes
    key: str
    op: str  # = != > >= < <= LIKE ILIKE IN NOT IN
    value: Any


def _bad(msg: str) -> UserInputError:
    return UserInputError(msg, hint="MLflow search syntax, AND-joined: metrics.acc > 0.9 AND "
                                    "params.lr = '0.01' AND attributes.status = 'FINISHED'")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _bad(f"cannot read the filter at {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _unquote(key: str) -> str:
    if len(key) >= 2 and key[0] == key[-1] == "`":
        return key[1:-1]
    if len(key) >= 2 and key[0] == key[-1] == '"':
        return key[1:-1].replace('""', '"')
    return key


def _ident(tok: str, default_kind: str, run_aliases: bool = True,
           attrs: Collection[str] = _ATTRS) -> tuple[str, str]:
    if "." in tok and tok[:1] not in ("`", "\""):
        prefix, _, key = tok.partition(".")
        kind = _KINDS.get(prefix.lower())
        if kind is None:
            raise _bad(f"unknown identifier type {prefix!r}")
    else:
        kind, key = default_kind, tok
    key = _unquote(key)
    if kind == "attributes" and run_aliases:
        key = _RUN_ALIASES.get(key, key)
    if kind == "attributes" and key not in attrs:
        raise _bad(f"unknown attribute {key!r} (one of {sorted(attrs)})")
    if kind == "datasets":
        raise _bad("dataset filters are not supported by assay")
    return kind, key


def _literal(kind: str, text: str) -> Any:
    if kind == "str":
        q = text[0]
        return text[1:-1].replace(q + q, q)
    if kind == "num":
        return float(text)
    raise _bad(f"expected a value, got {text!r}")


def parse_filter(text: str | None, default_kind: str = "attributes", *,
                 run_aliases: bool = True, attrs: Collection[str] = _ATTRS) -> list[Clause]:
    """Parse an AND-joined filter (``default_kind`` for bare identifiers like ``name``;
    ``run_aliases``: accept MLflow's run attribute aliases such as ``created``; ``attrs``:
    the attribute names there are, runs' and experiments' by default)."""
    if not text or not text.strip():
        return []
    toks = _tokens(text)
    clauses, i = [], 0
    while i < len(toks):
        # a double-quoted token where an identifier is expected is one (MLflow: "status" = 'x')
        if toks[i][0] != "ident" and not (toks[i][0] == "str" and toks[i][1][0] == '"'):
            raise _bad(f"expected an identifier, got {toks[i][1]!r}")
        kind, key = _ident(toks[i][1], default_kind, run_aliases, attrs)
        i += 1
        if i >= len(toks):
            raise _bad("a comparison is missing its operator")
        t, v = toks[i]
        op = v.upper() if t == "ident" else v
        if op == "NOT" and i + 1 < len(toks) and toks[i + 1][1].upper() == "IN":
            op, i = "NOT IN", i + 1
        if op == "<>":
            op = "!="
        if op not in ("=", "!=", ">", ">=", "<", "<=", "LIKE", "ILIKE", "IN", "NOT IN"):
            raise _bad(f"unknown operator {v!r}")
        i += 1
        if op in ("IN", "NOT IN"):
            if i >= len(toks) or toks[i][1] != "(":
                raise _bad(f"{op} needs a parenthesised list")
            vals, i = [], i + 1
            while i < len(toks) and toks[i][1] != ")":
                if toks[i][1] != ",":
                    vals.append(_literal(*toks[i]))
                i += 1
            if i >= len(toks):
                raise _bad("unclosed list")
            value: Any = vals
            i += 1
        else:
            if i >= len(toks):
                raise _bad("a comparison is missing its value")
            value = _literal(*toks[i])
            i += 1
        if kind == "metrics" and not isinstance(value, float):
            raise _bad(f"metrics.{key} compares with a number")
        clauses.append(Clause(kind, key, op, value))
        if i < len(toks):
            if toks[i][0] != "ident" or toks[i][1].upper() != "AND":
                raise _bad(f"expected AND, got {toks[i][1]!r} (OR is not supported)")
            i += 1
    return clauses


def _like(pattern: str, value: str, flags: int = 0) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, flags | re.DOTALL) is not None


def _compare(have: Any, op: str, want: Any) -> bool:
    if have is None:  # as in MLflow's SQL: a run lacking the key matches no comparison
        return False
    if op in ("IN", "NOT IN"):
        return (str(have) in [str(w) for w in want]) == (op == "IN")
    if op in ("LIKE", "ILIKE"):
        return _like(str(want), str(have), re.IGNORECASE if op == "ILIKE" else 0)
    if isinstance(want, float):
        try:
            h = float(have)
        except (TypeError, ValueError):
            return False
        if math.isnan(h):  # MLflow: NaN satisfies only != (its SQL store's is_nan rule)
            return op == "!="
        have = h
    else:
        have = str(have)
    ops = {"=": have == want, "!=": have != want, ">": have > want, ">=": have >= want,
           "<": have < want, "<=": have <= want}
    return ops[op]


def matches(view: dict[str, dict[str, Any]], clauses: Sequence[Clause]) -> bool:
    """Whether a run (or experiment) view ``{kind: {key: value}}`` satisfies every clause."""
    return all(_compare(view.get(c.kind, {}).get(c.key), c.op, c.value) for c in clauses)


def parse_order_by(items: Sequence[str] | None, *,
                   run_aliases: bool = True) -> list[tuple[str, str, bool]]:
    """``["metrics.acc DESC"]`` to ``[("metrics", "acc", False)]`` (ascending flag)."""
    out = []
    for item in items or []:
        parts = item.strip().rsplit(None, 1)
        asc = True
        if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
            asc = parts[1].upper() == "ASC"
            item = parts[0]
        kind, key = _ident(item.strip(), "attributes", run_aliases)
        out.append((kind, key, asc))
    return out


def sort_key(view: dict[str, dict[str, Any]], kind: str, key: str) -> tuple[int, Any]:
    """A key that sorts numbers before text, then NaN, then missing values (MLflow's order)."""
    v = view.get(kind, {}).get(key)
    if v is None:
        return (3, 0)
    if isinstance(v, float) and math.isnan(v):
        return (2, 0)
    if isinstance(v, (int, float)):
        return (0, float(v))
    return (1, str(v))


# -- page tokens ------------------------------------------------------------------------------
_OFFSET_RE = re.compile(r"0|[1-9][0-9]{0,17}")


def page_offset(token: str | None) -> int:
    """The offset of a page token: only what :func:`page_token` makes (a non-negative
    offset), else a 400, as MLflow refuses a token it cannot read (a negative offset would
    answer a page from the wrong place, or an empty one whose next token is itself)."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        offset = int(text) if _OFFSET_RE.fullmatch(text) else -1
    except (ValueError, TypeError):
        offset = -1
    if offset < 0 or page_token(offset).rstrip("=") != token.rstrip("="):
        raise UserInputError("malformed page_token", hint="pass next_page_token unchanged")
    return offset


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()
