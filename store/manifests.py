"""Manifests: an artifact version as the sorted list of :class:`ManifestEntry` (relative
POSIX path, digest, size) of a file or directory tree, over a :class:`~.blobs.BlobStore`.

:func:`build_manifest` walks a tree and stores its files' blobs, :func:`materialize` writes
one back (read-only, every digest verified, all or nothing), and :func:`manifest_digest`
names a manifest by the canonical hash of its entries; :func:`put_manifest` and
:func:`get_manifest` store and read the manifest itself as a blob.

A :class:`Manifest` also says whether a folder or a single file was logged
(:attr:`Manifest.folder`), which decides whether a download returns the folder or the file.
Only one manifest cannot tell by its entries alone: a folder holding one file, whose entry
carries ``"folder": true`` in the stored JSON. Every other manifest is stored exactly as
before (so its digest, the version's content identity, did not change), and one stored before
the key existed reads as a single file, as it always did.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AssayError, IntegrityError, NotFoundError, UserInputError
from .blobs import BlobStore, hash_file, parse_digest
from .canonical import canonical_json, canonical_loads

__all__ = [
    "Manifest",
    "ManifestEntry",
    "build_manifest",
    "get_manifest",
    "is_folder",
    "manifest_digest",
    "manifest_json",
    "materialize",
    "put_manifest",
    "sidecar_name",
    "sweep_partial_downloads",
]

#: A file or folder name longer than this (bytes) gets a hashed name for the files assay keeps
#: beside it (partial downloads, records, locks), so that theirs stays under NAME_MAX (255).
_SIDECAR_NAME_MAX = 128


@dataclass(frozen=True)
class ManifestEntry:
    """One file of an artifact version: relative POSIX ``path``, blob ``digest``, ``size``."""

    path: str
    digest: str
    size: int

    def __post_init__(self) -> None:
        _check_rel_path(self.path)
        parse_digest(self.digest)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise UserInputError(f"{self.path}: size {self.size!r} is not a byte count",
                                 hint="sizes are non-negative ints")

    def to_dict(self) -> dict[str, Any]:
        """The entry as a plain dict (for JSON and tables)."""
        return {"path": self.path, "digest": self.digest, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManifestEntry:
        """Rebuild an entry from :meth:`to_dict` output, validating it."""
        try:
            return cls(d["path"], d["digest"], d["size"])
        except (KeyError, TypeError) as exc:
            raise UserInputError(f"not a manifest entry: {d!r}",
                                 hint="entries have path, digest and size") from exc


def _check_rel_path(path: str) -> None:
    if not isinstance(path, str) or not path:
        raise UserInputError(f"manifest path {path!r} is empty or not a string",
                             hint="paths are relative POSIX paths such as 'data/train.csv'")
    parts = path.split("/")
    if (path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise UserInputError(
            f"manifest path {path!r} is not a plain relative path inside the artifact",
            hint="use '/'-separated names without '.', '..', empty parts, a leading '/' "
                 "or backslashes",
        )


class Manifest(list[ManifestEntry]):
    """A version's entries (a list), and whether a folder was logged.

    Args:
        entries: The files.
        folder: Whether a folder was logged. A manifest of several files, of nested paths or
            of none is a folder whatever this says; only a folder holding exactly one file
            needs it, and only there is it stored (see the module docstring).
    """

    def __init__(self, entries: Iterable[ManifestEntry] = (), *, folder: bool = False) -> None:
        super().__init__(entries)
        self.folder = bool(folder) or not _lone_file(self)


def _lone_file(entries: list[ManifestEntry]) -> bool:
    """Whether the entries could be a single file logged on its own."""
    return len(entries) == 1 and "/" not in entries[0].path


def is_folder(entries: Iterable[ManifestEntry]) -> bool:
    """Whether a download of these entries is a folder (see :class:`Manifest`)."""
    items = entries if isinstance(entries, list) else list(entries)
    return bool(getattr(entries, "folder", False)) or not _lone_file(items)


def _check_tree(entries: list[ManifestEntry]) -> None:
    files = {e.path for e in entries}
    if len(files) != len(entries):
        counts = Counter(e.path for e in entries)
        dup = min(p for p, n in counts.items() if n > 1)
        raise UserInputError(f"manifest lists {dup!r} more than once",
                             hint="each path appears once")
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise UserInputError(
                    f"manifest has both a file {'/'.join(parts[:i])!r} and {e.path!r} under it",
                    hint="a path cannot be a file and a folder at once")


def manifest_json(entries: Iterable[ManifestEntry]) -> bytes:
    """The canonical JSON of a manifest: its entries as dicts, sorted by path (a folder
    holding one file marks its entry ``"folder": true``)."""
    folder = bool(getattr(entries, "folder", False))
    ordered = sorted(entries, key=lambda e: e.path)
    _check_tree(ordered)
    items = [e.to_dict() for e in ordered]
    if folder and _lone_file(ordered):
        items[0]["folder"] = True
    return canonical_json(items)


def manifest_digest(entries: Iterable[ManifestEntry]) -> str:
    """Name a manifest: ``"sha256:<hex>"`` of :func:`manifest_json`.

    Equal trees give equal digests; this is the content identity of an artifact version, and
    also the blob digest under which :func:`put_manifest` stores the manifest itself.
    """
    return "sha256:" + hashlib.sha256(manifest_json(entries)).hexdigest()


def put_manifest(blob_store: BlobStore, entries: Iterable[ManifestEntry]) -> str:
    """Store a manifest as a blob of its own; return its digest (= :func:`manifest_digest`)."""
    return blob_store.put_bytes(manifest_json(entries)).digest


def get_manifest(blob_store: BlobStore, digest: str) -> Manifest:
    """Read back (and verify) a manifest stored by :func:`put_manifest`."""
    items = canonical_loads(blob_store.get_bytes(digest))
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise IntegrityError(f"blob {digest} is not a manifest",
                             hint="pass the digest put_manifest returned")
    return Manifest((ManifestEntry.from_dict(i) for i in items),
                    folder=any(i.get("folder") is True for i in items))


def build_manifest(path: str | os.PathLike[str], blob_store: BlobStore | None = None, *,
                   workers: int = 4) -> Manifest:
    """Walk a file or directory and list its files, storing each one if a store is given.

    A single file gives one entry named by its file name. In a directory, symbolic links are
    followed wherever they point: a linked file's entry has the link's path and the target's
    content (caches such as Hugging Face's ``snapshots/<rev>/model.safetensors ->
    ../../blobs/<hash>``, DVC and git-annex trees), and a linked folder's files appear under
    the link's path. Every name is checked before any file is stored, so a refused tree
    stores nothing.

    Args:
        path: The file or directory.
        blob_store: Where to put the files; ``None`` only hashes them.
        workers: Files hashed/uploaded at once (hashing and I/O release the GIL).

    Returns:
        Entries sorted by path, as a :class:`Manifest` that says whether a folder was logged.

    Raises:
        UserInputError: a missing path, a broken link, a link to a folder above it (an
            endless tree), a special file, or a file name that is not a portable relative
            path or not valid UTF-8.
    """
    top = Path(path)
    if not os.path.lexists(top):
        raise UserInputError(f"no file or directory at {top}", hint="check the path")
    real_root = top.resolve()
    if real_root.is_file():
        # The name the user gave, not a link's target (caches such as Hugging Face's link
        # model.safetensors to blobs/<hash>).
        files = [(top.name or real_root.name, real_root)]
    elif real_root.is_dir():
        files = sorted(_walk(real_root, "", (real_root,), top))
    else:
        raise UserInputError(f"{top} is neither a file nor a directory",
                             hint="artifacts are regular files and folders")
    for rel, _ in files:
        _check_name(rel, top, single=not real_root.is_dir())

    def one(item: tuple[str, Path]) -> ManifestEntry:
        ref = blob_store.put_file(item[1]) if blob_store else hash_file(item[1])
        return ManifestEntry(item[0], ref.digest, ref.size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return Manifest(pool.map(one, files), folder=real_root.is_dir())


def _shown(path: str | os.PathLike[str]) -> str:
    """A path for a message: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_name(rel: str, top: Path, *, single: bool) -> None:
    """Refuse a file name a manifest cannot hold, naming the file (before anything is stored)."""
    where = top if single else top / rel
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError(
            f"{_shown(where)}: the file name is not valid UTF-8, so it cannot be stored in "
            f"an artifact" + ("" if single else f" (in the folder {_shown(top)})")
            + "; nothing was stored",
            hint="rename it to UTF-8 (e.g. `convmv -f latin1 -t utf8 --notest -r FOLDER`, or "
                 "`mv` it), or log a copy with renamed files") from None
    try:
        _check_rel_path(rel)
    except UserInputError as exc:
        raise UserInputError(f"{_shown(where)}: {exc.message}", hint=exc.hint) from None


def _walk(real_dir: Path, rel: str, stack: tuple[Path, ...],
          top: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, real file) of every file under ``real_dir``; ``stack`` holds the real
    folders from the root down to here, so a link back to one of them is caught."""
    with os.scandir(real_dir) as it:
        children = sorted(it, key=lambda e: e.name)
    for child in children:
        child_rel = f"{rel}/{child.name}" if rel else child.name
        target = Path(child.path)
        if child.is_symlink():
            try:
                target = target.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise UserInputError(f"{_shown(top / child_rel)} is a broken or looping link",
                                     hint="fix or remove the link") from exc
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            if target in stack:
                raise UserInputError(
                    f"{_shown(top / child_rel)} links back to {_shown(target)}, a folder "
                    "above it",
                    hint="remove the link: it makes the tree endless")
            yield from _walk(target, child_rel, (*stack, target), top)
        elif stat.S_ISREG(mode):
            yield child_rel, target
        else:
            raise UserInputError(f"{_shown(top / child_rel)} is not a regular file",
                                 hint="sockets, pipes and devices cannot be artifacts; move "
                                      "it out of the folder")


def materialize(manifest: Iterable[ManifestEntry], blob_store: BlobStore,
                dest_dir: str | os.PathLike[str], *, workers: int = 4) -> Path:
    """Write a manifest's files under ``dest_dir``, read-only, verifying every digest.

    The tree is built in a temporary sibling folder (``.<name>.partial-XXXXXXXX``, locked
    while it is built) and renamed to ``dest_dir`` at the end, so ``dest_dir`` is either
    absent/empty (on failure) or complete. Partial trees of this ``dest_dir`` that a killed
    download left are removed first (never one a live download holds). An existing empty
    folder that cannot be replaced (a mount point, or one whose parent is not writable) is
    filled in place instead: each file still lands only once verified, and a failure removes
    what was written.

    Raises:
        UserInputError: ``dest_dir`` is not empty, or the manifest has duplicate or conflicting
            paths.
        IntegrityError: a blob does not match its digest or the manifest's size (the message
            names the file and the blob).
        NotFoundError: a blob is missing.
    """
    entries = sorted(manifest, key=lambda e: e.path)
    _check_tree(entries)
    dest = Path(dest_dir)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise UserInputError(f"{dest} already exists and is not an empty folder",
                             hint="materialize into a new or empty folder")
    if dest.is_dir() and (os.path.ismount(dest)
                          or not os.access(dest.parent, os.W_OK | os.X_OK)):
        try:
            _fill(entries, blob_store, dest, workers)
        except BaseException:
            _unfill(entries, dest)
            raise
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = sidecar_name(dest.name, ".partial-")
    sweep_partial_downloads(dest.parent, prefix)
    tmp, fd = _locked_tmpdir(dest.parent, prefix)
    try:
        _fill(entries, blob_store, tmp, workers)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        _remove_tree(tmp)
        raise
    finally:
        os.close(fd)
    return dest


def _fill(entries: list[ManifestEntry], blob_store: BlobStore, root: Path,
          workers: int) -> None:
    def one(e: ManifestEntry) -> None:
        try:
            ref = blob_store.get_to_path(e.digest, root / e.path, read_only=True)
        except (IntegrityError, NotFoundError) as exc:
            raise type(exc)(f"{e.path}: {exc.message}", hint=exc.hint) from exc
        if ref.size != e.size:
            raise IntegrityError(f"{e.path}: blob {e.digest} has {ref.size} bytes, the "
                                 f"manifest says {e.size}", hint="the manifest was altered")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, entries))


def _unfill(entries: list[ManifestEntry], root: Path) -> None:
    """Undo a failed in-place fill: the manifest's files, then the folders left empty (only
    what this download wrote; the folder was empty before)."""
    folders: set[Path] = set()
    for e in entries:
        with suppress(OSError):
            (root / e.path).unlink()
        folders.update((root / e.path).parents)
    for d in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if d != root and d.is_relative_to(root):
            with suppress(OSError):
                d.rmdir()


def sidecar_name(name: str, suffix: str) -> str:
    """The name of what assay keeps beside a file or folder ``name``: ``.<name><suffix>``,
    with ``name`` replaced by a fixed-length hash of it when it is long, so the result stays
    a legal file name (255 bytes) for any legal ``name``."""
    raw = os.fsencode(name)
    if len(raw) > _SIDECAR_NAME_MAX:
        name = "assay-" + hashlib.sha256(raw).hexdigest()[:32]
    return f".{name}{suffix}"


def _locked_tmpdir(parent: Path, prefix: str) -> tuple[Path, int]:
    """A new temporary folder, with an open descriptor that holds an exclusive ``flock`` on
    it until closed: a sweep takes only partial trees it can lock, whose download died."""
    for _ in range(10):
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # a sweep took it before it was locked: make another
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise AssayError(f"could not make a temporary folder in {parent} for the download",
                     hint="another process keeps removing it; check what cleans this folder")


def sweep_partial_downloads(parent: str | os.PathLike[str], prefix: str | None = None, *,
                            cutoff: float | None = None,
                            dry_run: bool = False) -> tuple[int, int]:
    """Remove the partial trees killed downloads left in ``parent``: (count, bytes).

    A tree is removed only when its ``flock`` can be taken (the download building it holds
    the lock until it ends, and the kernel drops it when that process dies), and, with
    ``cutoff`` (epoch seconds), when nothing in it was written since then.

    Args:
        parent: The folder the downloads were made in.
        prefix: The trees of one destination (``sidecar_name(name, ".partial-")``); ``None``:
            every ``.*.partial-*`` tree.
        cutoff: Keep trees with anything written at or after this time.
        dry_run: Count, remove nothing.
    """
    count = size = 0
    try:
        names = os.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for name in names:
        if not (name.startswith(prefix) if prefix is not None
                else name.startswith(".") and ".partial-" in name):
            continue
        path = Path(parent) / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live download
            nbytes, newest = _tree_stats(path)
            if cutoff is not None and newest >= cutoff:
                continue
            if not dry_run:
                _remove_tree(path)
            count, size = count + 1, size + nbytes
        finally:
            os.close(fd)
    return count, size


def _tree_stats(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` and the newest modification time in it (``path`` included)."""
    nbytes, newest = 0, path.stat().st_mtime
    for d, _, names in os.walk(path):
        with suppress(OSError):
            newest = max(newest, os.stat(d).st_mtime)
        for n in names:
            with suppress(OSError):
                st = os.stat(os.path.join(d, n), follow_symlinks=False)
                nbytes, newest = nbytes + st.st_size, max(newest, st.st_mtime)
    return nbytes, newest


def _remove_tree(path: Path) -> None:
    """Remove a (partial) download tree; its files are read-only, its folders may be too."""
    for d, _, _ in os.walk(path):
        with suppress(OSError):
            os.chmod(d, stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)
