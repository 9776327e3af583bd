"""Canonical JSON, row digests, Ed25519 keys, sealed hash chains and the audit log."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import stat
import struct
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from assay.errors import IntegrityError, UserInputError
from assay.store.canonical import (
    canonical_json,
    canonical_loads,
    rows_digest,
    sha256_digest,
    sha256_hex,
)
from assay.store.signing import (
    GENESIS_HASH,
    AuditEntry,
    AuditLog,
    ChainedRecord,
    KeyPair,
    ProblemKind,
    RecordChain,
    key_id,
    load_public_key,
    seal,
    verify,
    verify_audit_log,
    verify_chain,
)

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------- canonical

def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "c": {"z": None, "y": True}}) == \
        b'{"a":[1,2],"b":1,"c":{"y":true,"z":null}}'
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})


def test_canonical_json_writes_utf8_not_escapes() -> None:
    assert canonical_json({"name": "réseau 🚀"}) == '{"name":"réseau 🚀"}'.encode()


def test_canonical_json_floats_are_shortest_round_trip_and_keep_their_kind() -> None:
    assert canonical_json([0.1, 1e16, -0.0, 2.0, 2, True, 1]) == \
        b'[0.1,1e+16,-0.0,2.0,2,true,1]'


def test_canonical_json_encodes_non_finite_floats_as_reserved_strings() -> None:
    data = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf}
    encoded = canonical_json(data)
    assert encoded == b'{"inf":"Infinity","nan":"NaN","ninf":"-Infinity"}'
    back = canonical_loads(encoded)
    assert math.isnan(back["nan"]) and back["inf"] == math.inf and back["ninf"] == -math.inf
    assert canonical_json(back) == encoded


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "\x00NaN", "\x00"])
def test_strings_that_read_like_non_finite_floats_stay_strings(text: str) -> None:
    # A config may hold the string "NaN" (a padding token): it must not hash like the float.
    encoded = canonical_json({"x": text})
    back = canonical_loads(encoded)
    assert back == {"x": text} and isinstance(back["x"], str)
    assert canonical_json(back) == encoded
    assert canonical_json({"x": float(text)} if text in ("NaN", "Infinity", "-Infinity")
                          else {"x": 0}) != encoded


def test_canonical_json_converts_numpy_scalars() -> None:
    assert canonical_json([np.int64(3), np.float32(0.5), np.bool_(True), np.float64("nan")]) == \
        b'[3,0.5,true,"NaN"]'


@pytest.mark.parametrize("value, what", [({1, 2}, "set"), (b"x", "bytes"),
                                         (datetime(2025, 1, 1), "datetime"),
                                         (object(), "object")])
def test_canonical_json_rejects_non_json_types_naming_where(value: object, what: str) -> None:
    with pytest.raises(UserInputError, match=rf"value\['cfg'\]\[0\] is a {what}"):
        canonical_json({"cfg": [value]})


def test_canonical_json_rejects_non_string_keys_and_cycles() -> None:
    with pytest.raises(UserInputError, match="keys must be str"):
        canonical_json({1: "a"})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(UserInputError, match="cycle"):
        canonical_json(loop)
    shared = [1]
    assert canonical_json([shared, shared]) == b"[[1],[1]]"  # sharing is not a cycle


def test_canonical_json_rejects_lone_surrogates() -> None:
    with pytest.raises(UserInputError, match="surrogate"):
        canonical_json("\ud800")


def test_sha256_helpers_hash_the_canonical_bytes() -> None:
    assert sha256_hex({"a": 1}) == (
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862")
    assert sha256_digest({"a": 1}) == "sha256:" + sha256_hex({"a": 1})


# --------------------------------------------------------------------------- row digests

def _rows(n: int = 500, seed: int = 0) -> list[tuple[str, int, float]]:
    rng = random.Random(seed)
    return [(k, s, rng.random()) for k in ("loss", "acc", "val/loss") for s in range(n // 3)]


def test_rows_digest_is_independent_of_row_order_and_input_type() -> None:
    rows = _rows()
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    keys, steps, values = zip(*shuffled, strict=True)
    table = pa.table({"key": keys, "step": steps, "value": values, "extra": steps})
    frame = pl.DataFrame({"key": keys, "step": steps, "value": values})
    expected = rows_digest(rows)
    assert expected.startswith("sha256:")
    assert rows_digest(shuffled) == rows_digest(table) == rows_digest(frame) == expected
    assert rows_digest(iter(rows)) == expected
    chunked = pa.concat_tables([table.slice(0, 100), table.slice(100)])
    assert rows_digest(chunked) == expected


@pytest.mark.parametrize("index, change", [(0, "key"), (7, "step"), (42, "value"),
                                           (42, "drop")])
def test_rows_digest_changes_when_any_row_changes(index: int, change: str) -> None:
    rows = _rows()
    k, s, v = rows[index]
    changed = rows[:]
    if change == "drop":
        del changed[index]
    else:
        changed[index] = {"key": (k + "x", s, v), "step": (k, s + 10_000, v),
                          "value": (k, s, math.nextafter(v, 2.0))}[change]
    assert rows_digest(changed) != rows_digest(rows)


def test_rows_digest_keeps_key_boundaries() -> None:
    assert rows_digest([("ab", 0, 1.0), ("c", 0, 1.0)]) != \
        rows_digest([("a", 0, 1.0), ("bc", 0, 1.0)])


def test_rows_digest_treats_every_nan_alike_but_signed_zeros_apart() -> None:
    other_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF800000000BEEF))[0]
    assert rows_digest([("a", 0, math.nan)]) == rows_digest([("a", 0, other_nan)])
    assert rows_digest([("a", 0, 0.0)]) != rows_digest([("a", 0, -0.0)])


def test_rows_digest_widens_float32_and_int_values_exactly() -> None:
    f32 = pl.DataFrame({"key": ["a", "a"], "step": [0, 1], "value": [0.5, 1.25]},
                       schema={"key": pl.String, "step": pl.Int32, "value": pl.Float32})
    assert rows_digest(f32) == rows_digest([("a", 0, 0.5), ("a", 1, 1.25)])
    assert rows_digest([("a", 0, 3)]) == rows_digest([("a", 0, 3.0)])


def test_rows_digest_orders_duplicates_deterministically() -> None:
    rows = [("a", 1, 2.0), ("a", 1, 1.0), ("a", 1, -0.0), ("a", 1, 0.0)]
    assert rows_digest(rows) == rows_digest(rows[::-1])


def test_rows_digest_of_no_rows_is_defined() -> None:
    empty = pl.DataFrame(schema={"key": pl.String, "step": pl.Int64, "value": pl.Float64})
    assert rows_digest([]) == rows_digest(empty)


@pytest.mark.parametrize("rows, match", [
    (pl.DataFrame({"key": ["a"], "value": [1.0]}), "lack the column"),
    (pl.DataFrame({"key": ["a"], "step": [0.5], "value": [1.0]}), "not an integer"),
    (pl.DataFrame({"key": [1], "step": [0], "value": [1.0]}), "not a string"),
    (pl.DataFrame({"key": ["a"], "step": [0], "value": ["x"]}), "not numeric"),
    (pl.DataFrame({"key": ["a"], "step": [0], "value": [None]},
                  schema={"key": pl.String, "step": pl.Int64, "value": pl.Float64}), "null"),
    ([("a", 0)], "not a \\(key, step, value\\) triple"),
    ([("a", "zero", 1.0)], "could not read the rows"),
    ({"key": ["a"]}, "not a dict"),
])
def test_rows_digest_rejects_malformed_rows(rows: object, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        rows_digest(rows)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ keys

def test_load_or_create_makes_a_private_0600_key_and_reloads_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = KeyPair.load_or_create(data_dir)
    key_file = data_dir / "signing_key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    assert (data_dir / "signing_key.pub.pem").read_text() == first.export_public_key()
    again = KeyPair.load_or_create(data_dir)
    assert again.key_id == first.key_id
    assert sorted(p.name for p in data_dir.iterdir()) == ["signing_key.pem",
                                                          "signing_key.pub.pem"]


def test_a_replaced_public_key_file_is_rewritten_from_the_private_key(tmp_path: Path) -> None:
    pair = KeyPair.load_or_create(tmp_path)
    (tmp_path / "signing_key.pub.pem").write_text(KeyPair.generate().export_public_key())
    KeyPair.load_or_create(tmp_path)
    assert (tmp_path / "signing_key.pub.pem").read_text() == pair.export_public_key()


def test_a_lost_private_key_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    pair = KeyPair.load_or_create(tmp_path)
    (tmp_path / "signing_key.pem").unlink()
    with pytest.raises(IntegrityError, match="missing") as e:
        KeyPair.load_or_create(tmp_path)
    assert "restore signing_key.pem" in e.value.hint
    assert (tmp_path / "signing_key.pub.pem").read_text() == pair.export_public_key()
    assert not (tmp_path / "signing_key.pem").exists()  # nothing created behind our back


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(KeyPair.load_or_create(tmp_path).key_id))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1


def test_load_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    KeyPair.load_or_create(tmp_path)
    (tmp_path / "signing_key.pem").chmod(0o644)
    with pytest.raises(UserInputError, match="chmod 600"):
        KeyPair.load_or_create(tmp_path)


def test_load_explains_a_damaged_key_file(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "signing_key.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"garbage")
    os.close(fd)
    with pytest.raises(UserInputError, match="not a readable unencrypted PEM"):
        KeyPair.load_or_create(tmp_path)


def test_sign_verifies_with_the_exported_public_key_only() -> None:
    pair, other = KeyPair.generate(), KeyPair.generate()
    sig = pair.sign(b"message")
    pem = pair.export_public_key()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert verify(pem, sig, b"message")
    assert verify(pem.encode(), sig, b"message") and verify(pair, sig, b"message")
    assert not verify(pem, sig, b"messagf")
    assert not verify(other.public_key, sig, b"message")
    assert key_id(pem) == pair.key_id and pair.key_id.startswith("ed25519:")


def test_load_public_key_rejects_what_is_not_an_ed25519_pem() -> None:
    with pytest.raises(UserInputError, match="not a PEM public key"):
        load_public_key("hello")
    with pytest.raises(UserInputError, match="cannot use a int"):
        load_public_key(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- chains

@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


def _chain(key: KeyPair, n: int = 5) -> list[ChainedRecord]:
    records: list[ChainedRecord] = []
    for i in range(n):
        prev = records[-1] if records else None
        records.append(seal({"config": {"lr": 0.1 * (i + 1)}, "summary": {"loss": 1.0 / (i + 1)},
                             "rows_digest": rows_digest([("loss", i, 1.0)])},
                            prev, key, kind="run", subject_id=f"run-{i}",
                            created_at=T0 + timedelta(seconds=i)))
    return records


def _kinds(problems: list) -> list[tuple[int, ProblemKind]]:  # type: ignore[type-arg]
    return [(p.seq, p.problem) for p in problems]


def test_seal_links_records_and_an_intact_chain_verifies(key: KeyPair) -> None:
    records = _chain(key)
    assert records[0].prev_hash == GENESIS_HASH and records[0].seq == 0
    assert all(b.prev_hash == a.hash and b.seq == a.seq + 1
               for a, b in itertools.pairwise(records))
    assert records[2].payload["config"] == {"lr": 0.30000000000000004}
    assert records[0].created_at == "2025-01-31T12:00:00.000000Z"
    assert verify_chain(records, key.export_public_key()) == []


def test_changed_payload_value_names_that_record(key: KeyPair) -> None:
    records = _chain(key)
    payload = records[2].payload | {"summary": {"loss": 0.01}}
    records[2] = dataclasses.replace(records[2],
                                     payload_json=canonical_json(payload).decode())
    problems = verify_chain(records, key)
    assert _kinds(problems) == [(2, ProblemKind.CONTENT_CHANGED)]
    assert "record #2 (run run-2): content changed" in str(problems[0])


def test_rehashed_forgery_fails_its_signature_and_the_next_link(key: KeyPair) -> None:
    records = _chain(key)
    forged = dataclasses.replace(records[1], subject_id="run-evil")
    forged = dataclasses.replace(forged, hash=forged.compute_hash())
    records[1] = forged
    assert _kinds(verify_chain(records, key)) == [(1, ProblemKind.BAD_SIGNATURE),
                                                  (2, ProblemKind.BROKEN_LINK)]


def test_record_deleted_from_the_middle_is_a_broken_link_and_a_gap(key: KeyPair) -> None:
    records = _chain(key)
    del records[2]
    problems = verify_chain(records, key)
    assert _kinds(problems) == [(3, ProblemKind.BROKEN_LINK), (3, ProblemKind.SEQ_GAP)]
    assert "record(s) #2 are missing" in problems[1].message


def test_reordered_records_are_named(key: KeyPair) -> None:
    records = _chain(key)
    records[1], records[2] = records[2], records[1]
    assert _kinds(verify_chain(records, key)) == [
        (2, ProblemKind.BROKEN_LINK), (2, ProblemKind.SEQ_GAP),
        (1, ProblemKind.BROKEN_LINK), (1, ProblemKind.OUT_OF_ORDER),
        (3, ProblemKind.BROKEN_LINK)]  # and #4, after #3, is fine


def test_wrong_key_fails_every_signature_and_says_which_key_signed(key: KeyPair) -> None:
    records = _chain(key, 3)
    problems = verify_chain(records, KeyPair.generate().export_public_key())
    assert _kinds(problems) == [(i, ProblemKind.BAD_SIGNATURE) for i in range(3)]
    assert f"sealed by key {key.key_id}" in problems[0].message


def test_truncated_tail_is_caught_only_against_a_known_head(key: KeyPair) -> None:
    records = _chain(key)
    assert verify_chain(records[:3], key) == []
    assert _kinds(verify_chain(records[:3], key, expected_head=records[-1].hash)) == [
        (2, ProblemKind.TRUNCATED)]


def test_a_tail_verifies_against_its_trusted_start(key: KeyPair) -> None:
    records = _chain(key)
    assert verify_chain(records[3:], key, start=records[2]) == []
    assert _kinds(verify_chain(records[3:], key)) == [(3, ProblemKind.BROKEN_LINK),
                                                      (3, ProblemKind.SEQ_GAP)]


def test_garbled_signature_is_a_bad_signature_not_a_crash(key: KeyPair) -> None:
    records = _chain(key, 2)
    records[1] = dataclasses.replace(records[1], signature="zz")
    assert _kinds(verify_chain(records, key)) == [(1, ProblemKind.BAD_SIGNATURE)]


def test_hand_edited_row_with_wrong_types_is_reported_not_crashing(key: KeyPair) -> None:
    records = _chain(key, 3)
    records[1] = dataclasses.replace(records[1], seq="1", payload_json=None)  # type: ignore
    assert _kinds(verify_chain(records, key)) == [("1", ProblemKind.CONTENT_CHANGED)]


def test_rows_round_trip_and_keep_non_finite_payloads_verifiable(key: KeyPair) -> None:
    rec = seal({"best": math.nan, "worst": -math.inf}, None, key, kind="run", subject_id="r")
    back = ChainedRecord.from_row({**rec.to_row(), "project": "p"})
    assert back == rec
    assert math.isnan(back.payload["best"])
    assert verify_chain([back], key) == []
    with pytest.raises(UserInputError, match="lacks"):
        ChainedRecord.from_row({"seq": 0})


def test_seal_rejects_bad_input(key: KeyPair) -> None:
    with pytest.raises(UserInputError, match="not a mapping"):
        seal([1], None, key, kind="run", subject_id="r")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="kind must be"):
        seal({}, None, key, kind="", subject_id="r")
    with pytest.raises(UserInputError, match="timezone-aware"):
        seal({}, None, key, kind="run", subject_id="r", created_at=datetime(2025, 1, 1))
    with pytest.raises(UserInputError, match="is a set"):
        seal({"tags": {"a"}}, None, key, kind="run", subject_id="r")


def test_record_chain_moves_its_head_only_after_the_sink_succeeds(key: KeyPair) -> None:
    stored: list[ChainedRecord] = []
    fail = {"next": False}

    def sink(rec: ChainedRecord) -> None:
        if fail["next"]:
            fail["next"] = False
            raise OSError("table unavailable")
        stored.append(rec)

    chain = RecordChain(key, sink=sink, clock=lambda: T0)
    chain.append("run", "r0", {"i": 0})
    fail["next"] = True
    with pytest.raises(OSError):
        chain.append("run", "r1", {"i": 1})
    chain.append("run", "r1", {"i": 1})
    assert chain.head == stored[-1]
    assert [r.seq for r in stored] == [0, 1]
    assert verify_chain(stored, key) == []


def test_record_chain_is_safe_across_threads(key: KeyPair) -> None:
    stored: list[ChainedRecord] = []
    chain = RecordChain(key, sink=stored.append)
    threads = [threading.Thread(target=lambda i=i: chain.append("run", f"r{i}", {"i": i}))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.seq for r in stored] == list(range(8))
    assert verify_chain(stored, key) == []


# ------------------------------------------------------------------------------- audit log

def test_audit_log_records_who_what_why_and_verifies(key: KeyPair) -> None:
    stored: list[ChainedRecord] = []
    log = AuditLog(key, sink=stored.append, clock=lambda: T0)
    log.append("alice", "stop", "run-7", "diverged after warmup", details={"step": 120})
    log.append("agent:sweep-1", "launch", "run-8", "highest expected improvement")
    entry = AuditEntry.from_record(stored[0])
    assert entry == AuditEntry("alice", "stop", "run-7", "diverged after warmup",
                               "2025-01-31T12:00:00.000000Z", {"step": 120})
    assert log.head == stored[-1]
    assert verify_audit_log(stored, key) == []
    resumed = AuditLog(key, head=stored[-1], sink=stored.append)
    resumed.append("bob", "resume", "sweep-1", "")
    assert verify_audit_log(stored, key, expected_head=stored[-1].hash) == []


def test_audit_log_tampering_and_foreign_records_are_named(key: KeyPair) -> None:
    stored: list[ChainedRecord] = []
    log = AuditLog(key, sink=stored.append)
    for i in range(3):
        log.append("alice", "stop", f"run-{i}", "why not")
    stored[1] = dataclasses.replace(
        stored[1], payload_json=stored[1].payload_json.replace("alice", "mallory"))
    assert _kinds(verify_audit_log(stored, key)) == [(1, ProblemKind.CONTENT_CHANGED)]
    foreign = [seal({"x": 1}, None, key, kind="run", subject_id="r")]
    problems = verify_audit_log(foreign, key)
    assert _kinds(problems) == [(0, ProblemKind.CONTENT_CHANGED)]
    assert "not an audit entry" in problems[0].message


def test_audit_log_rejects_missing_fields(key: KeyPair) -> None:
    log = AuditLog(key)
    with pytest.raises(UserInputError, match="actor"):
        log.append("", "stop", "run-1", "x")
    with pytest.raises(IntegrityError):
        AuditEntry.from_record(seal({"x": 1}, None, key, kind="audit", subject_id="r"))
