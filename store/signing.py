"""Signed, hash-chained records: the evidence behind ``assay verify``.

* :class:`KeyPair` is the data directory's Ed25519 key (``signing_key.pem``, mode 0600, made
  with the directory); its public half is exported as PEM for third parties.
* :func:`seal` turns a payload into a :class:`ChainedRecord`: the payload is canonicalised
  (:mod:`.canonical`), hashed together with the record's header and the previous record's
  hash, and the hash is signed. Changing any byte of a record breaks its hash; removing,
  inserting or reordering records breaks the links; forging a consistent chain needs the
  private key.
* :func:`verify_chain` checks a sequence of records and names every one that fails, with why.
* :class:`RecordChain` appends to a chain (thread-safe, advancing only once a record is
  persisted); :class:`AuditLog` is the who/when/what/why log built on it.

Storage is the caller's: records become flat rows (:meth:`ChainedRecord.to_row`) and back.

The hash of a record, reproducible by any third party with SHA-256 and a JSON encoder::

    header = canonical JSON of {"created_at", "key_id", "kind", "prev_hash", "seq",
                                "subject_id"} (sorted keys, no spaces, UTF-8)
    hash   = "sha256:" + hex(SHA-256(b"assay.record.v1\\n" + header + b"\\n" + payload_json))
    signature = Ed25519(b"assay.record.sig.v1\\n" + ASCII(hash)), stored as hex
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import IntegrityError, UserInputError
from .canonical import canonical_json, canonical_loads

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "ChainedRecord",
    "KeyPair",
    "ProblemKind",
    "PublicKeyLike",
    "RecordChain",
    "VerificationProblem",
    "key_id",
    "load_public_key",
    "seal",
    "verify",
    "verify_audit_log",
    "verify_chain",
]

GENESIS_HASH = "sha256:" + "0" * 64
PRIVATE_KEY_FILE = "signing_key.pem"
PUBLIC_KEY_FILE = "signing_key.pub.pem"
_HASH_DOMAIN = b"assay.record.v1\n"
_SIG_DOMAIN = b"assay.record.sig.v1\n"


# ------------------------------------------------------------------------------------ keys

class KeyPair:
    """An Ed25519 signing key and its public half."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id: str = key_id(self.public_key)

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key held in memory only (tests, simulations)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str]) -> KeyPair:
        """Load ``directory/signing_key.pem``, creating it (and the directory) if missing.

        The private key is written with mode 0600 and published atomically, so two processes
        starting at once end up with the same key. The public key is also written beside it as
        ``signing_key.pub.pem``.

        Raises:
            UserInputError: the key file is readable by others, or is not an Ed25519 PEM key.
            IntegrityError: the private key is missing but its public key is there (the key
                was lost; a new one would make every earlier record fail verification).
        """
        folder = Path(directory).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PRIVATE_KEY_FILE
        pub = folder / PUBLIC_KEY_FILE
        if not path.exists():
            if pub.exists():  # records were signed here: a new key would orphan all of them
                raise IntegrityError(
                    f"{path} is missing, but {pub} shows this data directory had a signing key "
                    "(its records are signed with it)",
                    hint=f"restore {PRIVATE_KEY_FILE} from a backup; to start a new key "
                         f"instead, move {PUBLIC_KEY_FILE} aside (every record signed before "
                         "then will fail `assay verify` against the new key)")
            cls._create(path)
        pair = cls._load(path)
        pem = pair.export_public_key().encode("ascii")
        if not pub.exists() or pub.read_bytes() != pem:  # derived file: the private key rules
            _write_atomic(pub, pem, 0o644)
        return pair

    @classmethod
    def _create(cls, path: Path) -> None:
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if another process won the race: keep theirs
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def _load(cls, path: Path) -> KeyPair:
        mode = path.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UserInputError(f"signing key {path} is accessible by other users "
                                 f"(mode {oct(mode & 0o777)})",
                                 hint=f"run: chmod 600 {path}")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise UserInputError(f"{path} is not a readable unencrypted PEM private key: {exc}",
                                 hint="restore the key from a backup; a new key cannot "
                                      "verify old records") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise UserInputError(f"{path} holds a {type(key).__name__}, not an Ed25519 key",
                                 hint="assay signs with Ed25519 keys only")
        return cls(key)

    def export_public_key(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo), for anyone who verifies records."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``; returns the 64-byte Ed25519 signature."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"KeyPair(key_id={self.key_id!r})"


PublicKeyLike = Ed25519PublicKey | KeyPair | str | bytes


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """Accept a public key, a KeyPair, or PEM text/bytes; return the Ed25519 public key."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, KeyPair):
        return key.public_key
    if isinstance(key, str | bytes):
        data = key.encode("ascii") if isinstance(key, str) else key
        try:
            loaded = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise UserInputError(f"not a PEM public key: {exc}",
                                 hint="pass the text of signing_key.pub.pem") from exc
        if isinstance(loaded, Ed25519PublicKey):
            return loaded
        raise UserInputError(f"the PEM key is a {type(loaded).__name__}, not Ed25519",
                             hint="pass assay's Ed25519 public key")
    raise UserInputError(f"cannot use a {type(key).__name__} as a public key",
                         hint="pass PEM text, an Ed25519PublicKey or a KeyPair")


def key_id(public_key: PublicKeyLike) -> str:
    """A short fingerprint of a public key: ``"ed25519:"`` + 16 hex of SHA-256(raw key)."""
    raw = load_public_key(public_key).public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def verify(public_key: PublicKeyLike, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key``."""
    try:
        load_public_key(public_key).verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class ChainedRecord:
    """One signed link of a chain. Built by :func:`seal`; never edited afterwards.

    Attributes:
        seq: Position in the chain, from 0.
        kind: What the record is (``"run"``, ``"artifact_version"``, ``"audit"``, ...).
        subject_id: The id of the thing recorded (run id, artifact version id, ...).
        payload_json: The payload as canonical JSON text: these exact bytes are hashed.
        created_at: ISO 8601 UTC time of sealing (``2025-01-31T12:00:00.000000Z``).
        prev_hash: The previous record's ``hash``, or :data:`GENESIS_HASH` for the first.
        key_id: Fingerprint of the signing key (:func:`key_id`).
        hash: ``"sha256:<hex>"`` over header, ``prev_hash`` and payload (module docstring).
        signature: Hex Ed25519 signature of ``hash``.
    """

    seq: int
    kind: str
    subject_id: str
    payload_json: str
    created_at: str
    prev_hash: str
    key_id: str
    hash: str
    signature: str = field(repr=False)

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The payload, decoded (NaN and infinities restored as floats)."""
        return canonical_loads(self.payload_json)  # type: ignore[no-any-return]

    def compute_hash(self) -> str:
        """Recompute the hash from the record's content (what :func:`verify_chain` checks)."""
        header = canonical_json({
            "created_at": self.created_at, "key_id": self.key_id, "kind": self.kind,
            "prev_hash": self.prev_hash, "seq": self.seq, "subject_id": self.subject_id,
        })
        body = _HASH_DOMAIN + header + b"\n" + self.payload_json.encode("utf-8")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def to_row(self) -> dict[str, Any]:
        """The record as a flat dict of str/int columns, for a table."""
        return {name: getattr(self, name) for name in _ROW_FIELDS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChainedRecord:
        """Rebuild a record from :meth:`to_row` output (extra columns are ignored)."""
        missing = [name for name in _ROW_FIELDS if name not in row]
        if missing:
            raise UserInputError(f"record row lacks {missing}",
                                 hint="store every column of ChainedRecord.to_row()")
        return cls(**{name: row[name] for name in _ROW_FIELDS})


_ROW_FIELDS = ("seq", "kind", "subject_id", "payload_json", "created_at", "prev_hash",
               "key_id", "hash", "signature")


def _timestamp(at: datetime | None) -> str:
    if at is None:
        at = datetime.now(UTC)
    if at.tzinfo is None:
        raise UserInputError("created_at must be timezone-aware",
                             hint="use datetime.now(timezone.utc) or the injected clock")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seal(payload: Mapping[str, Any], prev: ChainedRecord | None, key: KeyPair, *,
         kind: str, subject_id: str, created_at: datetime | None = None) -> ChainedRecord:
    """Canonicalise, hash, chain and sign a payload.

    Args:
        payload: A JSON-like mapping (see :func:`~.canonical.canonical_json`).
        prev: The chain's current last record, or ``None`` to start a chain.
        key: The signing key.
        kind: What the record is (``"run"``, ``"artifact_version"``, ``"audit"``, ...).
        subject_id: The id of the thing recorded.
        created_at: When (timezone-aware); now if omitted.

    Returns:
        The record with ``seq = prev.seq + 1`` and ``prev_hash = prev.hash``.

    Raises:
        UserInputError: the payload is not canonical-JSON encodable, or an argument is empty.
    """
    if not isinstance(payload, Mapping):
        raise UserInputError(f"payload is a {type(payload).__name__}, not a mapping",
                             hint="seal a dict")
    for name, value in (("kind", kind), ("subject_id", subject_id)):
        if not isinstance(value, str) or not value:
            raise UserInputError(f"{name} must be a non-empty string, not {value!r}")
    payload_json = canonical_json(payload).decode("utf-8")
    unsigned = ChainedRecord(
        seq=0 if prev is None else prev.seq + 1, kind=kind, subject_id=subject_id,
        payload_json=payload_json, created_at=_timestamp(created_at),
        prev_hash=GENESIS_HASH if prev is None else prev.hash, key_id=key.key_id,
        hash="", signature="")
    digest = unsigned.compute_hash()
    signature = key.sign(_SIG_DOMAIN + digest.encode("ascii")).hex()
    return ChainedRecord(**{**unsigned.to_row(), "hash": digest, "signature": signature})


# ---------------------------------------------------------------------------- verification

class ProblemKind(StrEnum):
    """Why a record failed verification."""

    CONTENT_CHANGED = "content_changed"
    BAD_SIGNATURE = "bad_signature"
    BROKEN_LINK = "broken_link"
    SEQ_GAP = "seq_gap"
    OUT_OF_ORDER = "out_of_order"
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class VerificationProblem:
    """One failed check: which record (position, seq, kind, subject) and why."""

    index: int
    seq: int
    kind: str
    subject_id: str
    problem: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"record #{self.seq} ({self.kind} {self.subject_id}): {self.message}"


def verify_chain(records: Iterable[ChainedRecord], public_key: PublicKeyLike, *,
                 start: ChainedRecord | None = None,
                 expected_head: str | None = None) -> list[VerificationProblem]:
    """Check every record's hash, signature, link and sequence number.

    Records must be given in chain order (by ``seq``). The first must link to genesis, or to
    ``start`` when verifying a suffix. A chain cut short at its end links correctly; pass the
    head hash kept elsewhere (``expected_head``) to detect that too.

    Args:
        records: The chain, in order.
        public_key: The key that must have signed every record (PEM, key or KeyPair).
        start: The trusted record just before ``records`` (to verify a tail only).
        expected_head: The hash the last record must have.

    Returns:
        The problems found, in chain order; empty when the chain is intact.
    """
    pub = load_public_key(public_key)
    expected_key_id = key_id(pub)
    problems: list[VerificationProblem] = []
    prev_hash = GENESIS_HASH if start is None else start.hash
    top_seq = -1 if start is None else start.seq  # highest seq seen so far
    last: ChainedRecord | None = None
    for i, rec in enumerate(records):
        def note(kind: ProblemKind, msg: str, rec: ChainedRecord = rec, i: int = i) -> None:
            problems.append(VerificationProblem(i, rec.seq, rec.kind, rec.subject_id, kind, msg))

        try:
            intact = rec.compute_hash() == rec.hash
        except (UserInputError, TypeError, AttributeError, UnicodeError):
            intact = False  # a field of the wrong type: the row was edited by hand
        if not intact:
            note(ProblemKind.CONTENT_CHANGED,
                 "content changed: its fields no longer hash to its stored hash")
        if not _signature_ok(pub, rec):
            who = ("" if rec.key_id == expected_key_id else
                   f" (sealed by key {rec.key_id}, checked against {expected_key_id})")
            note(ProblemKind.BAD_SIGNATURE, f"signature does not verify{who}")
        if rec.prev_hash != prev_hash:
            note(ProblemKind.BROKEN_LINK,
                 "broken link: it does not point at the record before it (a record was "
                 "removed, inserted or reordered, or the previous one was changed)")
        if not isinstance(rec.seq, int):
            pass  # already reported as changed content
        elif rec.seq > top_seq + 1:
            missing = (f"#{top_seq + 1}" if rec.seq == top_seq + 2
                       else f"#{top_seq + 1}..#{rec.seq - 1}")
            note(ProblemKind.SEQ_GAP, f"sequence gap: record(s) {missing} are missing")
        elif rec.seq <= top_seq:
            note(ProblemKind.OUT_OF_ORDER,
                 f"out of order: seq {rec.seq} comes after seq {top_seq}")
        top_seq = max(top_seq, rec.seq) if isinstance(rec.seq, int) else top_seq + 1
        prev_hash, last = rec.hash, rec
    if expected_head is not None and (last.hash if last else prev_hash) != expected_head:
        seq = last.seq if last else top_seq
        problems.append(VerificationProblem(
            -1, seq, last.kind if last else "", last.subject_id if last else "",
            ProblemKind.TRUNCATED,
            f"the chain ends at record #{seq}, not at the expected head {expected_head} "
            f"(records were removed from its end, or added after the head was noted)"))
    return problems


def _signature_ok(pub: Ed25519PublicKey, rec: ChainedRecord) -> bool:
    try:
        sig = bytes.fromhex(rec.signature)
    except (ValueError, TypeError):
        return False
    return verify(pub, sig, _SIG_DOMAIN + rec.hash.encode("ascii", "replace"))


# ------------------------------------------------------------------------ appending chains

class RecordChain:
    """Appends sealed records to one chain, one at a time.

    ``append`` seals the next record, hands it to ``sink`` (which must persist it durably, or
    raise), and only then moves the head, all under a lock: a failed write leaves the head on
    the last persisted record, so the chain never forks or skips.

    Args:
        key: The signing key.
        head: The chain's last persisted record (``None`` for a new chain).
        sink: Persists a record; called under the chain's lock.
        clock: Returns the current time (tz-aware); injectable for simulations and tests.
    """

    def __init__(self, key: KeyPair, head: ChainedRecord | None = None, *,
                 sink: Callable[[ChainedRecord], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._key, self._head, self._sink = key, head, sink
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()

    @property
    def head(self) -> ChainedRecord | None:
        """The last record appended (and persisted)."""
        return self._head

    def append(self, kind: str, subject_id: str, payload: Mapping[str, Any]) -> ChainedRecord:
        """Seal ``payload`` as the next record, persist it through ``sink``, return it."""
        with self._lock:
            rec = seal(payload, self._head, self._key, kind=kind, subject_id=subject_id,
                       created_at=self._clock())
            if self._sink is not None:
                self._sink(rec)
            self._head = rec
            return rec


@dataclass(frozen=True)
class AuditEntry:
    """Who did what, to what, when and why (the decoded payload of an audit record)."""

    actor: str
    action: str
    target: str
    reason: str
    at: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: ChainedRecord) -> AuditEntry:
        """Decode an audit record (``kind == "audit"``)."""
        p = rec.payload
        try:
            return cls(p["actor"], p["action"], p["target"], p["reason"], rec.created_at,
                       dict(p.get("details", {})))
        except (KeyError, TypeError) as exc:
            raise IntegrityError(f"record #{rec.seq} is not an audit entry",
                                 hint="audit records carry actor, action, target, reason") \
                from exc


class AuditLog:
    """An append-only, hash-chained, signed log of who did what and why.

    Storage-agnostic: give it the last stored record and a ``sink`` that stores new ones.
    """

    KIND = "audit"

    def __init__(self, key: KeyPair, head: ChainedRecord | None = None, *,
                 sink: Callable[[ChainedRecord], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._chain = RecordChain(key, head, sink=sink, clock=clock)

    @property
    def head(self) -> ChainedRecord | None:
        """The last entry's record."""
        return self._chain.head

    def append(self, actor: str, action: str, target: str, reason: str, *,
               details: Mapping[str, Any] | None = None) -> ChainedRecord:
        """Record that ``actor`` did ``action`` to ``target`` because ``reason``."""
        for name, value in (("actor", actor), ("action", action), ("target", target)):
            if not isinstance(value, str) or not value:
                raise UserInputError(f"audit {name} must be a non-empty string, not {value!r}")
        if not isinstance(reason, str):
            raise UserInputError(f"audit reason must be a string, not {reason!r}")
        payload = {"actor": actor, "action": action, "target": target, "reason": reason,
                   "details": dict(details or {})}
        return self._chain.append(self.KIND, target, payload)


def verify_audit_log(records: Iterable[ChainedRecord], public_key: PublicKeyLike, *,
                     expected_head: str | None = None) -> list[VerificationProblem]:
    """:func:`verify_chain` plus a check that every record is a well-formed audit entry."""
    recs = list(records)
    problems = verify_chain(recs, public_key, expected_head=expected_head)
    for i, rec in enumerate(recs):
        try:
            if rec.kind != AuditLog.KIND:
                raise IntegrityError(f"kind is {rec.kind!r}")
            AuditEntry.from_record(rec)
        except (IntegrityError, UserInputError) as exc:
            problems.append(VerificationProblem(
                i, rec.seq, rec.kind, rec.subject_id, ProblemKind.CONTENT_CHANGED,
                f"not an audit entry: {exc}"))
    return sorted(problems, key=lambda p: (p.index if p.index >= 0 else len(recs), p.seq))
