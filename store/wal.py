"""The write-ahead log: an append-only file of framed JSON records, one segment per attach.

Frame: ``b"AW"`` magic, 4-byte little-endian payload length, 4-byte CRC32 of the payload,
payload (UTF-8 JSON, NaN and infinities written as JSON's common extensions). A reader stops
at the first frame that is short or fails its CRC: that is a torn last write from a killed
process, never an error. A write that fails in a live process (a full disk) is cut back to
the last complete frame at once, so a torn frame is only ever the last thing in a segment.
The owner of a segment holds an exclusive ``flock`` on it for as long as it writes, so
recovery can tell a live segment from an orphan: if the lock can be taken, nobody owns the
segment any more.

Records (JSON objects; ``seq`` is per run and strictly increasing across attaches,
``attach << 40 | n``; ``time`` is epoch seconds):

- ``{"k": "run", "seq", "time", "run_id", "project", "name", "group", "tags", "notes",
  "config", "host", "pid", "attach"}``: first record of every segment (init or resume); a
  resume that restarts at step ``s`` adds ``"resume_from_step": s`` (see
  :mod:`assay.store.rewind`).
- ``{"k": "metrics", "seq", "chunks": [{"keys": [k1, k2], "step": [s...], "time": [t...],
  "vals": [[v of k1 per step], [v of k2 per step]]}]}``: points, columnar.
- ``{"k": "config", "seq", "time", "update": {...}}`` and ``{"k": "summary", ... "update"}``.
- ``{"k": "env", "seq", "time", "env": {...}, "git": {...}}``.
- ``{"k": "status", "seq", "time", "status": "completed|failed|stopped|crashed", "error"}``.

Segments live at ``<data dir>/wal/<run_id>/<attach:06d>.wal``; the ingest daemon moves them
into the store and deletes them once closed (see :mod:`assay.store.ingestd`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FRAME_HEADER", "FRAME_MAGIC", "SEQ_BITS", "FrameError", "WalRecord", "WalWriter",
           "fsync_dirs", "iter_file_frames", "iter_frames", "list_segments", "read_wal",
           "segment_path", "try_lock_segment"]

SEQ_BITS = 40
"""A record's ``seq`` is ``attach << SEQ_BITS | n``: monotonic across a run's resumes."""

_MAGIC = b"AW"
_HEADER = struct.Struct("<2sII")
FRAME_MAGIC, FRAME_HEADER = _MAGIC, _HEADER
"""A frame: magic ``AW``, payload length and CRC-32 (little-endian), then the JSON payload."""


@dataclass(frozen=True)
class WalRecord:
    """One decoded record and the file offset just past it."""

    data: dict[str, Any]
    end: int


HOLD_FILE = "remote.hold"
"""Kept in ``wal/<run_id>/`` by a server while a remote run may still send records (its
segments can be closed and ingested while the client is quiet)."""


def attach_is_live(wal_dir: Path, run_id: str, attach: int) -> bool:
    """Whether ``wal/<run_id>/`` shows a writer of ``attach`` (or a later one) may still be
    at work: its segment is there (a live or crashed, not yet adopted, process keeps it
    until it is ingested to its end), or a server holds the run open."""
    d = wal_dir / run_id
    if (d / HOLD_FILE).exists():
        return True
    for seg in d.glob("*.wal"):
        try:
            if int(seg.stem) >= attach:
                return True
        except ValueError:
            continue
    return False


def segment_path(wal_dir: Path, run_id: str, attach: int) -> Path:
    return wal_dir / run_id / f"{attach:06d}.wal"


def list_segments(wal_dir: Path) -> list[Path]:
    """All WAL segments under ``wal_dir``, oldest attach first within each run."""
    if not wal_dir.exists():
        return []
    return sorted(wal_dir.glob("*/*.wal"))


def encode(data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def fsync_dirs(path: Path) -> None:
    """Make a new segment's name durable: fsync its folder and the folder above (both may
    be new), so an acknowledged first record survives a power loss, not just a crash."""
    for d in (path.parent, path.parent.parent):
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:  # some filesystems refuse fsync on folders
            pass
        finally:
            os.close(fd)


class WalWriter:
    """Appends records to one segment, holding its exclusive lock until :meth:`close`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise
        self.bytes_written = os.fstat(self._fd).st_size  # the end of the last complete write
        self._torn = False  # a failed write may have left a partial frame past bytes_written
        if self.bytes_written == 0:
            fsync_dirs(path)

    def append(self, records: list[dict[str, Any]], *, sync: bool = True) -> None:
        """Encode records and write them as :meth:`write_frames` does."""
        if records:
            self.write_frames([encode(r) for r in records], sync=sync)

    def write_frames(self, frames: Sequence[bytes], *, sync: bool = True) -> None:
        """Write frames made by :func:`encode`, then fsync (the durability point). All or
        nothing.

        On any error (a full disk, a short write, a failed fsync) the file is cut back to its
        length before the call and the error is raised: a torn frame left in the middle of
        the segment would hide every later record from the readers, which stop at the first
        torn frame. Writing the same frames again after an error puts the same bytes at the
        same offsets, so a reader that saw some of them before the cut reads nothing twice.
        Frames are joined ``_WRITE_PIECE`` bytes at a time: a copy holds the GIL.
        """
        if self._torn:
            self._cut_back()  # an earlier cut failed: nothing may follow its torn frame
        written = 0
        try:
            for piece in _pieces(frames):
                view = memoryview(piece)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                written += len(piece)
            if sync and written:
                os.fsync(self._fd)
        except BaseException:
            self._torn = True
            # A failed cut is retried before the next write; the write's own error says more.
            with contextlib.suppress(OSError):
                self._cut_back()
            raise
        self.bytes_written += written

    def _cut_back(self) -> None:
        """Truncate the segment to the end of its last complete write (the next fsync makes
        the new length durable; until then a torn tail is what a reader already tolerates)."""
        os.ftruncate(self._fd, self.bytes_written)
        self._torn = False

    def close(self) -> None:
        """Fsync and release the segment (its lock, then its file), even if the fsync fails."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


_WRITE_PIECE = 1 << 20


def _pieces(frames: Sequence[bytes]) -> Iterator[bytes]:
    """The frames joined into pieces of about ``_WRITE_PIECE`` bytes (a frame is never cut)."""
    piece: list[bytes] = []
    size = 0
    for f in frames:
        piece.append(f)
        size += len(f)
        if size >= _WRITE_PIECE:
            yield b"".join(piece)
            piece, size = [], 0
    if piece:
        yield b"".join(piece)


class FrameError(ValueError):
    """A frame that is truncated or corrupt, at byte ``pos`` of the buffer."""

    def __init__(self, pos: int, why: str) -> None:
        super().__init__(f"frame at byte {pos} {why}")
        self.pos, self.why = pos, why


def iter_frames(data: bytes, *, strict: bool = False) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, payload)`` of each complete, intact frame of ``data``, in order.

    The one decoder of the frame format (magic, length, CRC-32, payload), shared by the WAL
    reader, the remote sender and the server. At a torn or corrupt frame it stops (a torn
    tail is normal in a WAL), or with ``strict`` raises :class:`FrameError` (a request body
    must be whole).
    """
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < _HEADER.size:
            if strict:
                raise FrameError(pos, "has a truncated header")
            return
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        why = ("has a bad magic" if magic != _MAGIC else
               f"is truncated ({length} bytes announced)" if end > n else
               "fails its CRC" if zlib.crc32(data[start:end]) != crc else "")
        if why:
            if strict:
                raise FrameError(pos, why)
            return
        yield pos, end, data[start:end]
        pos = end


READ_CHUNK = 8 << 20
"""Bytes a file reader takes at a time: a segment of many GB is never read whole."""


def iter_file_frames(
    path: Path, offset: int = 0, *, chunk: int = READ_CHUNK, max_bytes: int | None = None,
) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, payload)``, as file offsets, of each intact frame of a file from
    ``offset`` on, read ``chunk`` bytes at a time (a frame larger than that is read whole).

    Stops at a torn or corrupt frame, as :func:`iter_frames` does, and after the frame that
    takes it to ``max_bytes`` past ``offset`` (so a caller can work through a large file in
    bounded pieces).
    """
    with open(path, "rb") as f:
        f.seek(offset)
        buf, base, want = b"", offset, chunk
        while True:
            more = f.read(want)
            buf += more
            pos = 0
            for start, end, payload in iter_frames(buf):
                yield base + start, base + end, payload
                pos = end
                if max_bytes is not None and base + end - offset >= max_bytes:
                    return
            buf, base = buf[pos:], base + pos
            need = _missing(buf)
            if len(more) < want or need == 0:
                return  # the end of the file, or a corrupt frame
            want = max(chunk, need)


def _missing(buf: bytes) -> int:
    """Bytes still needed to complete the frame ``buf`` starts with (where
    :func:`iter_frames` stopped); 0 when it is corrupt and more bytes cannot help."""
    if len(buf) < _HEADER.size:
        return _HEADER.size - len(buf)
    magic, length, _ = _HEADER.unpack_from(buf, 0)
    return max(0, _HEADER.size + length - len(buf)) if magic == _MAGIC else 0


def read_wal(path: Path, offset: int = 0, *, max_bytes: int | None = None) -> Iterator[WalRecord]:
    """Yield the complete, intact records of a segment from ``offset`` on (read in pieces,
    never the whole file at once; at most about ``max_bytes`` of records when given).

    Stops silently at a torn or corrupt tail (the caller can compare the last ``end`` with the
    file size to report how many bytes were skipped).
    """
    for _, end, payload in iter_file_frames(path, offset, max_bytes=max_bytes):
        try:
            rec = json.loads(payload)
        except ValueError:
            return
        yield WalRecord(rec, end)


def try_lock_segment(path: Path) -> int | None:
    """Take a segment's lock without waiting: a file descriptor if it is an orphan, else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
