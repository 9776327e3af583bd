"""Content-addressed blob storage: artifact files stored once, by their SHA-256.

A blob is an immutable byte string named by its digest, ``"sha256:<64 hex>"``. A
:class:`BlobStore` puts files and bytes (streaming in 1 MiB chunks, so a file of many GB never
sits in memory), says whether a digest is present, and reads blobs back while verifying their
digest: a blob whose bytes changed on disk or in the bucket raises
:class:`~assay.errors.IntegrityError` naming the digest and where it lives, and nothing
unverified is left at the destination.

Two implementations pass the same contract suite (``tests/store/test_blobs.py``):
:class:`LocalBlobStore` (a folder, ``root/sha256/ab/cd/<hex>``, files read-only) and
:class:`FsspecBlobStore` (an fsspec URL such as ``s3://bucket/prefix`` on any S3-compatible
server). :func:`open_blob_store` picks one from a path or URI.

Trees of files (an artifact version's manifest) are built on top, in :mod:`.manifests`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from ..errors import IntegrityError, NotFoundError, UserInputError

__all__ = [
    "CHUNK_SIZE",
    "BlobRef",
    "BlobStore",
    "FsspecBlobStore",
    "LocalBlobStore",
    "StoredBlob",
    "hash_bytes",
    "hash_file",
    "open_blob_store",
    "parse_digest",
]

CHUNK_SIZE = 1 << 20
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_HEX_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredBlob:
    """A blob as listed by :meth:`BlobStore.iter_blobs`: digest, size, last write time."""

    digest: str
    size: int
    mtime: float


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its ``digest`` (``"sha256:<hex>"``) and ``size`` in bytes."""

    digest: str
    size: int


def parse_digest(digest: str) -> str:
    """Return the hex part of ``"sha256:<64 lowercase hex>"``; raise UserInputError otherwise."""
    match = _DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise UserInputError(f"{digest!r} is not a blob digest",
                             hint='digests look like "sha256:" followed by 64 lowercase hex')
    return match.group(1)


def hash_bytes(data: bytes | bytearray | memoryview) -> BlobRef:
    """Digest bytes in memory."""
    return BlobRef("sha256:" + hashlib.sha256(data).hexdigest(), memoryview(data).nbytes)


def hash_file(path: str | os.PathLike[str]) -> BlobRef:
    """Digest a file in 1 MiB chunks (never the whole file in memory)."""
    with _open_source(path) as f:
        h, size = _copy(f, None)
    return BlobRef("sha256:" + h.hexdigest(), size)


def _open_source(path: str | os.PathLike[str]) -> IO[bytes]:
    p = Path(path)
    if p.is_dir():
        raise UserInputError(f"{p} is a directory, not a file",
                             hint="store a directory with build_manifest(path, store)")
    try:
        return open(p, "rb")
    except FileNotFoundError as exc:
        raise UserInputError(f"no file at {p}", hint="check the path") from exc


def _copy(src: IO[bytes], dst: IO[bytes] | None, chunk: int = CHUNK_SIZE, *,
          h: Any = None) -> tuple[Any, int]:
    """Copy ``src`` to ``dst`` (if any) in chunks, hashing on the way; return (hash, size)."""
    h = hashlib.sha256() if h is None else h
    size = 0
    while data := src.read(chunk):
        h.update(data)
        if dst is not None:
            dst.write(data)
        size += len(data)
    return h, size


class BlobStore(ABC):
    """Where blobs live: content-addressed, write-once, verified on every read.

    Contract, shared by every implementation and checked by one test suite:

    * a put returns the digest of exactly the bytes stored; putting content that is already
      present is a no-op (one copy per digest), and a half-written blob is never visible;
    * blobs are immutable: nothing in assay rewrites one, so a read whose bytes do not match
      the digest means the storage was changed behind assay's back (``IntegrityError``);
    * a missing digest raises ``NotFoundError``, a malformed one ``UserInputError``;
    * methods are safe to call from several threads and processes at once.

    Callers are the SDK's artifact API (puts), the store when it records artifact versions,
    and ``assay verify`` / artifact downloads (reads). Nothing here knows about runs.
    """

    #: Bytes asked of the backend per read; object stores prefer fewer, larger requests.
    read_chunk: int = CHUNK_SIZE

    @property
    @abstractmethod
    def uri(self) -> str:
        """The store's root as a URI (``file:///...``, ``s3://bucket/prefix``)."""

    @abstractmethod
    def location(self, digest: str) -> str:
        """Where the blob named ``digest`` lives (a path or URI), for messages and tools."""

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored (its bytes are not re-verified)."""

    def reuse(self, digest: str) -> bool:
        """Whether ``digest`` is stored; if so, mark it just written, as a put of the same
        content does, so garbage collection keeps it through its grace period (an upload
        that skips a blob the server already holds relies on that until its version
        commits)."""
        return self.exists(digest)

    def size(self, digest: str) -> int:
        """The stored blob's size in bytes (unverified); NotFoundError if absent."""
        with self._open_raw(digest) as raw:
            return _copy(raw, None, self.read_chunk)[1]

    @abstractmethod
    def put_stream(self, stream: IO[bytes]) -> BlobRef:
        """Store everything ``stream`` yields until EOF; return its digest and size."""

    @abstractmethod
    def delete(self, digest: str) -> bool:
        """Remove a blob (garbage collection only); return whether it was there."""

    @abstractmethod
    def _open_raw(self, digest: str) -> IO[bytes]:
        """Open the stored bytes for reading, unverified; NotFoundError if absent."""

    # -- garbage collection (see assay.store.gc) --------------------------------------------
    def iter_blobs(self) -> Iterator[StoredBlob]:
        """Every stored blob with its size and last write (or dedup) time.

        Only stores that can prove a blob untouched for a while support garbage collection:
        a put of content already stored must refresh that time (see
        :meth:`LocalBlobStore.put_stream`), or a sweep could remove a blob an upload in flight
        just reused.
        """
        raise self._no_gc()

    def sweep(self, digest: str, cutoff: float) -> bool:
        """Remove the blob if it was last written or reused before ``cutoff`` (epoch seconds).

        Atomic against a concurrent put of the same content: either the put sees the blob
        gone and stores it again, or the sweep sees the put's fresh time and keeps the blob.
        Returns whether the blob was removed.
        """
        raise self._no_gc()

    def recover_sweeps(self) -> int:
        """Put back blobs a sweep that crashed left aside (gc calls this first); the count."""
        return 0

    def _no_gc(self) -> UserInputError:
        return UserInputError(
            f"garbage collection is not supported for {type(self).__name__} ({self.uri})",
            hint="gc supports LocalBlobStore and FsspecBlobStore; another store must refresh "
                 "the time of a blob an upload reuses, or gc could not tell a blob in use by "
                 "an upload in flight from garbage")

    def put_file(self, path: str | os.PathLike[str]) -> BlobRef:
        """Store the file at ``path`` (streamed in chunks); return its digest and size."""
        with _open_source(path) as f:
            return self.put_stream(f)

    def put_bytes(self, data: bytes | bytearray | memoryview) -> BlobRef:
        """Store ``data``; return its digest and size."""
        return self.put_stream(io.BytesIO(bytes(data)))

    def open(self, digest: str) -> IO[bytes]:
        """Open a blob for streaming reads; reading to EOF verifies it.

        The returned reader raises IntegrityError when it reaches the end of a blob whose bytes
        do not match ``digest``; a caller that stops early gets no such check.
        """
        parse_digest(digest)
        raw = self._open_raw(digest)
        return io.BufferedReader(_VerifyingReader(raw, digest, self.location(digest)),
                                 buffer_size=self.read_chunk)

    def get_bytes(self, digest: str) -> bytes:
        """Return a blob's bytes after verifying them (for small blobs)."""
        parse_digest(digest)
        buf = io.BytesIO()
        with self._open_raw(digest) as raw:
            h, size = _copy(raw, buf, self.read_chunk)
        self._check(digest, h, size)
        return buf.getvalue()

    def get_to_path(self, digest: str, dest: str | os.PathLike[str], *,
                    read_only: bool = False) -> BlobRef:
        """Write a blob to ``dest``, verifying its digest before it lands.

        The bytes go to a temporary file beside ``dest`` (``.assay-XXXXXXXX.part``; hashed
        while copying, or right after the backend's own download), which replaces ``dest``
        atomically only once the digest matches; on a mismatch nothing is left at ``dest``.

        Args:
            digest: The blob to read.
            dest: The file to write (parent folders are created; an existing file is replaced).
            read_only: Make the written file read-only (mode 0444).

        Raises:
            IntegrityError: the stored bytes no longer match ``digest``.
            NotFoundError: no such blob.
        """
        parse_digest(digest)
        dest = Path(dest)
        if dest.is_dir():
            raise UserInputError(f"{dest} is a directory", hint="pass the path of a file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A short name of fixed length: ``dest``'s own may already use most of NAME_MAX.
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".assay-", suffix=".part")
        os.close(fd)
        try:
            ref = self._download(digest, Path(tmp))
            if ref.digest != digest:
                raise _corrupt(digest, self.location(digest), ref.digest, ref.size)
            if read_only:
                os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ref

    def _download(self, digest: str, tmp: Path) -> BlobRef:
        """Copy the stored bytes to the file ``tmp``; return the digest of what was written."""
        with self._open_raw(digest) as raw, open(tmp, "wb") as out:
            h, size = _copy(raw, out, self.read_chunk)
        return BlobRef("sha256:" + h.hexdigest(), size)

    def _check(self, digest: str, h: Any, size: int) -> None:
        if "sha256:" + h.hexdigest() != digest:
            raise _corrupt(digest, self.location(digest), "sha256:" + h.hexdigest(), size)

    def _not_found(self, digest: str) -> NotFoundError:
        return NotFoundError(f"blob {digest} is not in {self.uri}",
                             hint="check the digest, or put the content first")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def _corrupt(digest: str, where: str, actual: str, size: int) -> IntegrityError:
    return IntegrityError(
        f"blob {digest} at {where} is corrupt: its {size} bytes hash to {actual}",
        hint="the stored copy changed after it was written; delete it and put the original "
             "content again, or restore it from a backup",
    )


class _VerifyingReader(io.RawIOBase):
    """A raw reader that hashes what passes through and checks the digest at EOF."""

    def __init__(self, raw: IO[bytes], digest: str, where: str) -> None:
        self._raw, self._digest, self._where = raw, digest, where
        self._h = hashlib.sha256()
        self._size = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        if n:
            b[:n] = data
            self._h.update(data)
            self._size += n
        elif not self._checked:
            self._checked = True
            if "sha256:" + self._h.hexdigest() != self._digest:
                raise _corrupt(self._digest, self._where, "sha256:" + self._h.hexdigest(),
                               self._size)
        return n

    def close(self) -> None:
        with suppress(Exception):
            self._raw.close()
        super().close()


class LocalBlobStore(BlobStore):
    """Blobs in a local folder: ``root/sha256/ab/cd/<hex>``, each file read-only.

    A put copies the source into ``root/tmp`` while hashing it (one read, one write), fsyncs
    it when ``durable`` (the default: an acknowledged put survives a crash), then renames it
    into place, which is atomic, so readers never see half a blob.

    Args:
        root: The folder (created if missing).
        durable: fsync each new blob and its folder before returning from a put.
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.durable = durable
        self._tmp = self.root / "tmp"
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(exist_ok=True)

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def path_of(self, digest: str) -> Path:
        """The file that holds (or would hold) the blob ``digest``."""
        hex_ = parse_digest(digest)
        return self.root / "sha256" / hex_[:2] / hex_[2:4] / hex_

    def location(self, digest: str) -> str:
        return str(self.path_of(digest))

    def exists(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def reuse(self, digest: str) -> bool:
        return self._freshen(self.path_of(digest))

    def size(self, digest: str) -> int:
        try:
            return self.path_of(digest).stat().st_size
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def put_stream(self, stream: IO[bytes]) -> BlobRef:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                h, size = _copy(stream, out)
                os.fchmod(out.fileno(), 0o444)
                if self.durable:
                    out.flush()
                    os.fsync(out.fileno())
            ref = BlobRef("sha256:" + h.hexdigest(), size)
            final = self.path_of(ref.digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Even when the blob is stored: the copy just written is verified, and it
                # replaces one that rotted on disk (the new file is also "just written" for gc).
                os.replace(tmp, final)
            except PermissionError:  # a shared folder whose blob another user owns
                if not self._freshen(final):
                    raise
                os.unlink(tmp)
                return ref
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self.durable:
            _fsync_dir(final.parent)
        return ref

    @staticmethod
    def _freshen(final: Path) -> bool:
        """Mark a stored blob as just written (git's "freshen"); False if it is not there.

        Garbage collection keeps blobs written within its grace period, so an upload that
        reuses an old, unreferenced blob keeps it alive until its version record commits.
        """
        try:
            os.utime(final)
        except FileNotFoundError:
            return False
        except PermissionError:  # owned by another user: exists, but cannot be freshened
            return final.is_file()
        return True

    def delete(self, digest: str) -> bool:
        try:
            self.path_of(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def _open_raw(self, digest: str) -> IO[bytes]:
        try:
            return open(self.path_of(digest), "rb")
        except FileNotFoundError:
            pass
        # A sweep that crashed between moving the blob aside and deciding may have left it
        # in tmp/: put it back (gc would, on its next run) rather than fail the read.
        with suppress(FileNotFoundError):
            os.replace(self._tmp / f"{parse_digest(digest)}.gc", self.path_of(digest))
        try:
            return open(self.path_of(digest), "rb")
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def iter_blobs(self) -> Iterator[StoredBlob]:
        top = self.root / "sha256"
        for dirpath, _, names in os.walk(top):
            for name in names:
                if not _HEX_RE.fullmatch(name):
                    continue
                with suppress(FileNotFoundError):
                    st = os.stat(os.path.join(dirpath, name))
                    yield StoredBlob("sha256:" + name, st.st_size, st.st_mtime)

    def sweep(self, digest: str, cutoff: float) -> bool:
        # Move the blob aside first (atomic), then look at its time: a put that freshened it
        # before the move shows a new time (the blob goes back), a put after the move finds
        # no blob and stores the content again. A plain stat-then-unlink would leave a window.
        final = self.path_of(digest)
        trash = self._tmp / f"{parse_digest(digest)}.gc"
        try:
            os.rename(final, trash)
            if os.stat(trash).st_mtime >= cutoff:
                os.replace(trash, final)
                return False
            trash.unlink()
        except FileNotFoundError:  # gone, or a read put it back meanwhile
            return False
        return True

    def recover_sweeps(self) -> int:
        """Put back blobs a sweep that crashed left aside (gc calls this first)."""
        n = 0
        for trash in self._tmp.glob("*.gc"):
            final = self.path_of("sha256:" + trash.stem)
            if final.is_file():
                trash.unlink()
            else:
                os.replace(trash, final)
                n += 1
        return n

    def sweep_partials(self, cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove partial uploads (``tmp/*.part``) untouched since ``cutoff``: (count, bytes)."""
        count = size = 0
        for part in self._tmp.glob("*.part"):
            with suppress(FileNotFoundError):
                st = part.stat()
                if st.st_mtime < cutoff:
                    if not dry_run:
                        part.unlink()
                    count, size = count + 1, size + st.st_size
        return count, size

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blob_store(uri_or_path: str | os.PathLike[str], **options: Any) -> BlobStore:
    """Open the blob store at a path or URI.

    A plain path or ``file://`` URI gives a :class:`LocalBlobStore`; any other URL
    (``s3://bucket/prefix``, ...) an :class:`FsspecBlobStore`, with ``options`` as its storage
    options (e.g. ``endpoint_url="http://127.0.0.1:9000"``, ``key=...``, ``secret=...``).
    """
    text = os.fspath(uri_or_path)
    if not isinstance(text, str) or not text:
        raise UserInputError(f"{uri_or_path!r} is not a blob store location",
                             hint="pass a folder path or a URL such as s3://bucket/prefix")
    if "://" not in text:
        return LocalBlobStore(text, **options)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UserInputError(f"{text} names another host",
                                 hint="file:// URLs must be local: file:///path")
        return LocalBlobStore(unquote(parsed.path), **options)
    return FsspecBlobStore(text, **options)


# Built on BlobStore above; importable from here as before.
from .blobs_fsspec import FsspecBlobStore
