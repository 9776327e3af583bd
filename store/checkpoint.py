"""Trust anchors kept outside the data directory: a pinned public key and signed checkpoints.

``assay verify`` on its own trusts the key stored in the data directory, and nothing outside
the directory says how long its chains were. Whoever can write the directory can therefore
replace the key pair and re-sign everything, or cut the newest records off a chain and off
the audit trail together. Two anchors, held by the user, close those gaps:

* a **pinned key** (the PEM ``assay export-key`` printed earlier): records must verify
  against it; :func:`check_pinned_key` says plainly when the directory's key differs;
* a **checkpoint** (a "tree head", as Certificate Transparency and Go's sumdb publish): for
  every chain (each ``run:<project>`` chain and the audit trail, :data:`AUDIT_CHAIN`) its
  highest seq and that record's hash, the key id, a UTC time, and an Ed25519 signature over
  the canonical JSON of all that. :func:`check_checkpoint` confirms that each chain still
  holds that very record, so the log was neither truncated nor rewritten up to it; records
  appended later are fine. The links of the records before it are the ordinary chain check's
  job (:func:`.provenance.verify`), which runs alongside.

The checkpoint file; anyone can check its signature with an Ed25519 library and a JSON encoder::

    {"chains": {"audit": {"hash": "sha256:...", "seq": 41}, "run:digits": {...}},
     "created_at": "2025-01-31T12:00:00.000000Z", "format": "assay.checkpoint",
     "key_id": "ed25519:...", "signature": "<hex>", "version": 1}
    signature = Ed25519(b"assay.checkpoint.sig.v1\\n" + canonical JSON of all but "signature")

Nothing here writes to the data directory: making a checkpoint only reads the chains.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .audit import AuditTrail
from .canonical import canonical_json
from .provenance import ChainStore, Problem
from .signing import ChainedRecord, KeyPair, PublicKeyLike, key_id, load_public_key, verify

__all__ = [
    "AUDIT_CHAIN",
    "FORMAT",
    "VERSION",
    "AnchorProblem",
    "ChainHead",
    "Checkpoint",
    "CheckpointLike",
    "check_checkpoint",
    "check_pinned_key",
    "load_checkpoints",
    "make_checkpoint",
    "read_public_key",
]

FORMAT = "assay.checkpoint"
VERSION = 1
AUDIT_CHAIN = "audit"  # run chains are named "run:<project>", so this name cannot collide
_SIG_DOMAIN = b"assay.checkpoint.sig.v1\n"
_FIELDS = {"format", "version", "key_id", "created_at", "chains", "signature"}
_HINT = "pass a file written by `assay checkpoint --out FILE` (unedited)"


@dataclass(frozen=True)
class ChainHead:
    """A chain's last record when the checkpoint was made: its seq and hash."""

    seq: int
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed note of every chain's head. Made by :func:`make_checkpoint`.

    Attributes:
        key_id: The signing key's id (:func:`~.signing.key_id`).
        created_at: ISO 8601 UTC time it was made.
        heads: Chain name (``run:<project>`` or :data:`AUDIT_CHAIN`) to its head.
        signature: Hex Ed25519 signature of :meth:`signed_bytes`.
        source: Where it was read from (for messages only; not signed).
    """

    key_id: str
    created_at: str
    heads: Mapping[str, ChainHead]
    signature: str
    source: str = field(default="", compare=False)

    def body(self) -> dict[str, Any]:
        """Every signed field (the document less its signature)."""
        return {"format": FORMAT, "version": VERSION, "key_id": self.key_id,
                "created_at": self.created_at,
                "chains": {n: {"seq": h.seq, "hash": h.hash} for n, h in self.heads.items()}}

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: a domain tag and the canonical JSON of the body."""
        return _SIG_DOMAIN + canonical_json(self.body())

    def to_json(self) -> str:
        """The document, indented for people (the signature covers its canonical form)."""
        return json.dumps({**self.body(), "signature": self.signature}, indent=2,
                          sort_keys=True) + "\n"

    @property
    def label(self) -> str:
        return f"checkpoint {self.source or self.created_at}"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "checkpoint") -> Checkpoint:
        """Parse and validate a checkpoint document (the signature is checked later).

        Raises:
            UserInputError: not JSON, not a checkpoint, an unknown version, or a field
                missing, unknown or of the wrong type; the message names which.
        """
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserInputError(f"{source} is not JSON ({exc})", hint=_HINT) from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserInputError(f"{source} is not an assay checkpoint (no \"format\": "
                                 f"\"{FORMAT}\" field)", hint=_HINT)
        missing, unknown = sorted(_FIELDS - set(doc)), sorted(set(doc) - _FIELDS)
        if missing or unknown:
            what = "; ".join(s for s in (missing and f"missing fields {missing}",
                                         unknown and f"unknown fields {unknown}") if s)
            raise UserInputError(f"{source}: {what}", hint=_HINT)
        if type(doc["version"]) is not int or doc["version"] != VERSION:
            raise UserInputError(f"{source} is checkpoint version {doc['version']!r}; "
                                 f"this assay reads version {VERSION}",
                                 hint="verify it with the assay version that wrote it, or "
                                      "write a new checkpoint with `assay checkpoint`")
        for name in ("key_id", "created_at", "signature"):
            if not isinstance(doc[name], str) or not doc[name]:
                raise UserInputError(f"{source}: {name!r} must be a non-empty string, not "
                                     f"{doc[name]!r}", hint=_HINT)
        chains = doc["chains"]
        if not isinstance(chains, dict):
            raise UserInputError(f"{source}: 'chains' must be an object of chain name to "
                                 f"{{\"seq\", \"hash\"}}, not {type(chains).__name__}",
                                 hint=_HINT)
        heads = {}
        for name, head in chains.items():
            ok = (isinstance(head, dict) and set(head) == {"seq", "hash"}
                  and type(head["seq"]) is int and head["seq"] >= 0
                  and isinstance(head["hash"], str) and head["hash"].startswith("sha256:"))
            if not ok:
                raise UserInputError(f"{source}: chain {name!r} must be {{\"seq\": <int >= 0>, "
                                     f"\"hash\": \"sha256:...\"}}, not {head!r}", hint=_HINT)
            heads[name] = ChainHead(head["seq"], head["hash"])
        return cls(doc["key_id"], doc["created_at"], heads, doc["signature"], source)


CheckpointLike = Checkpoint | str | os.PathLike[str]


def make_checkpoint(chains: ChainStore, audit: AuditTrail, key: KeyPair, *,
                    at: datetime | None = None) -> Checkpoint:
    """Note the head of every chain in the ``chain`` table and of the audit trail; sign it.

    Only reads: records appended meanwhile simply fall after the noted heads.

    Args:
        chains: The data directory's run chains.
        audit: Its audit trail.
        key: The data directory's signing key.
        at: When (timezone-aware); now if omitted.
    """
    heads: dict[str, ChainHead] = {}
    for name in chains.chains():
        rec = chains.head(name)
        if rec is not None:
            heads[name] = ChainHead(rec.seq, rec.hash)
    audit_recs = audit.records()
    if audit_recs:
        heads[AUDIT_CHAIN] = ChainHead(audit_recs[-1].seq, audit_recs[-1].hash)
    when = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    unsigned = Checkpoint(key.key_id, when, dict(sorted(heads.items())), "")
    return Checkpoint(unsigned.key_id, unsigned.created_at, unsigned.heads,
                      key.sign(unsigned.signed_bytes()).hex())


def load_checkpoints(checkpoints: CheckpointLike | Sequence[CheckpointLike] | None
                     ) -> list[Checkpoint]:
    """Read checkpoint files (paths) or pass :class:`Checkpoint` objects through.

    Raises:
        UserInputError: a file is missing, unreadable or not a valid checkpoint.
    """
    if checkpoints is None:
        return []
    items = [checkpoints] if isinstance(checkpoints, Checkpoint | str | os.PathLike) \
        else list(checkpoints)
    out = []
    for item in items:
        if isinstance(item, Checkpoint):
            out.append(item)
            continue
        out.append(Checkpoint.from_json(_read(item, "checkpoint"), str(item)))
    return out


def read_public_key(key: PublicKeyLike | os.PathLike[str]) -> PublicKeyLike:
    """A pinned key: PEM text, a key object, or a path to a PEM file (``assay export-key``).

    Raises:
        UserInputError: the file is missing or is not an Ed25519 PEM public key.
    """
    if not isinstance(key, os.PathLike):
        return load_public_key(key)
    pem = _read(key, "public key")
    try:
        return load_public_key(pem)
    except UserInputError as exc:
        raise UserInputError(f"public key file {os.fspath(key)}: {exc.message}",
                             hint="pass the PEM that `assay export-key` printed when the data "
                                  "directory was trusted") from exc


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path).expanduser()
    source = "`assay checkpoint --out FILE`" if what == "checkpoint" else "`assay export-key`"
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"{what} file {p} does not exist",
                             hint=f"check the path; the file is one {source} wrote") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {what} file {p}: {exc.strerror or exc}",
                             hint="pass a readable file") from exc


# ------------------------------------------------------------------------------ checking

@dataclass(frozen=True)
class AnchorProblem(Problem):
    """A :class:`~.provenance.Problem` found against a trust anchor (pinned key, checkpoint)."""

    def __str__(self) -> str:
        return f"{self.chain}{f' #{self.seq}' if self.seq >= 0 else ''}: {self.reason}"


def check_pinned_key(own: PublicKeyLike, pinned: PublicKeyLike) -> list[Problem]:
    """One problem when the data directory's key is not the pinned one, else none."""
    own_id, pinned_id = key_id(own), key_id(pinned)
    if own_id == pinned_id:
        return []
    return [AnchorProblem(
        "key", "signing key", -1,
        f"the data directory's signing key {own_id} is not the pinned key {pinned_id}: the "
        f"key pair was replaced (or the wrong key was pinned); records it signed fail "
        f"against the pinned key")]


def check_checkpoint(cp: Checkpoint, chains: ChainStore, audit: AuditTrail,
                     public_key: PublicKeyLike) -> list[Problem]:
    """Check that ``cp`` is signed by ``public_key`` and every chain still extends it.

    A checkpoint whose key or signature fails is reported alone: its heads are not trusted,
    so they are not compared.
    """
    used = key_id(public_key)
    if cp.key_id != used:
        return [AnchorProblem(
            "checkpoint", cp.label, -1,
            f"{cp.label} was signed by key {cp.key_id}, not by the key in use {used}: the "
            f"data directory's key was replaced since, or the checkpoint is from another data "
            f"directory; its chain heads were not checked")]
    try:
        sig = bytes.fromhex(cp.signature)
    except ValueError:
        sig = b""
    if not verify(public_key, sig, cp.signed_bytes()):
        return [AnchorProblem(
            "checkpoint", cp.label, -1,
            f"{cp.label}: its signature does not verify with key {used}: the checkpoint was "
            f"edited or forged; its chain heads were not checked")]
    problems: list[Problem] = []
    for name, head in cp.heads.items():
        recs = audit.records() if name == AUDIT_CHAIN else chains.records(name)
        reason = _head_problem(recs, head, cp.created_at)
        if reason:
            problems.append(AnchorProblem(name, cp.label, head.seq, f"{reason} ({cp.label})"))
    return problems


def _head_problem(recs: list[ChainedRecord], head: ChainHead, when: str) -> str:
    seen = f"the checkpoint of {when} saw record #{head.seq} ({head.hash[:19]}...)"
    if not recs:
        return f"the chain is gone, but {seen}: its records were deleted"
    at = [r for r in recs if r.seq == head.seq]
    top = max(r.seq for r in recs)
    if not at and top < head.seq:
        gone = f"#{head.seq}" if top + 1 == head.seq else f"#{top + 1}..#{head.seq}"
        return (f"truncated: the chain now ends at record #{top}, but {seen}; record(s) "
                f"{gone} were removed from its end")
    if not at:
        return f"record #{head.seq} is missing, but {seen}"
    if not any(r.hash == head.hash for r in at):
        return (f"rewritten: record #{head.seq} now has hash {at[0].hash[:19]}..., but {seen}; "
                f"the chain was changed up to there (and re-sealed)")
    rec = next(r for r in at if r.hash == head.hash)
    try:
        intact = rec.compute_hash() == rec.hash
    except (UserInputError, TypeError, AttributeError, UnicodeError):
        intact = False
    if not intact:
        return f"record #{head.seq} was edited since {seen}: it no longer hashes to that head"
    return ""
