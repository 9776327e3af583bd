"""Garbage collection on object stores (FsspecBlobStore): in memory and on S3 (moto, loopback).

An object cannot be touched in place, so a put that reuses a blob writes a ``touch/`` marker
and a sweep removes a blob through a ``trash/`` copy; these tests drive the interleavings of a
sweep and a concurrent put that reuses the blob. S3 object times have one-second resolution,
hence the sleeps of two seconds and the grace of 1.5 s where a test lowers the store's
``min_gc_grace`` (60 s) to look at times; the sweep's own re-check compares marker bodies, so
the interleaving tests use a cutoff an hour in the future (every time looks old, as under the
worst clock skew) and still must not lose a blob.
"""

from __future__ import annotations

import time
import uuid

import pytest
from assay.errors import ConflictError, UserInputError
from assay.store.artifacts import ArtifactRegistry
from assay.store.audit import AuditTrail
from assay.store.blobs import FsspecBlobStore
from assay.store.gc import _exclusive
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from assay.store.manifests import get_manifest

OLD = 2.1  # seconds to wait until what was written counts as older than GRACE
GRACE = 1.5


def _files(reg, spec):
    av = reg._resolve_version(*spec.split(":"))
    return {e.digest for e in get_manifest(reg.blobs, av.manifest_blob)} | {av.manifest_blob}


def _leftovers(store, kind):
    return store._listing(kind)


@pytest.mark.integration
def test_gc_on_an_object_store_sweeps_unreferenced_blobs_and_keeps_reused_ones(fsspec_case, tmp_path):
    store = fsspec_case.store
    root = tmp_path / "data"
    root.mkdir()
    reg = ArtifactRegistry(LanceStore(root), store, IngestLock(root), AuditTrail(root))
    with pytest.raises(UserInputError, match="too short for FsspecBlobStore") as e:
        reg.gc(grace=GRACE)
    assert "at least 60 s" in e.value.hint
    store.min_gc_grace = 0.0  # this test looks at the times themselves
    d = tmp_path / "m"
    d.mkdir()
    (d / "shared.bin").write_text("S" * 100)
    (d / "w.bin").write_text("zero")
    reg.log(d, "model", "model", project="p", run_id="run0")
    (d / "w.bin").write_text("one")
    reg.log(d, "model", "model", project="p", run_id="run1")
    v0, v1 = _files(reg, "model:v0"), _files(reg, "model:v1")
    reg.delete("model:v0", actor="a")
    only_v0 = v0 - v1
    assert len(only_v0) == 2
    young = reg.gc(grace=3600)
    assert young.swept == 0 and young.young == 2 and young.referenced == len(v1)
    time.sleep(OLD)
    zero = store.put_bytes(b"zero").digest  # an upload in flight reuses v0's w.bin
    assert zero in only_v0 and zero.split(":")[1] in _leftovers(store, "touch")
    dry = reg.gc(grace=GRACE, dry_run=True)
    assert set(dry.digests) == only_v0 - {zero} and dry.young == 1
    assert all(store.exists(x) for x in only_v0)
    rep = reg.gc(grace=GRACE, actor="user:ann")
    assert set(rep.digests) == only_v0 - {zero} and rep.referenced == len(v1)
    assert store.exists(zero) and all(store.exists(x) for x in v1)
    assert not any(store.exists(x) for x in only_v0 - {zero})
    assert not _leftovers(store, "trash")
    out = reg.download(reg.get("model:v1"), tmp_path / "out")
    assert (out / "w.bin").read_text() == "one" and (out / "shared.bin").read_text() == "S" * 100
    time.sleep(OLD)
    assert reg.gc(grace=GRACE).digests == (zero,)  # once the reuse is old too
    assert not store.exists(zero) and zero.split(":")[1] not in _leftovers(store, "touch")


def _interleave(monkeypatch, store, digest, action, *, before):
    """Run ``action`` once, just before (or after) the sweep removes ``digest``'s object."""
    real_rm = store.fs.rm
    key = store.key_of(digest)
    done = []

    def rm(path, *args, **kwargs):
        if path == key and not done:
            done.append(True)
            if before:
                action()
            out = real_rm(path, *args, **kwargs)
            if not before:
                action()
            return out
        return real_rm(path, *args, **kwargs)

    monkeypatch.setattr(store.fs, "rm", rm)
    return done


@pytest.mark.integration
@pytest.mark.parametrize("before", [True, False], ids=["put-before-removal", "put-after-removal"])
def test_a_put_reusing_a_blob_during_its_sweep_never_loses_it(fsspec_case, monkeypatch, before):
    store = fsspec_case.store
    ref = store.put_bytes(b"abc")
    store.put_bytes(b"abc")  # an earlier reuse: a marker exists before the sweep reads it
    cutoff = time.time() + 3600  # every time looks old: only the marker bodies can tell
    # Before: the put sees the blob, writes a new touch marker, sees it again and uploads
    # nothing; the sweep then removes it, so it must see the new marker and put it back.
    # After: the put finds no blob and uploads it again.
    done = _interleave(monkeypatch, store, ref.digest, lambda: store.put_bytes(b"abc"),
                       before=before)
    swept = store.sweep(ref.digest, cutoff)
    assert done and store.get_bytes(ref.digest) == b"abc"
    assert swept is not before  # put back: not swept; uploaded again: the old copy went
    assert not _leftovers(store, "trash")


@pytest.mark.integration
def test_a_reused_blob_is_not_swept_and_an_old_one_is(fsspec_case):
    store = fsspec_case.store
    ref = store.put_bytes(b"abc")
    time.sleep(OLD)
    cutoff = time.time() - GRACE
    listed = {b.digest: b.mtime for b in store.iter_blobs()}
    assert listed[ref.digest] < cutoff
    store.put_bytes(b"abc")  # reused after the listing, before the sweep
    assert {b.digest: b.mtime for b in store.iter_blobs()}[ref.digest] >= cutoff
    assert store.sweep(ref.digest, cutoff) is False and store.exists(ref.digest)
    time.sleep(OLD)
    assert store.sweep(ref.digest, time.time() - GRACE) is True and not store.exists(ref.digest)
    assert store.sweep(ref.digest, time.time()) is False  # already gone
    assert store.put_bytes(b"abc").digest == ref.digest and store.get_bytes(ref.digest) == b"abc"


@pytest.mark.integration
def test_gc_puts_back_a_blob_a_crashed_object_store_sweep_left_in_trash(fsspec_case):
    store = fsspec_case.store
    kept, dup = store.put_bytes(b"kept"), store.put_bytes(b"dup")
    for ref in (kept, dup):  # crashed between the copy to trash/ and the end of the sweep
        trash = store._aux_key("trash", ref.digest)
        store._makedirs(trash)
        store.fs.copy(store.key_of(ref.digest), trash)
    store.fs.rm(store.key_of(kept.digest))
    assert store.recover_sweeps() == 1
    assert store.get_bytes(kept.digest) == b"kept" and store.get_bytes(dup.digest) == b"dup"
    assert not _leftovers(store, "trash")


@pytest.mark.integration
def test_gc_runs_one_at_a_time_per_data_directory(fsspec_case, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    reg = ArtifactRegistry(LanceStore(root), fsspec_case.store, IngestLock(root), AuditTrail(root))
    with _exclusive(root):
        with pytest.raises(ConflictError, match="another garbage collection") as e:
            reg.gc()
        assert "dry run" in e.value.hint
        assert reg.gc(dry_run=True).swept == 0  # a dry run needs no lock
    assert reg.gc().swept == 0


@pytest.mark.integration
def test_a_read_puts_back_a_blob_a_crashed_sweep_left_in_trash(fsspec_case, tmp_path):
    store = fsspec_case.store
    ref = store.put_bytes(b"in use")
    store._move(store.key_of(ref.digest), store._aux_key("trash", ref.digest))  # crashed
    assert not store.exists(ref.digest)
    assert store.get_bytes(ref.digest) == b"in use" and store.exists(ref.digest)
    store._move(store.key_of(ref.digest), store._aux_key("trash", ref.digest))
    assert store.get_to_path(ref.digest, tmp_path / "out").digest == ref.digest
    assert not _leftovers(store, "trash")
    with pytest.raises(Exception, match="not in"):
        store.get_bytes("sha256:" + "0" * 64)


@pytest.mark.integration
def test_sweep_reads_markers_fresh_on_backends_with_a_listing_cache(s3_server):
    """gcsfs, adlfs and the like answer info() from the listing cache: the gc process must not
    trust the listing it made, or it misses a marker another process wrote after it."""
    opts = {**s3_server.storage_options(), "skip_instance_cache": True}
    url = f"s3://{s3_server.bucket}/cache-{uuid.uuid4().hex[:8]}"
    uploader, gc = FsspecBlobStore(url, **opts), FsspecBlobStore(url, **opts)
    gc._is_s3 = False  # the code path of every other fsspec backend: info(), not HEAD
    ref = uploader.put_bytes(b"weights")
    uploader.put_bytes(b"weights")  # an old reuse: a marker is in the listing
    time.sleep(OLD)
    cutoff = time.time() - GRACE
    assert {b.digest: b.mtime for b in gc.iter_blobs()}[ref.digest] < cutoff  # fills the cache
    uploader.put_bytes(b"weights")  # another process reuses it now
    assert gc.sweep(ref.digest, cutoff) is False and uploader.exists(ref.digest)


def test_a_failed_gc_still_audits_what_it_removed(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    store = FsspecBlobStore(f"memory://audit-{uuid.uuid4().hex[:8]}")
    store.min_gc_grace = 0.0
    reg = ArtifactRegistry(LanceStore(root), store, IngestLock(root), AuditTrail(root))
    for data in (b"a", b"b", b"c"):
        store.put_bytes(data)
    calls = []
    real = store.sweep

    def flaky(digest, cutoff):
        calls.append(digest)
        if len(calls) == 2:
            raise OSError("connection reset")
        return real(digest, cutoff)

    monkeypatch.setattr(store, "sweep", flaky)
    time.sleep(0.05)
    with pytest.raises(OSError, match="connection reset"):
        reg.gc(grace=0.0, actor="user:ann")
    entry = next(e for e in reg.audit.entries(limit=10)[1] if e["action"] == "blobs.gc")
    assert entry["actor"] == "user:ann" and entry["details"]["swept"] == 1
    assert "connection reset" in entry["details"]["error"]
    assert "failed after removing 1 blobs" in entry["reason"]
