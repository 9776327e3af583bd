"""Blobs under an fsspec URL (S3 and S3-compatible servers through s3fs, any fsspec backend):
:class:`FsspecBlobStore`, the object-store implementation of :class:`~.blobs.BlobStore`,
with its ranged reader and the gc protocol object stores need (touch markers, trash moves;
see :meth:`FsspecBlobStore.sweep`). :func:`~.blobs.open_blob_store` picks it for URLs.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, cast

from ..errors import IntegrityError, UserInputError
from .blobs import (
    _HEX_RE,
    BlobRef,
    BlobStore,
    StoredBlob,
    _copy,
    _open_source,
    hash_bytes,
    hash_file,
    parse_digest,
)

__all__ = ["FsspecBlobStore"]


class FsspecBlobStore(BlobStore):
    """Blobs under an fsspec URL: ``s3://bucket/prefix/sha256/ab/cd/<hex>``.

    Made for object stores (S3 and S3-compatible servers through s3fs), where an object
    becomes visible only once its upload completes. A put hashes the source first and skips
    the upload when the digest is already stored. Sources up to ``block_size`` are read once
    into memory, hashed and sent in one PUT, so the bytes sent are exactly the bytes hashed.
    Bigger files go through the backend's parallel multipart upload; if the file's size,
    mtime or inode changed between hashing and the end of the upload, IntegrityError is
    raised and the object removed unless it holds exactly the hashed content (another put of
    the same content may have stored it meanwhile). ``get_to_path`` downloads to a temporary file with the backend's
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

    def reuse(self, digest: str) -> bool:
        return self._reuse(digest)

    def size(self, digest: str) -> int:
        try:
            return int(self._fs.size(self.key_of(digest)))
        except FileNotFoundError:
            raise self._not_found(digest) from None

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
            # The object under ``key`` may not be this upload: another put of the same
            # content can have finished meanwhile (S3: the last PUT wins), and that blob may
            # already back an acknowledged version. Remove only bytes that do not match.
            removed = not self._holds(key, ref)
            if removed:
                with suppress(FileNotFoundError):
                    self._fs.rm(key)
            raise IntegrityError(
                f"{path} changed while it was stored as {ref.digest}; "
                + ("the upload was removed" if removed else
                   "the stored object holds the content that was hashed, so it was kept"),
                hint="do not modify files while storing them; put the file again")

    def _holds(self, key: str, ref: BlobRef) -> bool:
        """Whether the object under ``key`` has exactly ``ref``'s content (read back whole:
        only after a failed upload). A narrow window remains: another put's object written
        between this read and the removal that follows it is removed too."""
        h = hashlib.sha256()
        size = 0
        try:
            with self._fs.open(key, "rb", block_size=self._block_size) as f:
                while chunk := f.read(self._block_size):
                    h.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return False
        return size == ref.size and "sha256:" + h.hexdigest() == ref.digest

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
