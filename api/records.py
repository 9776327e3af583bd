"""``POST /api/runs/{run_id}/records``: remote logging's one write route.

The body is a batch of WAL frames exactly as :mod:`assay.store.wal` writes them (content
type ``application/x-assay-wal``): ``b"AW"``, payload length, CRC32, JSON payload. Shipping
frames rather than re-encoded JSON keeps NaN and infinities intact, lets the server check
every record's CRC, and lets it append the very bytes the client fsynced.

Every record is validated before anything is written (a record the ingester cannot apply
would block the run's ingestion): kinds, field types, list lengths, value ranges, and seqs
strictly increasing within the batch. Records at or below the run's durable seq are
retries and are skipped; the answer is always the highest durable seq.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from ..errors import UserInputError
from ..store.records import RunStatus, validate_name
from ..store.wal import FrameError, iter_frames
from .auth import Researcher
from .http import ERROR_RESPONSES, StrictJSONRoute
from .ingest import SEQ_BITS, AppendResult, RemoteIngest
from .runs import RunId

__all__ = ["MAX_BATCH_BYTES", "MEDIA_TYPE", "decode_frames", "router", "validate_record"]

MEDIA_TYPE = "application/x-assay-wal"
MAX_BATCH_BYTES = 64 << 20
_MAX_SEQ = (1 << 63) - 1
_KINDS = {"run", "metrics", "config", "summary", "env", "status", "rewind"}

router = APIRouter(prefix="/api", tags=["remote logging"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)


def _bad(msg: str) -> UserInputError:
    return UserInputError(msg, hint="send WAL frames as assay.store.wal writes them "
                                    "(assay.sdk.remote.RemoteSender does)")


def _is_num(v: Any) -> bool:
    t = type(v)
    return t is float or (t is int and -_MAX_SEQ - 1 <= v <= _MAX_SEQ)


_MAX_TIME = 253_402_300_800.0  # 10000-01-01 UTC: times are stored as microseconds since 1970


def _is_time(v: Any) -> bool:
    """Epoch seconds the store can hold as a timestamp (finite, from 1970 to year 9999)."""
    return _is_num(v) and 0 <= v < _MAX_TIME


def _check_str(rec: dict[str, Any], name: str, *, required: bool = False, limit: int = 100_000) -> None:
    v = rec.get(name)
    if v is None and not required:
        return
    if not isinstance(v, str) or len(v) > limit:
        raise _bad(f"record {rec.get('seq')}: {name!r} must be a string of at most {limit} chars")


def _check_dict(rec: dict[str, Any], name: str, *, required: bool = False) -> None:
    v = rec.get(name)
    if v is None and not required:
        return
    if not isinstance(v, dict):
        raise _bad(f"record {rec.get('seq')}: {name!r} must be an object")


def _check_chunk(seq: int, ch: Any) -> None:
    if not isinstance(ch, dict):
        raise _bad(f"record {seq}: every chunk must be an object")
    keys, steps, times, vals = ch.get("keys"), ch.get("step"), ch.get("time"), ch.get("vals")
    if not isinstance(keys, list) or not keys or not all(
            isinstance(k, str) and 0 < len(k) <= 256 for k in keys):
        raise _bad(f"record {seq}: chunk keys must be a non-empty list of metric names")
    if not isinstance(steps, list) or not steps:
        raise _bad(f"record {seq}: chunk step must be a non-empty list")
    if not all(type(s) is int and 0 <= s <= _MAX_SEQ for s in steps):
        raise _bad(f"record {seq}: steps must be integers >= 0")
    if not isinstance(times, list) or len(times) != len(steps) or not all(map(_is_time, times)):
        raise _bad(f"record {seq}: chunk time must be epoch seconds (finite, from 1970 to "
                   "year 9999), one per step")
    if not isinstance(vals, list) or len(vals) != len(keys):
        raise _bad(f"record {seq}: chunk vals must hold one list per key")
    n = len(steps)
    for col in vals:
        if not isinstance(col, list) or len(col) != n:
            raise _bad(f"record {seq}: every value list must have one value per step")
        if not all(type(v) is float for v in col) and not all(map(_is_num, col)):
            raise _bad(f"record {seq}: metric values must be numbers (NaN and inf allowed)")


def validate_record(rec: Any, run_id: str) -> dict[str, Any]:
    """Check one decoded record is applicable by the ingester; return it.

    Raises:
        UserInputError: what is wrong with it.
    """
    if not isinstance(rec, dict):
        raise _bad("a record must be a JSON object")
    seq, kind = rec.get("seq"), rec.get("k")
    if type(seq) is not int or not 0 < seq <= _MAX_SEQ:
        raise _bad(f"record seq must be a positive integer, got {seq!r}")
    if kind not in _KINDS:
        raise _bad(f"record {seq}: unknown kind {kind!r} (one of {sorted(_KINDS)})")
    if "time" in rec and not _is_time(rec["time"]) or kind != "metrics" and "time" not in rec:
        raise _bad(f"record {seq}: time must be epoch seconds (finite, from 1970 to year "
                   f"9999), got {rec.get('time')!r}")
    if kind == "run":
        if rec.get("run_id") != run_id:
            raise _bad(f"record {seq}: run record of {rec.get('run_id')!r} sent to run {run_id!r}")
        validate_name("project", rec.get("project"))
        _check_str(rec, "name", required=True, limit=256)
        for f in ("group", "notes", "host"):
            _check_str(rec, f)
        _check_dict(rec, "config")
        tags = rec.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 64 for t in tags):
            raise _bad(f"record {seq}: tags must be a list of strings")
        for f in ("pid", "attach", "resume_from_step"):  # the last: a rewind (store.rewind)
            if f in rec and not (type(rec[f]) is int and 0 <= rec[f] <= _MAX_SEQ):
                raise _bad(f"record {seq}: {f} must be an integer >= 0")
        if rec.get("attach", 0) != seq >> SEQ_BITS:
            raise _bad(f"record {seq}: attach {rec.get('attach')} does not match its seq")
    elif kind == "metrics":
        chunks = rec.get("chunks")
        if not isinstance(chunks, list):
            raise _bad(f"record {seq}: metrics records carry a list of chunks")
        for ch in chunks:
            _check_chunk(seq, ch)
    elif kind == "rewind":  # resume_from_step="auto": the step of the attach's first log()
        step = rec.get("resume_from_step")
        if not (type(step) is int and 0 <= step < _MAX_SEQ):
            raise _bad(f"record {seq}: resume_from_step must be an integer >= 0")
        if rec.get("attach", seq >> SEQ_BITS) != seq >> SEQ_BITS:
            raise _bad(f"record {seq}: attach {rec.get('attach')!r} does not match its seq")
    elif kind in ("config", "summary"):
        _check_dict(rec, "update", required=True)
    elif kind == "env":
        _check_dict(rec, "env")
        _check_dict(rec, "git")
    elif kind == "status":
        try:
            st = RunStatus(str(rec.get("status")))
        except ValueError:
            st = RunStatus.RUNNING
        if not st.finished:
            raise _bad(f"record {seq}: status must be a final status, got {rec.get('status')!r}")
        _check_str(rec, "error", limit=1_000_000)
    return rec


def decode_frames(body: bytes, run_id: str) -> list[tuple[dict[str, Any], bytes]]:
    """Split a body into validated ``(record, frame bytes)`` pairs.

    Raises:
        UserInputError: a truncated or corrupt frame, an invalid record, or seqs that do not
            increase.
    """
    out: list[tuple[dict[str, Any], bytes]] = []
    last = 0
    try:
        for start, end, payload in iter_frames(body, strict=True):
            try:
                rec = json.loads(payload)
            except (ValueError, RecursionError):
                raise _bad(f"frame at byte {start} is not JSON") from None
            validate_record(rec, run_id)
            if rec["seq"] <= last:
                raise _bad(f"seq {rec['seq']} does not increase (after {last})")
            last = rec["seq"]
            out.append((rec, body[start:end]))
    except FrameError as e:
        raise _bad(str(e)) from None
    return out


def _ingest(request: Request) -> RemoteIngest:
    return request.app.state.remote  # type: ignore[no-any-return]


_BODY_DOC = {"requestBody": {"required": False, "content": {
    MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/runs/{run_id}/records", summary="Append WAL records of a run (remote logging)",
             openapi_extra=_BODY_DOC, max_body_size=MAX_BATCH_BYTES)
async def post_records(
    request: Request,
    who: Researcher,
    run_id: RunId,
    x_assay_reason: Annotated[str | None, Header(max_length=500)] = None,
) -> dict[str, Any]:
    """Append a batch of WAL frames; idempotent by ``seq``; answers the highest durable seq.

    An empty body is a heartbeat: it keeps the run's server segment open while the client
    is alive. A new run's first batch must start with its ``run`` record.
    """
    body = await request.body()
    ingest = _ingest(request)

    def work() -> AppendResult:  # decoding megabytes of JSON must not block the event loop
        return ingest.append(who, run_id, decode_frames(body, run_id), x_assay_reason or "")

    res = await run_in_threadpool(work)
    return {"run_id": run_id, "durable_seq": res.durable_seq, "accepted": res.accepted,
            "duplicates": res.duplicates}


@router.get("/runs/{run_id}/records", summary="The run's highest durable seq")
def get_durable_seq(request: Request, who: Researcher, run_id: RunId) -> dict[str, Any]:
    """Where a (restarted) sender resumes: records above ``durable_seq`` are not yet held."""
    return {"run_id": run_id, "durable_seq": _ingest(request).durable_seq(run_id)}
