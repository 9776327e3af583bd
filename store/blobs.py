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
import math
import os
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
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

        The bytes go to a temporary file beside ``dest`` (hashed while copying, or right after
        the backend's own download), which replaces ``dest`` atomically only once the digest
        matches; on a mismatch nothing is left at ``dest``.

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
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
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
            if self._freshen(final):
                os.unlink(tmp)  # already stored: identical content is kept once
                return ref
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
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


def _info_time(info: dict[str, Any]) -> Any:
    """The write time in an fsspec info dict (S3: LastModified; local: mtime; memory: created)."""
    for name in ("LastModified", "mtime", "created"):
        if info.get(name) not in (None, ""):
            return info[name]
    return None


def _epoch(value: Any) -> float:
    """Epoch seconds from a datetime or a number; infinity when the backend gives no time
    (such a blob always counts as just written, so gc never removes it)."""
    if value is None or value == "":
        return math.inf
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsspecBlobStore(BlobStore):
    """Blobs under an fsspec URL: ``s3://bucket/prefix/sha256/ab/cd/<hex>``.

    Made for object stores (S3 and S3-compatible servers through s3fs), where an object
    becomes visible only once its upload completes. A put hashes the source first and skips
    the upload when the digest is already stored. Sources up to ``block_size`` are read once
    into memory, hashed and sent in one PUT, so the bytes sent are exactly the bytes hashed.
    Bigger files go through the backend's parallel multipart upload; if the file's size,
    mtime or inode changed between hashing and the end of the upload, the object is removed
    and IntegrityError raised. ``get_to_path`` downloads to a temporary file with the backend's
    own download and hashes that copy before renaming it into place; ``open``/``get_bytes``
    read ranges of ``block_size`` and verify as they go. ``read_window`` ranges are fetched at
    once: 1 (one streaming GET) suits S3-compatible servers on a LAN; raise it to 4-8 for
    multi-GB blobs on AWS S3, where parallel ranged GETs are faster.

    Args:
        url: Root URL, e.g. ``"s3://bucket/prefix"`` or ``"memory://blobs"``.
        block_size: Part and range size (S3 parts must be at least 5 MiB).
        read_window: Ranges fetched concurrently when reading a blob over ``block_size``.
        **storage_options: Passed to fsspec, e.g. ``endpoint_url``, ``key``, ``secret``.
    """

    def __init__(self, url: str, *, block_size: int = 16 << 20, read_window: int = 1,
                 **storage_options: Any) -> None:
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise UserInputError(f"cannot open blob store {url!r}: {exc}",
                                 hint="use a path, file://, s3://bucket/prefix or another "
                                      "fsspec URL whose package is installed") from exc
        self._fs = fs
        self._root = root.rstrip("/")
        self._url = url.rstrip("/")
        self._block_size = max(block_size, 5 << 20)
        self._window = max(1, read_window)
        self._is_s3 = hasattr(fs, "call_s3") and "s3" in _protocols(fs)
        self.read_chunk = self._block_size

    @property
    def uri(self) -> str:
        return self._url

    @property
    def fs(self) -> Any:
        """The underlying fsspec filesystem."""
        return self._fs

    def key_of(self, digest: str) -> str:
        """The backend path of the blob ``digest``."""
        hex_ = parse_digest(digest)
        return f"{self._root}/sha256/{hex_[:2]}/{hex_[2:4]}/{hex_}"

    def location(self, digest: str) -> str:
        return str(self._fs.unstrip_protocol(self.key_of(digest)))

    def exists(self, digest: str) -> bool:
        key = self.key_of(digest)
        if self._is_s3:  # one HEAD; fs.exists would also LIST the prefix when it is absent
            bucket, name, _ = self._fs.split_path(key)
            try:
                self._fs.call_s3("head_object", Bucket=bucket, Key=name)
            except FileNotFoundError:
                return False
            return True
        self._fresh(key)
        return bool(self._fs.isfile(key))

    def put_bytes(self, data: bytes | bytearray | memoryview) -> BlobRef:
        data = bytes(data)  # immutable from here on: what is hashed is what is sent
        ref = hash_bytes(data)
        if not self._reuse(ref.digest):
            key = self.key_of(ref.digest)
            self._makedirs(key)
            self._fs.pipe_file(key, data)
        return ref

    def _reuse(self, digest: str) -> bool:
        """Whether ``digest`` is stored, freshened for gc when it is (a put that reuses it).

        An object's time cannot be changed in place, so a reuse writes a small marker,
        ``<root>/touch/<hex>``, then looks again: a sweep that removed the blob in between
        either sees the new marker (and puts the blob back) or has removed it before this
        second look, which then reports the blob absent so the put uploads it again.
        """
        if not self.exists(digest):
            return False
        touch = self._aux_key("touch", digest)
        self._makedirs(touch)
        # A new body per reuse: a sweep compares the marker before and after it removes the
        # blob, so it does not depend on clocks or on the server's one-second object times.
        self._fs.pipe_file(touch, uuid.uuid4().hex.encode())
        return self.exists(digest)

    def put_file(self, path: str | os.PathLike[str]) -> BlobRef:
        with _open_source(path) as f:
            before = os.fstat(f.fileno())
            if before.st_size <= self._block_size:
                return self.put_bytes(f.read())
            h, size = _copy(f, None)
        ref = BlobRef("sha256:" + h.hexdigest(), size)
        if not self._reuse(ref.digest):
            self._put_large(Path(path), ref, before)
        return ref

    def put_stream(self, stream: IO[bytes]) -> BlobRef:
        # The digest names the object, so it must be known before the upload: spool first.
        head = stream.read(self._block_size + 1)
        if len(head) <= self._block_size:
            return self.put_bytes(head)
        fd, tmp = tempfile.mkstemp(prefix="assay-blob-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as spool:
                spool.write(head)
                h, rest = _copy(stream, spool, h=hashlib.sha256(head))
            ref = BlobRef("sha256:" + h.hexdigest(), len(head) + rest)
            if not self._reuse(ref.digest):
                self._put_large(Path(tmp), ref, os.stat(tmp))
            return ref
        finally:
            os.unlink(tmp)

    def _put_large(self, path: Path, ref: BlobRef, before: os.stat_result) -> None:
        key = self.key_of(ref.digest)
        self._makedirs(key)
        extra = {"chunksize": self._block_size} if self._is_s3 else {}
        self._fs.put_file(str(path), key, **extra)
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (
                before.st_size, before.st_mtime_ns, before.st_ino) or after.st_size != ref.size:
            with suppress(FileNotFoundError):
                self._fs.rm(key)
            raise IntegrityError(
                f"{path} changed while it was stored as {ref.digest}; the upload was removed",
                hint="do not modify files while storing them; put the file again")

    def _makedirs(self, key: str) -> None:
        if "file" in _protocols(self._fs):  # object stores have no folders to create
            self._fs.makedirs(self._fs._parent(key), exist_ok=True)

    def delete(self, digest: str) -> bool:
        # Not gc-safe against a concurrent put that reuses the blob: gc uses sweep().
        if not self.exists(digest):  # S3 deletes of absent keys succeed silently
            return False
        with suppress(FileNotFoundError):
            self._fs.rm(self.key_of(digest))
        self._rm_quiet(self._aux_key("touch", digest))
        return True

    # -- garbage collection (see assay.store.gc) --------------------------------------------
    #: The smallest grace gc accepts here: object and marker times come from the server's
    #: clock (S3: one-second resolution) and are compared with the gc host's clock.
    min_gc_grace: float = 60.0

    def _aux_key(self, kind: str, digest: str) -> str:
        """A gc key: ``touch/<hex>`` (the last reuse) or ``trash/<hex>.<unique>`` (a blob
        being swept; unique per sweep, so sweeps never share one)."""
        hex_ = parse_digest(digest)
        if kind == "trash":
            return f"{self._root}/trash/{hex_}.{uuid.uuid4().hex}"
        return f"{self._root}/{kind}/{hex_}"

    def _rm_quiet(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self._fs.rm(key)

    def _fresh(self, key: str) -> None:
        """Forget what the backend's listing cache knows of ``key``'s folder: gc decisions
        must see other processes' writes (s3fs paths use HEAD and never need this)."""
        self._fs.invalidate_cache(key.rsplit("/", 1)[0])

    def _time(self, key: str) -> float | None:
        """An object's last write time (epoch seconds, the server's clock), None if absent."""
        if self._is_s3:  # a HEAD, never a listing cache another process may have outdated
            bucket, name, _ = self._fs.split_path(key)
            try:
                head = self._fs.call_s3("head_object", Bucket=bucket, Key=name)
            except FileNotFoundError:
                return None
            return _epoch(head.get("LastModified"))
        self._fresh(key)
        try:
            return _epoch(_info_time(self._fs.info(key)))
        except FileNotFoundError:
            return None

    def _marker(self, digest: str) -> bytes | None:
        """The body of ``digest``'s touch marker (each reuse writes a new one), None if none."""
        touch = self._aux_key("touch", digest)
        if not self._is_s3:
            self._fresh(touch)
        try:
            return bytes(self._fs.cat_file(touch))
        except FileNotFoundError:
            return None

    def _move(self, src: str, dst: str) -> None:
        """Move an object: a rename on a local filesystem (atomic), else copy, then remove."""
        self._makedirs(dst)
        if "file" in _protocols(self._fs):
            self._fs.mv(src, dst)
            return
        self._fs.copy(src, dst)
        self._fs.rm(src)

    def _listing(self, kind: str) -> dict[str, dict[str, Any]]:
        """``{name: info}`` of the objects under ``<root>/<kind>/`` whose name starts with a
        digest's hex, read fresh."""
        self._fs.invalidate_cache(f"{self._root}/{kind}")
        try:
            found = self._fs.find(f"{self._root}/{kind}", detail=True)
        except FileNotFoundError:
            return {}
        return {k.rsplit("/", 1)[-1]: v for k, v in found.items()
                if _HEX_RE.fullmatch(k.rsplit("/", 1)[-1].split(".", 1)[0])}

    def iter_blobs(self) -> Iterator[StoredBlob]:
        """Every blob, its time the later of its upload and its last reuse (touch marker)."""
        touched = {h: _epoch(_info_time(i)) for h, i in self._listing("touch").items()}
        for hex_, info in self._listing("sha256").items():
            if _HEX_RE.fullmatch(hex_):
                t = max(_epoch(_info_time(info)), touched.get(hex_, 0.0))
                yield StoredBlob("sha256:" + hex_, int(info.get("size") or 0), t)

    def sweep(self, digest: str, cutoff: float) -> bool:
        # No atomic rename on an object store: move the blob to trash/ (copy, remove), then
        # compare its touch marker with the one read before. A put that reused the blob
        # before the removal wrote a new marker before its second look (see _reuse): the
        # marker differs (or, written before the first read, is younger than the cutoff)
        # and the blob goes back. A put that looks after the removal uploads it again.
        key, touch = self.key_of(digest), self._aux_key("touch", digest)
        marker = self._marker(digest)
        written = self._time(key)
        if written is None or written >= cutoff or (self._time(touch) or 0.0) >= cutoff:
            return False
        trash = self._aux_key("trash", digest)
        self._move(key, trash)
        if self._marker(digest) != marker or (self._time(touch) or 0.0) >= cutoff:
            self._move(trash, key)
            return False
        self._rm_quiet(trash)
        self._rm_quiet(touch)
        return True

    def recover_sweeps(self) -> int:
        """Put back blobs a sweep that crashed left in ``trash/`` (gc calls this first, under
        the data directory's gc lock, so no sweep is in flight)."""
        n = 0
        for name in self._listing("trash"):
            digest = "sha256:" + name.split(".", 1)[0]
            trash = f"{self._root}/trash/{name}"
            if self.exists(digest):
                self._rm_quiet(trash)
            else:
                with suppress(FileNotFoundError):  # a reader restored it meanwhile
                    self._move(trash, self.key_of(digest))
                    n += 1
        return n

    def _restore_from_trash(self, digest: str) -> bool:
        """A read that misses: put back the blob if a sweep that crashed left it in trash."""
        hex_ = parse_digest(digest)
        for name in self._listing("trash"):
            if name.split(".", 1)[0] == hex_:
                with suppress(FileNotFoundError):  # moved back by someone else meanwhile
                    self._move(f"{self._root}/trash/{name}", self.key_of(digest))
                return self.exists(digest)
        return False

    def _download(self, digest: str, tmp: Path) -> BlobRef:
        # The backend's own download (s3fs: one streaming GET, or read_window parallel ranged
        # GETs for blobs over block_size), then a hash of the local copy before it is renamed
        # into place: reading back a just-written file from the page cache costs little.
        extra = ({"chunksize": self._block_size, "max_concurrency": self._window}
                 if self._is_s3 else {})
        try:
            self._fs.get_file(self.key_of(digest), str(tmp), **extra)
        except FileNotFoundError:
            if not self._restore_from_trash(digest):
                raise self._not_found(digest) from None
            self._fs.get_file(self.key_of(digest), str(tmp), **extra)
        return hash_file(tmp)

    def _open_raw(self, digest: str, retry: bool = True) -> IO[bytes]:
        key = self.key_of(digest)
        try:
            # One ranged GET reads most blobs whole, without a HEAD for the size first.
            first: bytes | None = self._fs.cat_file(key, start=0, end=self._block_size)
        except FileNotFoundError:
            if retry and self._restore_from_trash(digest):
                return self._open_raw(digest, retry=False)
            raise self._not_found(digest) from None
        except OSError:  # S3 answers 416 to a range on an empty object
            first = None
        if first is not None and len(first) < self._block_size:
            return io.BytesIO(first)
        try:
            size = int(self._fs.size(key))
        except FileNotFoundError:
            raise self._not_found(digest) from None
        reader = _RangeReader(self._fs, key, size, self._block_size, self._window, first)
        return cast(IO[bytes], reader)


class _RangeReader(io.RawIOBase):
    """Reads an object as ranged GETs, ``window`` of them in flight at once."""

    def __init__(self, fs: Any, key: str, size: int, chunk: int, window: int,
                 first: bytes | None = None) -> None:
        self._fs, self._key = fs, key
        self._size, self._chunk, self._window = size, chunk, window
        self._pieces: list[bytes] = [first] if first else []
        self._starts = list(range(len(first) if first else 0, size, chunk))

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if not self._pieces:
            if not self._starts:
                return b""
            batch, self._starts = self._starts[:self._window], self._starts[self._window:]
            if len(batch) == 1 and batch[0] == 0:
                self._pieces = [self._fs.cat_file(self._key)]
            else:
                ends = [min(s + self._chunk, self._size) for s in batch]
                out = self._fs.cat_ranges([self._key] * len(batch), batch, ends)
                for piece in out:
                    if isinstance(piece, BaseException):
                        raise piece
                self._pieces = list(out)
            self._pieces.reverse()
        piece = self._pieces.pop()
        if n is not None and 0 <= n < len(piece):
            self._pieces.append(piece[n:])
            piece = piece[:n]
        return piece

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


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
