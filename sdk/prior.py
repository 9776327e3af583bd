"""What a new attach of a run starts from: a fresh run id claimed in the data directory, or,
for ``assay.init(resume=...)``, the checks that nobody still logs to the run and its prior
record (from the local store, ingesting what a crashed owner left first, or from a server)."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import AssayError, ConflictError, NotFoundError, UserInputError
from ..store.wal import SEQ_BITS as _SEQ_BITS
from .rewind import AUTO
from .settings import FINISH_TIMEOUT

log = logging.getLogger("assay.sdk.run")

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _new_run_id() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(10))


def _claim_run_id(root: Path, wanted: str | None) -> str:
    """Reserve a run id in ``<dir>/runs/`` (an atomic mkdir, so ids are unique across
    processes without opening the store)."""
    reg = root / "runs"
    try:
        reg.mkdir(exist_ok=True)
        for _ in range(8):
            rid = wanted or _new_run_id()
            try:
                os.mkdir(reg / rid)
                return rid
            except FileExistsError:
                if wanted:
                    raise ConflictError(f"run id {wanted!r} is already taken in {root}",
                                        hint=f"continue that run with resume={wanted!r}, or "
                                             "pick another id") from None
    except OSError as exc:  # read-only, full, or not ours: say so before anything starts
        raise AssayError(f"cannot start a run in {root}: {exc.strerror or exc}",
                         hint="logging needs a writable data directory: pass dir= (or set "
                              "ASSAY_DIR) to one; a read-only one can still be read with "
                              "assay.Api(dir)") from None
    raise ConflictError("could not find a free run id", hint="check the data directory")


def _remote_prior(root: Path, server: str, token: str | None, run_id: str,
                  timeout: float) -> Any:
    """The server's record of a run to resume (None if the server does not know it).

    First ships what an earlier process of this run left unsent in the local outbox: once a
    new attach exists on the server, records of an older one would count as duplicates.
    Then takes the attach from the server's durable records (the run's record lags them
    until the ingester catches up, which it waits for, within ``timeout`` seconds), so two
    resumes in a row never share an attach.
    """
    from types import SimpleNamespace

    from .remote import RemoteClient, sync_outbox

    unsent = [p for p, ok in sync_outbox(root, server, token, timeout=timeout,
                                         run_id=run_id).items() if not ok]
    if unsent:
        raise ConflictError(
            f"cannot resume run {run_id}: records an earlier process logged could not be "
            f"sent to {server} ({', '.join(unsent)})",
            hint=f"check the server, then `assay sync --server {server}`, and resume again")
    client = RemoteClient(server, token)
    try:
        info = client.server_info()
        durable = client.durable_seq(run_id)
        if durable < 0:  # no records on this server: it knows the run only if it is stored
            client.get_run(run_id)  # NotFoundError (None below) instead of waiting
        client.check_writer(run_id)  # another's run: refused now, not when the sender starts
        deadline = time.monotonic() + timeout
        while True:
            try:
                d: dict[str, Any] | None = client.get_run(run_id)
            except NotFoundError:
                d = None
            if d is not None and int(d.get("ingested_seq", -1)) >= durable:
                break
            if time.monotonic() > deadline:
                if d is None:
                    return None
                log.warning("assay: run %s is not fully ingested on %s yet; its summary and "
                            "last step may lag", run_id, server)
                break
            time.sleep(0.2)
    except NotFoundError:
        return None
    finally:
        client.close()
    attach = max(int(d["attach"]), durable >> _SEQ_BITS if durable >= 0 else 0)
    return SimpleNamespace(project=d["project"], attach=attach, config=d["config"],
                           summary=d["summary_stats"], summary_set=d["summary_set"],
                           last_step=d["last_step"], name=d["name"], server=info)


def _refuse_if_live(root: Path, run_id: str) -> None:
    """A run whose write-ahead log a live process still holds cannot be resumed: both would
    write it, and the ingester keeps only the newer attach's records."""
    from ..store.wal import read_wal, try_lock_segment

    for folder in ("wal", "outbox"):
        for seg in sorted((root / folder / run_id).glob("*.wal")):
            fd = try_lock_segment(seg)
            if fd is not None:
                os.close(fd)
                continue
            first = next(iter(read_wal(seg, max_bytes=1)), None)
            who = (f"process {first.data.get('pid')} on {first.data.get('host')}"
                   if first is not None else "another process")
            raise ConflictError(
                f"cannot resume run {run_id}: {who} is still logging to it ({seg})",
                hint="finish() it there first, or stop that process; a process that died "
                     "without finishing leaves a run you can resume at once")


def _sync_and_get(root: Path, run_id: str) -> Any:
    """Ingest what a crashed owner left in the run's WAL, then read the run's record."""
    from ..store.ingest import sync_orphans
    from ..store.ingestd import local_ingester

    store, lock, ingester = local_ingester(root)
    sync_orphans(root, store, lock, ingester, run_id=run_id, timeout=FINISH_TIMEOUT)
    return store.get_run(run_id)


def trial_config(text: str) -> dict[str, Any]:
    """The config an agent chose for the command trial this process runs (``ASSAY_CONFIG``,
    JSON): ``init`` stores it over the script's own defaults, as W&B does a sweep's values."""
    import json

    from .jsonable import to_jsonable

    try:
        got = json.loads(text)
    except ValueError:
        got = None
    if not isinstance(got, dict):
        raise UserInputError("ASSAY_CONFIG is not a JSON object",
                             hint="an assay agent sets it for its command trials; unset it "
                                  "to run the script by hand")
    return to_jsonable(got, what="config")


def _config_dict(config: Any) -> dict[str, Any]:
    """``config`` as a dict: a mapping, an ``argparse.Namespace`` or a dataclass instance
    (as W&B takes them), or None."""
    import argparse
    import dataclasses

    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, argparse.Namespace):
        return vars(config).copy()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise UserInputError(f"config must be a mapping of names to values, got a "
                         f"{type(config).__name__}",
                         hint='pass e.g. config={"lr": 3e-4, "depth": 2} (an argparse.Namespace '
                              "or a dataclass instance also works)")


def _server_rewinds(info: Any, resume_from_step: int | str) -> bool:
    """Whether the server (``info``, its :class:`ServerInfo`) takes the rewind of a resume.
    A server too old for rewinds refuses their records, which would stop the run's sender:
    an explicit step is refused here, before anything is logged; "auto" (what relaunched
    trials get) resumes without the rewind, as SDKs before rewinds did, with a warning."""
    if "rewind" in info.features:
        return True
    if resume_from_step != AUTO:
        info.require("rewind", "resume_from_step")
    log.warning("assay: the server %s (assay %s) cannot rewind a resumed run, so the earlier "
                "attempt's points past the steps this attempt logs stay in its history; "
                "upgrade the server to supersede them", info.server, info.version)
    return False
