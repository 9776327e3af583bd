"""Blob stores (one contract suite for every implementation) and artifact manifests."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from assay.errors import IntegrityError, NotFoundError, UserInputError
from assay.store.blobs import (
    BlobRef,
    BlobStore,
    FsspecBlobStore,
    LocalBlobStore,
    hash_bytes,
    hash_file,
    open_blob_store,
    parse_digest,
)
from assay.store.manifests import (
    ManifestEntry,
    build_manifest,
    get_manifest,
    manifest_digest,
    materialize,
    put_manifest,
)

if TYPE_CHECKING:  # tests/ is not a package: conftest is only imported by pytest
    from conftest import BlobCase


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------- contract suite

def test_put_bytes_returns_sha256_digest_and_size(blob_store: BlobStore) -> None:
    ref = blob_store.put_bytes(b"hello")
    assert ref == BlobRef(_digest(b"hello"), 5)
    assert blob_store.exists(ref.digest)
    assert blob_store.get_bytes(ref.digest) == b"hello"


def test_put_file_streams_multi_chunk_content_back_identically(
        blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom((11 << 20) + 17)  # several 1 MiB chunks and three 5 MiB S3 parts
    src = _write(tmp_path / "big.bin", data)
    ref = blob_store.put_file(src)
    assert ref == BlobRef(_digest(data), len(data)) == hash_file(src)
    out = blob_store.get_to_path(ref.digest, tmp_path / "out" / "big.bin")
    assert out == ref
    assert (tmp_path / "out" / "big.bin").read_bytes() == data
    assert blob_store.get_bytes(ref.digest) == data
    with blob_store.open(ref.digest) as f:
        assert f.read(10) == data[:10]
        assert f.read() == data[10:]


def test_put_of_existing_content_is_stored_once(blob_store: BlobStore, tmp_path: Path) -> None:
    first = blob_store.put_bytes(b"same")
    second = blob_store.put_file(_write(tmp_path / "f", b"same"))
    third = blob_store.put_stream(io.BytesIO(b"same"))
    assert first == second == third
    assert blob_store.delete(first.digest)
    assert not blob_store.exists(first.digest)
    assert not blob_store.delete(first.digest)  # there was exactly one copy


def test_empty_blob_round_trips(blob_store: BlobStore, tmp_path: Path) -> None:
    ref = blob_store.put_bytes(b"")
    assert ref == BlobRef(_digest(b""), 0)
    assert blob_store.get_bytes(ref.digest) == b""
    blob_store.get_to_path(ref.digest, tmp_path / "empty")
    assert (tmp_path / "empty").read_bytes() == b""


def test_unknown_digest_is_absent_and_reads_raise_not_found_naming_it(
        blob_store: BlobStore, tmp_path: Path) -> None:
    missing = _digest(b"never stored")
    assert not blob_store.exists(missing)
    for read in (lambda: blob_store.get_bytes(missing),
                 lambda: blob_store.get_to_path(missing, tmp_path / "x"),
                 lambda: blob_store.open(missing)):
        with pytest.raises(NotFoundError, match=missing):
            read()
    assert not (tmp_path / "x").exists()


def test_reuse_and_size_of_stored_and_missing_blobs(blob_store: BlobStore) -> None:
    """What a server answers a client that asks which blobs it lacks, and checks at commit."""
    ref = blob_store.put_bytes(b"twelve bytes")
    assert blob_store.reuse(ref.digest) and blob_store.size(ref.digest) == 12
    missing = _digest(b"never stored")
    assert not blob_store.reuse(missing)
    with pytest.raises(NotFoundError, match=missing):
        blob_store.size(missing)


def test_local_reuse_marks_the_blob_just_written_for_gc(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    ref = store.put_bytes(b"old")
    os.utime(store.path_of(ref.digest), (1, 1))
    assert store.reuse(ref.digest)
    assert store.path_of(ref.digest).stat().st_mtime > 1e9


@pytest.mark.parametrize("bad", ["", "abc", "sha256:" + "A" * 64, "md5:" + "0" * 32,
                                 "sha256:" + "0" * 63, "sha256:../../etc/passwd"])
def test_malformed_digest_is_rejected_before_touching_storage(
        blob_store: BlobStore, bad: str) -> None:
    with pytest.raises(UserInputError, match="not a blob digest"):
        blob_store.exists(bad)
    with pytest.raises(UserInputError):
        blob_store.get_bytes(bad)


def test_get_to_path_replaces_destination_and_can_make_it_read_only(
        blob_store: BlobStore, tmp_path: Path) -> None:
    ref = blob_store.put_bytes(b"new content")
    dest = _write(tmp_path / "out" / "dest.txt", b"old")
    blob_store.get_to_path(ref.digest, dest, read_only=True)
    assert dest.read_bytes() == b"new content"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444
    assert [p.name for p in dest.parent.iterdir()] == ["dest.txt"]  # no temp files left


def test_flipped_byte_makes_get_to_path_raise_integrity_error_naming_blob(
        blob_case: BlobCase, tmp_path: Path) -> None:
    store = blob_case.store
    ref = store.put_bytes(b"precious weights")
    blob_case.corrupt(ref.digest)
    dest = _write(tmp_path / "out" / "model.bin", b"previous")
    with pytest.raises(IntegrityError) as info:
        store.get_to_path(ref.digest, dest)
    assert ref.digest in str(info.value)
    assert store.location(ref.digest) in str(info.value)
    assert dest.read_bytes() == b"previous"  # the unverified bytes never landed
    assert [p.name for p in dest.parent.iterdir()] == ["model.bin"]


def test_flipped_byte_is_caught_by_get_bytes_and_by_open_at_eof(blob_case: BlobCase) -> None:
    store = blob_case.store
    ref = store.put_bytes(b"x" * 1000)
    assert store.open(ref.digest).read() == b"x" * 1000
    blob_case.corrupt(ref.digest)
    with pytest.raises(IntegrityError, match=ref.digest):
        store.get_bytes(ref.digest)
    with store.open(ref.digest) as f, pytest.raises(IntegrityError, match=ref.digest):
        f.read()


def test_location_lies_under_the_store_uri(blob_store: BlobStore) -> None:
    ref = blob_store.put_bytes(b"where")
    hex_ = parse_digest(ref.digest)
    loc = blob_store.location(ref.digest)
    assert loc.endswith(f"sha256/{hex_[:2]}/{hex_[2:4]}/{hex_}")
    assert repr(blob_store).startswith(type(blob_store).__name__)


def test_put_file_rejects_a_missing_path_and_a_directory(
        blob_store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no file"):
        blob_store.put_file(tmp_path / "absent")
    with pytest.raises(UserInputError, match="directory"):
        blob_store.put_file(tmp_path)


def test_concurrent_puts_of_the_same_content_agree(blob_store: BlobStore) -> None:
    refs: list[BlobRef] = []
    threads = [threading.Thread(target=lambda: refs.append(blob_store.put_bytes(b"race")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(refs)) == 1
    assert blob_store.get_bytes(refs[0].digest) == b"race"


# ----------------------------------------------------------------------- implementations

def test_local_store_layout_is_sharded_and_read_only(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b")
    ref = store.put_bytes(b"abc")
    hex_ = parse_digest(ref.digest)
    path = tmp_path / "b" / "sha256" / hex_[:2] / hex_[2:4] / hex_
    assert store.path_of(ref.digest) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.uri == (tmp_path / "b").resolve().as_uri()
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_local_put_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk vanished")
            return b"z" * n

    store = LocalBlobStore(tmp_path / "b", durable=False)
    with pytest.raises(OSError, match="disk vanished"):
        store.put_stream(Broken())  # type: ignore[arg-type]
    assert list((tmp_path / "b" / "tmp").iterdir()) == []
    assert list((tmp_path / "b" / "sha256").iterdir()) == []


def test_fsspec_put_of_a_big_file_that_changes_meanwhile_is_removed(
        fsspec_case: BlobCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = fsspec_case.store
    assert isinstance(store, FsspecBlobStore)
    src = _write(tmp_path / "ckpt.bin", b"a" * (6 << 20))  # above the one-PUT size
    expected = hash_file(src)
    real_put_file = store.fs.put_file

    def put_while_training_writes(lpath: str, rpath: str, **kw: object) -> None:
        with open(lpath, "ab") as f:
            f.write(b"more")
        real_put_file(lpath, rpath, **kw)

    monkeypatch.setattr(store.fs, "put_file", put_while_training_writes)
    with pytest.raises(IntegrityError, match="changed while it was stored"):
        store.put_file(src)
    assert not store.exists(expected.digest)


def test_fsspec_failed_big_put_keeps_a_concurrent_put_of_the_same_content(
        fsspec_case: BlobCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two processes store the same checkpoint; one's copy changes under it mid-upload. The
    # other's upload (acknowledged, maybe already backing a version) lands last and must
    # survive the failed put's clean-up.
    store = fsspec_case.store
    assert isinstance(store, FsspecBlobStore)
    data = os.urandom((6 << 20) + 5)
    src = _write(tmp_path / "ckpt.bin", data)
    expected = hash_file(src)
    real_put_file = store.fs.put_file

    def changed_then_overtaken(lpath: str, rpath: str, **kw: object) -> None:
        with open(lpath, "ab") as f:
            f.write(b"more")
        real_put_file(lpath, rpath, **kw)
        store.fs.pipe_file(rpath, data)  # the other put's PUT completes last

    monkeypatch.setattr(store.fs, "put_file", changed_then_overtaken)
    with pytest.raises(IntegrityError, match="was kept"):
        store.put_file(src)
    monkeypatch.undo()
    assert store.get_bytes(expected.digest) == data


def test_fsspec_put_stream_bigger_than_a_block_is_spooled_and_stored(
        fsspec_case: BlobCase) -> None:
    data = os.urandom((5 << 20) + 3)
    ref = fsspec_case.store.put_stream(io.BytesIO(data))
    assert ref == hash_bytes(data)
    assert fsspec_case.store.get_bytes(ref.digest) == data


def test_open_blob_store_picks_the_implementation(tmp_path: Path) -> None:
    assert isinstance(open_blob_store(tmp_path / "a"), LocalBlobStore)
    local = open_blob_store((tmp_path / "b").as_uri(), durable=False)
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "b").resolve()
    assert isinstance(open_blob_store("memory://assay-open-test"), FsspecBlobStore)
    with pytest.raises(UserInputError, match="another host"):
        open_blob_store("file://otherhost/data")
    with pytest.raises(UserInputError, match="cannot open blob store"):
        open_blob_store("nosuchproto://bucket/x")


# ----------------------------------------------------------------------------- manifests

@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    _write(root / "b.txt", b"bee")
    _write(root / "a" / "z.bin", b"\x00" * 3000)
    _write(root / "a-c.txt", b"dash sorts before slash")
    _write(root / "a" / "deep" / "x.json", b"{}")
    return root


def test_build_manifest_lists_relative_posix_paths_sorted(tree: Path) -> None:
    entries = build_manifest(tree)
    assert [e.path for e in entries] == ["a-c.txt", "a/deep/x.json", "a/z.bin", "b.txt"]
    assert entries[2] == ManifestEntry("a/z.bin", _digest(b"\x00" * 3000), 3000)


def test_build_manifest_of_a_file_names_it_by_its_file_name(tree: Path) -> None:
    assert build_manifest(tree / "b.txt") == [ManifestEntry("b.txt", _digest(b"bee"), 3)]


def test_build_manifest_stores_every_file_when_given_a_store(tree: Path, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    entries = build_manifest(tree, store)
    assert entries == build_manifest(tree)
    assert all(store.exists(e.digest) for e in entries)


def test_build_manifest_follows_links_inside_the_tree(tree: Path) -> None:
    (tree / "link.txt").symlink_to("b.txt")
    (tree / "alias").symlink_to("a/deep", target_is_directory=True)
    paths = {e.path: e.digest for e in build_manifest(tree)}
    assert paths["link.txt"] == paths["b.txt"]
    assert paths["alias/x.json"] == paths["a/deep/x.json"]


@pytest.mark.parametrize("make", ["absolute", "dotdot"])
def test_build_manifest_follows_file_links_that_point_outside_the_tree(
        tree: Path, tmp_path: Path, make: str) -> None:
    # Hugging Face, DVC and git-annex trees link their files to a cache beside the folder: the
    # entry has the link's path and the target's content (as W&B and MLflow log them).
    secret = _write(tmp_path / "outside.txt", b"linked content")
    (tree / "a" / "leak").symlink_to(secret if make == "absolute" else "../../outside.txt")
    entries = {e.path: e for e in build_manifest(tree)}
    assert entries["a/leak"] == ManifestEntry("a/leak", _digest(b"linked content"), 14)


def test_build_manifest_refuses_a_folder_link_to_a_folder_above_it(
        tree: Path, tmp_path: Path) -> None:
    (tree / "a" / "leak").symlink_to(tmp_path, target_is_directory=True)  # holds the tree
    with pytest.raises(UserInputError, match=r"a/leak/tree links back to .*, a folder above it"):
        build_manifest(tree)


def test_build_manifest_rejects_broken_links_and_cycles(tree: Path) -> None:
    (tree / "broken").symlink_to("nowhere")
    with pytest.raises(UserInputError, match="broken"):
        build_manifest(tree)
    (tree / "broken").unlink()
    (tree / "a" / "deep" / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(UserInputError, match="links back"):
        build_manifest(tree)


def test_build_manifest_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no file or directory"):
        build_manifest(tmp_path / "absent")


@pytest.mark.parametrize("bad", ["../x", "a/../../b", "/etc/passwd", "a//b", "", ".", "a/./b",
                                 "a\\b", "a/", ".."])
def test_manifest_entry_rejects_paths_that_are_not_plain_relative(bad: str) -> None:
    with pytest.raises(UserInputError, match="manifest path"):
        ManifestEntry(bad, _digest(b""), 0)


def test_manifest_entry_rejects_bad_digest_and_size() -> None:
    with pytest.raises(UserInputError):
        ManifestEntry("a", "sha256:nothex", 1)
    with pytest.raises(UserInputError, match="byte count"):
        ManifestEntry("a", _digest(b""), -1)
    entry = ManifestEntry("a/b", _digest(b"q"), 1)
    assert ManifestEntry.from_dict(entry.to_dict()) == entry


def test_manifest_digest_is_order_independent_and_content_sensitive(tree: Path) -> None:
    entries = build_manifest(tree)
    assert manifest_digest(entries) == manifest_digest(reversed(entries))
    changed = [*entries[:-1], ManifestEntry(entries[-1].path, _digest(b"other"), 5)]
    assert manifest_digest(changed) != manifest_digest(entries)


def test_manifest_is_stored_as_a_blob_named_by_its_manifest_digest(
        blob_store: BlobStore, tree: Path) -> None:
    entries = build_manifest(tree, blob_store)
    digest = put_manifest(blob_store, reversed(entries))
    assert digest == manifest_digest(entries)
    assert get_manifest(blob_store, digest) == entries
    not_a_manifest = blob_store.put_bytes(b'{"a":1}').digest
    with pytest.raises(IntegrityError, match="not a manifest"):
        get_manifest(blob_store, not_a_manifest)


def test_manifest_with_duplicate_or_file_under_file_paths_is_rejected() -> None:
    d = _digest(b"")
    with pytest.raises(UserInputError, match="more than once"):
        manifest_digest([ManifestEntry("a", d, 0), ManifestEntry("a", d, 0)])
    with pytest.raises(UserInputError, match="file and a folder"):
        manifest_digest([ManifestEntry("a", d, 0), ManifestEntry("a/b", d, 0)])


def test_materialize_writes_the_tree_read_only_and_identical(
        blob_store: BlobStore, tree: Path, tmp_path: Path) -> None:
    entries = build_manifest(tree, blob_store)
    out = materialize(entries, blob_store, tmp_path / "out" / "v1")
    assert build_manifest(out) == entries
    for e in entries:
        assert stat.S_IMODE((out / e.path).stat().st_mode) == 0o444
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v1"]


def test_materialize_of_a_corrupted_blob_names_file_and_leaves_no_folder(
        blob_case: BlobCase, tree: Path, tmp_path: Path) -> None:
    entries = build_manifest(tree, blob_case.store)
    blob_case.corrupt(entries[1].digest)
    with pytest.raises(IntegrityError, match=f"a/deep/x.json: blob {entries[1].digest}"):
        materialize(entries, blob_case.store, tmp_path / "out" / "v1", workers=1)
    assert list((tmp_path / "out").iterdir()) == []


def test_materialize_rejects_a_non_empty_destination_but_fills_an_empty_one(
        tree: Path, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    entries = build_manifest(tree, store)
    with pytest.raises(UserInputError, match="not an empty folder"):
        materialize(entries, store, tree)
    (tmp_path / "empty").mkdir()
    assert build_manifest(materialize(entries, store, tmp_path / "empty")) == entries


def test_materialize_detects_a_missing_blob_and_a_size_that_lies(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    ref = store.put_bytes(b"four")
    with pytest.raises(NotFoundError, match=r"gone\.txt"):
        materialize([ManifestEntry("gone.txt", _digest(b"x"), 1)], store, tmp_path / "o1")
    with pytest.raises(IntegrityError, match="manifest says 5"):
        materialize([ManifestEntry("f", ref.digest, 5)], store, tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
