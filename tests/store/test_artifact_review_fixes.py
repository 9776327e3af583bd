"""Artifact fixes from review 46: a folder holding one file downloads as the folder (locally
and through a server), long file names download, files linked from outside a folder are
logged, killed downloads leave nothing behind for long, names that are not UTF-8 are refused
before anything is stored, and an empty mount point is filled in place. (Remote retries:
tests/sdk/test_remote_artifact_retries.py.)"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import assay
import pytest
from assay.errors import IntegrityError, NotFoundError, UserInputError
from assay.store import manifests
from assay.store.blobs import LocalBlobStore
from assay.store.manifests import (
    Manifest,
    ManifestEntry,
    build_manifest,
    get_manifest,
    is_folder,
    manifest_digest,
    manifest_json,
    materialize,
    put_manifest,
    sidecar_name,
    sweep_partial_downloads,
)

pytestmark = pytest.mark.integration

HOUR = 3600.0


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _init(data_dir: Path, **kw):
    return assay.init(project="p", dir=data_dir, system_metrics_interval=None, capture=False,
                      **kw)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _hf_snapshot(base: Path) -> Path:
    """The Hugging Face hub cache layout: snapshots/<rev>/<file> -> ../../blobs/<hash>."""
    hub = base / "models--org--tiny"
    (hub / "blobs").mkdir(parents=True)
    snap = hub / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (hub / "blobs" / "h1").write_text('{"hidden": 8}')
    (hub / "blobs" / "h2").write_bytes(b"\0" * 128)
    (snap / "config.json").symlink_to("../../blobs/h1")
    (snap / "model.safetensors").symlink_to("../../blobs/h2")
    return snap


# -- 1. a folder holding one file is a folder -----------------------------------------------------
def test_a_folder_holding_one_file_downloads_as_the_folder_and_a_file_as_the_file(
        data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "shard0.pt").write_bytes(b"w" * 10)
    with _init(data_dir) as run:
        folder = run.log_artifact(ckpt, name="ckpt", type="model")
        single = run.log_artifact(ckpt / "shard0.pt", name="shard", type="model")
    got = assay.Api(data_dir).artifact("ckpt:latest").download()
    assert got.is_dir() and _files(got) == {"shard0.pt": b"w" * 10}
    assert folder.download(tmp_path / "mine") == tmp_path / "mine"
    got = assay.Api(data_dir).artifact("shard:latest").download()
    assert got.name == "shard0.pt" and got.read_bytes() == b"w" * 10
    # Same bytes, but a folder and a file are different contents.
    assert folder.digest != single.digest


def test_the_folder_flag_is_stored_only_where_it_matters_and_old_manifests_keep_their_meaning(
        tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    one = ManifestEntry("shard0.pt", _digest(b"w"), 1)
    two = [one, ManifestEntry("shard1.pt", _digest(b"v"), 1)]
    # Several files: stored exactly as before the flag existed (digests unchanged).
    assert manifest_json(Manifest(two, folder=True)) == manifest_json(two)
    assert manifest_digest(Manifest(two, folder=True)) == manifest_digest(list(two))
    assert is_folder(two) and get_manifest(store, put_manifest(store, two)).folder
    # A folder holding one file carries it; a manifest stored before it reads as the file.
    flagged = get_manifest(store, put_manifest(store, Manifest([one], folder=True)))
    assert flagged.folder and flagged == [one] and is_folder(flagged)
    old = get_manifest(store, put_manifest(store, [one]))
    assert not old.folder and not is_folder(old) and old == [one]
    assert b'"folder":true' in manifest_json(Manifest([one], folder=True))


def test_a_remote_folder_holding_one_file_and_a_linked_snapshot_download_as_folders(
        data_dir, tmp_path, monkeypatch):
    from assay.api.auth import TokenStore
    from loopback_server import ThreadServer

    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "0.2")
    token = TokenStore(data_dir).create("researcher", "researcher")[0]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "shard0.pt").write_bytes(b"w" * 10)
    snap = _hf_snapshot(tmp_path)
    srv = ThreadServer(data_dir).start()
    try:
        run = assay.init(project="p", dir=tmp_path / "laptop", server=srv.url, token=token,
                         system_metrics_interval=None, capture=False)
        run.log({"x": 1.0})
        v = run.log_artifact(ckpt, name="ckpt", type="model")
        hf = run.log_artifact(snap, name="tiny", type="model")
        run.finish()
        assert v.download(tmp_path / "dl") == tmp_path / "dl"
        assert _files(tmp_path / "dl") == {"shard0.pt": b"w" * 10}
        assert _files(hf.download(tmp_path / "hf")) == {"config.json": b'{"hidden": 8}',
                                                        "model.safetensors": b"\0" * 128}
        # The server's own registry recorded it as a folder too.
        assert assay.Api(data_dir).artifact("ckpt:v0").download().is_dir()
    finally:
        srv.stop()


# -- 2. long file names -------------------------------------------------------------------------
def test_long_but_legal_file_and_folder_names_download(data_dir, tmp_path):
    long_name = "x" * 246 + ".bin"  # 250 bytes; the limit is 255
    src = tmp_path / "data"
    src.mkdir()
    (src / long_name).write_bytes(b"payload")
    (src / "other.txt").write_text("o")
    with _init(data_dir) as run:
        v = run.log_artifact(src, name="ds", type="dataset")
    assert _files(v.download()) == {long_name: b"payload", "other.txt": b"o"}
    root = tmp_path / ("y" * 250)  # the folder's own name is long too: its record and lock
    assert _files(v.download(root)) == {long_name: b"payload", "other.txt": b"o"}
    assert v.download(root) == root  # reused through its record beside it
    assert all(len(os.fsencode(p.name)) <= 255 for p in tmp_path.iterdir())
    assert len(sidecar_name("y" * 250, ".partial-")) < 64
    assert sidecar_name("v0", ".assay.json") == ".v0.assay.json"  # short names as before


def test_get_to_path_writes_a_file_with_the_longest_legal_name(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    ref = store.put_bytes(b"payload")
    dest = tmp_path / "out" / ("z" * 255)
    assert store.get_to_path(ref.digest, dest, read_only=True) == ref
    assert dest.read_bytes() == b"payload" and os.listdir(dest.parent) == [dest.name]


# -- 3. files linked from outside the folder ---------------------------------------------------------
def test_a_folder_of_links_to_a_cache_beside_it_is_logged_with_the_linked_content(
        data_dir, tmp_path):
    snap = _hf_snapshot(tmp_path)
    with _init(data_dir) as run:
        v = run.log_artifact(snap, name="tiny", type="model")
    assert [(e.path, e.size) for e in v.files()] == [("config.json", 13),
                                                      ("model.safetensors", 128)]
    got = v.download()
    assert _files(got) == {"config.json": b'{"hidden": 8}', "model.safetensors": b"\0" * 128}
    assert not any(p.is_symlink() for p in got.iterdir())  # real, read-only files
    assert all(not p.stat().st_mode & stat.S_IWUSR for p in got.iterdir())


def test_links_that_loop_and_special_files_are_still_refused_with_the_path(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "f.txt").write_text("f")
    (tree / "a" / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(UserInputError, match=r"a/up links back to .*a folder above it"):
        build_manifest(tree)
    (tree / "a" / "up").unlink()
    os.mkfifo(tree / "a" / "pipe")
    with pytest.raises(UserInputError, match=r"a/pipe is not a regular file") as e:
        build_manifest(tree)
    assert "move it out" in e.value.hint


# -- 5. killed downloads leave nothing behind for long ------------------------------------------
_HOLD = """
import sys, time
from pathlib import Path
from assay.store.manifests import _locked_tmpdir
tmp, fd = _locked_tmpdir(Path(sys.argv[1]), ".v0.partial-")
(tmp / "half.bin").write_bytes(b"x" * 1000)
print(tmp, flush=True)
time.sleep(600)
"""


def test_a_killed_downloads_partial_tree_is_removed_by_the_next_download(data_dir, tmp_path):
    src = tmp_path / "ds"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 100)
    (src / "b.bin").write_bytes(b"b" * 100)
    with _init(data_dir) as run:
        v = run.log_artifact(src, name="ds")
    cache = data_dir / "artifacts" / "ds"
    cache.mkdir(parents=True)
    # A download that is still running holds its tree's lock: kept. One killed: removed.
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(cache)], stdout=subprocess.PIPE,
                             text=True)
    try:
        live = Path(child.stdout.readline().strip())
        v.download()
        assert live.is_dir() and (live / "half.bin").exists()
        other = cache / ".v1.partial-zzz"  # another version's: not this download's business
        other.mkdir()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        _remove_cached(cache / "v0")
        assert v.download() == cache / "v0"
        assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [".v1.partial-zzz", "v0"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def _remove_cached(path: Path) -> None:
    for d, _, _ in os.walk(path):
        os.chmod(d, 0o700)
    import shutil

    shutil.rmtree(path)


def test_gc_removes_partial_download_trees_older_than_its_grace_unless_held(data_dir,
                                                                               tmp_path):
    src = tmp_path / "ds"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    with _init(data_dir) as run:
        run.log_artifact(src, name="ds")
    cache = data_dir / "artifacts" / "ds"
    cache.mkdir(parents=True)
    old, young, held = (cache / f".v{i}.partial-abc" for i in (0, 1, 2))
    for d in (old, young, held):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f.bin").write_bytes(b"x" * 7)
        (d / "sub" / "f.bin").chmod(0o444)
    past = time.time() - 2 * HOUR
    for p in (old, old / "sub", old / "sub" / "f.bin", held, held / "sub",
              held / "sub" / "f.bin"):
        os.utime(p, (past, past))
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        api = assay.Api(data_dir)
        dry = api.gc(dry_run=True)
        assert (dry.partials, dry.partial_bytes) == (1, 7) and old.exists()
        rep = api.gc()
        assert (rep.partials, rep.partial_bytes) == (1, 7)
        assert not old.exists() and young.exists() and held.exists()
    finally:
        os.close(fd)
    assert sweep_partial_downloads(cache, cutoff=time.time() - HOUR) == (1, 7)  # held: free now


# -- 6. names that are not UTF-8 ---------------------------------------------------------------------
def test_a_name_that_is_not_utf8_is_refused_before_anything_is_stored_naming_it(
        data_dir, tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(3):
        (src / f"part{i}.bin").write_bytes(os.urandom(1 << 16))
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as fh:
        fh.write(b"x")
    with _init(data_dir) as run, pytest.raises(UserInputError) as e:
        run.log_artifact(src, name="corpus", type="dataset")
    assert "corpus/caf\\xe9.txt" in e.value.message and "not valid UTF-8" in e.value.message
    assert f"in the folder {src}" in e.value.message and "rename" in e.value.hint
    blobs = data_dir / "blobs" / "sha256"
    assert not blobs.exists() or not any(f for _, _, f in os.walk(blobs))


# -- 7. an empty mount point is filled in place ---------------------------------------------------
def test_an_empty_mount_point_is_filled_in_place_and_emptied_again_on_failure(
        tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    src = tmp_path / "ds"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("1\n")
    (src / "sub" / "b.csv").write_text("2\n")
    entries = build_manifest(src, store)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(manifests.os.path, "ismount",
                        lambda p: Path(p) == mnt or real_ismount(p))
    inode = mnt.stat().st_ino
    _refuse_rename_onto(mnt, os.rename, monkeypatch)
    assert materialize(entries, store, mnt) == mnt
    assert mnt.stat().st_ino == inode and _files(mnt) == {"a.csv": b"1\n", "sub/b.csv": b"2\n"}
    assert all(not p.stat().st_mode & stat.S_IWUSR for p in mnt.rglob("*") if p.is_file())
    assert sorted(os.listdir(mnt)) == ["a.csv", "sub"]  # no temporary files left

    # A blob that fails its digest: nothing stays in the mount point.
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    monkeypatch.setattr(manifests.os.path, "ismount",
                        lambda p: Path(p) in (mnt, mnt2) or real_ismount(p))
    bad = Manifest([*entries[:1], ManifestEntry("sub/c.csv", _digest(b"never"), 5)])
    with pytest.raises(NotFoundError, match="sub/c.csv"):
        materialize(bad, store, mnt2)
    assert list(mnt2.iterdir()) == []
    victim = store.path_of(entries[0].digest)
    victim.chmod(0o644)
    victim.write_bytes(b"rotten")
    with pytest.raises(IntegrityError, match="a.csv"):
        materialize(entries, store, mnt2)
    assert list(mnt2.iterdir()) == []


def _refuse_rename_onto(mnt: Path, real, monkeypatch) -> None:
    """os.rename onto ``mnt`` fails as onto a mount point (EBUSY)."""
    import errno

    def rename(a, b, *args, **kw):
        if Path(b) == mnt:
            raise OSError(errno.EBUSY, "Device or resource busy", str(b))
        return real(a, b, *args, **kw)

    monkeypatch.setattr(manifests.os, "rename", rename)


def test_a_download_into_a_mount_point_killed_part_way_is_completed_next_time(
        data_dir, tmp_path, monkeypatch):
    from assay.sdk.graph import _write_marker

    src = tmp_path / "ds"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("1\n")
    (src / "sub" / "b.csv").write_text("2\n")
    with _init(data_dir) as run:
        v = run.log_artifact(src, name="ds", type="dataset")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(manifests.os.path, "ismount", lambda p: Path(p) == mnt or real_ismount(p))
    _refuse_rename_onto(mnt, os.rename, monkeypatch)
    assert v.download(mnt) == mnt and _files(mnt) == {"a.csv": b"1\n", "sub/b.csv": b"2\n"}

    # What a kill part way leaves: the record says the fill began, one file landed, one
    # temporary file is half written.
    marker = tmp_path / ".mnt.assay.json"
    _write_marker(marker, v, mnt, [], filling=True)
    (mnt / "sub" / "b.csv").unlink()
    (mnt / "sub" / ".assay-abcd1234.part").write_bytes(b"2")
    assert v.download(mnt) == mnt and _files(mnt) == {"a.csv": b"1\n", "sub/b.csv": b"2\n"}
    assert sorted(os.listdir(mnt / "sub")) == ["b.csv"]

    # A file of the user's, put there since: never deleted, and the folder is refused.
    _write_marker(marker, v, mnt, [], filling=True)
    (mnt / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="does not hold ds:v0"):
        v.download(mnt)
    assert _files(mnt) == {"notes.txt": b"mine"}


def test_gc_also_sweeps_the_partial_downloads_of_servers_read_from(data_dir, tmp_path):
    """A server's versions download under <dir>/servers/<host_port>/artifacts: a killed
    download there is swept like one in <dir>/artifacts."""
    src = tmp_path / "ds"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    with _init(data_dir) as run:
        run.log_artifact(src, name="ds")
    stale = data_dir / "servers" / "127.0.0.1_8000" / "artifacts" / "model" / ".v0.partial-x"
    stale.mkdir(parents=True)
    (stale / "w.bin").write_bytes(b"y" * 5)
    past = time.time() - 2 * HOUR
    for p in (stale, stale / "w.bin"):
        os.utime(p, (past, past))
    api = assay.Api(data_dir)
    assert (api.gc(dry_run=True).partials, stale.exists()) == (1, True)
    rep = api.gc()
    assert (rep.partials, rep.partial_bytes) == (1, 5) and not stale.exists()
