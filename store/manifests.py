"""Manifests: an artifact version as the sorted list of :class:`ManifestEntry` (relative
POSIX path, digest, size) of a file or directory tree, over a :class:`~.blobs.BlobStore`.

:func:`build_manifest` walks a tree and stores its files' blobs, :func:`materialize` writes
one back (read-only, every digest verified, all or nothing), and :func:`manifest_digest`
names a manifest by the canonical hash of its entries; :func:`put_manifest` and
:func:`get_manifest` store and read the manifest itself as a blob.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFoundError, UserInputError
from .blobs import BlobStore, hash_file, parse_digest
from .canonical import canonical_json, canonical_loads

__all__ = [
    "ManifestEntry",
    "build_manifest",
    "get_manifest",
    "manifest_digest",
    "manifest_json",
    "materialize",
    "put_manifest",
]


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
    """The canonical JSON of a manifest: its entries as dicts, sorted by path."""
    ordered = sorted(entries, key=lambda e: e.path)
    _check_tree(ordered)
    return canonical_json([e.to_dict() for e in ordered])


def manifest_digest(entries: Iterable[ManifestEntry]) -> str:
    """Name a manifest: ``"sha256:<hex>"`` of :func:`manifest_json`.

    Equal trees give equal digests; this is the content identity of an artifact version, and
    also the blob digest under which :func:`put_manifest` stores the manifest itself.
    """
    return "sha256:" + hashlib.sha256(manifest_json(entries)).hexdigest()


def put_manifest(blob_store: BlobStore, entries: Iterable[ManifestEntry]) -> str:
    """Store a manifest as a blob of its own; return its digest (= :func:`manifest_digest`)."""
    return blob_store.put_bytes(manifest_json(entries)).digest


def get_manifest(blob_store: BlobStore, digest: str) -> list[ManifestEntry]:
    """Read back (and verify) a manifest stored by :func:`put_manifest`."""
    items = canonical_loads(blob_store.get_bytes(digest))
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise IntegrityError(f"blob {digest} is not a manifest",
                             hint="pass the digest put_manifest returned")
    return [ManifestEntry.from_dict(i) for i in items]


def build_manifest(path: str | os.PathLike[str], blob_store: BlobStore | None = None, *,
                   workers: int = 4) -> list[ManifestEntry]:
    """Walk a file or directory and list its files, storing each one if a store is given.

    A single file gives one entry named by its file name. In a directory, symbolic links are
    followed when they point inside it (their content appears under the link's path), and
    rejected when they point outside it, are broken, or form a cycle.

    Args:
        path: The file or directory.
        blob_store: Where to put the files; ``None`` only hashes them.
        workers: Files hashed/uploaded at once (hashing and I/O release the GIL).

    Returns:
        Entries sorted by path.

    Raises:
        UserInputError: a missing path, an escaping or broken link, a cycle, a special file,
            or a file name that is not a portable relative path.
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
        files = sorted(_walk(real_root, real_root, "", (real_root,), top))
    else:
        raise UserInputError(f"{top} is neither a file nor a directory",
                             hint="artifacts are regular files and folders")
    for rel, _ in files:
        _check_rel_path(rel)

    def one(item: tuple[str, Path]) -> ManifestEntry:
        ref = blob_store.put_file(item[1]) if blob_store else hash_file(item[1])
        return ManifestEntry(item[0], ref.digest, ref.size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, files))


def _walk(real_root: Path, real_dir: Path, rel: str, stack: tuple[Path, ...],
          top: Path) -> Iterator[tuple[str, Path]]:
    with os.scandir(real_dir) as it:
        children = sorted(it, key=lambda e: e.name)
    for child in children:
        child_rel = f"{rel}/{child.name}" if rel else child.name
        target = Path(child.path)
        if child.is_symlink():
            try:
                target = target.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise UserInputError(f"{top / child_rel} is a broken or looping link",
                                     hint="fix or remove the link") from exc
            if not target.is_relative_to(real_root):
                raise UserInputError(
                    f"{top / child_rel} links to {target}, outside {top}",
                    hint="copy the target into the directory, or remove the link")
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            if target in stack:
                raise UserInputError(f"{top / child_rel} links back to a folder above it",
                                     hint="remove the link: it makes the tree infinite")
            yield from _walk(real_root, target, child_rel, (*stack, target), top)
        elif stat.S_ISREG(mode):
            yield child_rel, target
        else:
            raise UserInputError(f"{top / child_rel} is not a regular file",
                                 hint="sockets, pipes and devices cannot be artifacts")


def materialize(manifest: Iterable[ManifestEntry], blob_store: BlobStore,
                dest_dir: str | os.PathLike[str], *, workers: int = 4) -> Path:
    """Write a manifest's files under ``dest_dir``, read-only, verifying every digest.

    The tree is built in a temporary sibling folder and renamed to ``dest_dir`` at the end, so
    ``dest_dir`` is either absent/empty (on failure) or complete.

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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))

    def one(e: ManifestEntry) -> None:
        try:
            ref = blob_store.get_to_path(e.digest, tmp / e.path, read_only=True)
        except (IntegrityError, NotFoundError) as exc:
            raise type(exc)(f"{e.path}: {exc.message}", hint=exc.hint) from exc
        if ref.size != e.size:
            raise IntegrityError(f"{e.path}: blob {e.digest} has {ref.size} bytes, the "
                                 f"manifest says {e.size}", hint="the manifest was altered")

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(one, entries))
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
