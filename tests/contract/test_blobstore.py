"""The BlobStore contract, run against every implementation: local, encrypted over local, S3 (a real
Swift s3api server) and encrypted over S3."""

from __future__ import annotations

import hashlib
import logging
import os
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from carnet.blobs import BadRange, BlobRef, CorruptBlob, MissingBlob, sweep_orphans
from carnet.blobs.content import VERIFY_WHOLE
from carnet.crypto import KeyDestroyed, MasterKey
from carnet.crypto.stream import DEFAULT_SEGMENT_SIZE, HEADER_SIZE, TAG_SIZE
from carnet.errors import NotFound, TooLarge

from .conftest import Harness

SEG = DEFAULT_SEGMENT_SIZE
MiB = 1024 * 1024


def chunked(data: bytes, size: int = 10_000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def read(h: Harness, ref: BlobRef, start: int | None = None, end: int | None = None) -> bytes:
    return b"".join(h.store.open(ref, start, end))


@pytest.mark.parametrize("size", [0, 1, 100, SEG - 1, SEG, SEG + 1, 3 * SEG + 17, VERIFY_WHOLE + 1, 2 * MiB])
def test_round_trip_is_byte_identical(harness: Harness, size: int) -> None:
    data = os.urandom(size)
    ref = harness.store.put(chunked(data))
    assert ref.size == size
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.sha1 == hashlib.sha1(data).hexdigest()
    assert harness.store.exists(ref)
    assert read(harness, ref) == data


def test_chunking_does_not_matter_and_same_content_is_stored_once(harness: Harness) -> None:
    data = os.urandom(3 * SEG + 5)
    a = harness.store.put([data])
    b = harness.store.put(chunked(data, 7))
    c = harness.store.put(iter([b"", data[:1], b"", data[1:]]))
    assert a == b == c
    assert [s.key for s in harness.store.list()] == [a.key]
    assert read(harness, b) == data


def test_stored_key_is_the_sha256_unless_encrypted(harness: Harness) -> None:
    data = b"hello, carnet"
    ref = harness.store.put([data])
    if harness.encrypted:
        assert ref.key != ref.sha256
        assert data not in harness.raw(ref.key)
    else:
        assert ref.key == ref.sha256
        assert harness.raw(ref.key) == data


def test_60_mb_streams_without_being_held_in_memory(harness: Harness) -> None:
    store = harness.build(max_size=64 * MiB)
    size = 60 * MiB + 12_345
    chunk = MiB
    expected = hashlib.sha256()

    def produce() -> Iterator[bytes]:
        left = size
        while left:
            part = os.urandom(min(chunk, left))
            expected.update(part)
            left -= len(part)
            yield part

    tracemalloc.start()
    try:
        ref = store.put(produce())
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got = hashlib.sha256()
        total = 0
        for piece in store.open(ref):
            got.update(piece)
            total += len(piece)
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.size == size == total
    assert ref.sha256 == expected.hexdigest() == got.hexdigest()
    # A fraction of the content: a chunk or two on local disk, about two multipart parts on S3.
    # (measured: about 3 MiB on local disk and 11 MiB on S3 for writes, 3 MiB for reads)
    limit = 20 * MiB if harness.name.endswith("s3") else 6 * MiB
    assert peak_write < limit, f"write peak {peak_write / MiB:.1f} MiB"
    assert peak_read < 6 * MiB, f"read peak {peak_read / MiB:.1f} MiB"
    if harness.name.endswith("s3"):
        objects = harness.objects
        head = objects.client.head_object(Bucket=objects.bucket, Key=objects.name(ref.key))
        assert head["ETag"].strip('"').endswith("-8")  # 8 parts of 8 MiB: a multipart upload


@pytest.mark.parametrize(("start", "end"), [
    (0, 1), (5, 100), (SEG - 1, SEG + 1), (SEG, 2 * SEG), (SEG + 3, 3 * SEG - 3), (100, None),
    (None, 50), (199_999, 200_000), (150_000, 10**9), (0, 199_999), (1, 200_000),
])
def test_ranges(harness: Harness, start: int | None, end: int | None) -> None:
    data = os.urandom(200_000)
    ref = harness.store.put([data])
    assert read(harness, ref, start, end) == data[start:end]


def test_large_range_streams(harness: Harness) -> None:
    data = os.urandom(VERIFY_WHOLE + 3 * SEG)
    ref = harness.store.put([data])
    assert read(harness, ref, 10, VERIFY_WHOLE + 2 * SEG + 10) == data[10:VERIFY_WHOLE + 2 * SEG + 10]


@pytest.mark.parametrize(("start", "end"), [(1000, None), (1000, 2000), (-1, 10), (10, 10), (20, 10)])
def test_unsatisfiable_ranges(harness: Harness, start: int | None, end: int | None) -> None:
    ref = harness.store.put([b"x" * 1000])
    with pytest.raises(BadRange):
        harness.store.open(ref, start, end)


@pytest.mark.parametrize("size", [1000, VERIFY_WHOLE + 5 * SEG])
def test_tampering_is_detected_and_alerted(harness: Harness, size: int, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(size)
    ref = harness.store.put([data])
    stored = bytearray(harness.raw(ref.key))
    stored[len(stored) // 2] ^= 0x01
    harness.overwrite(ref.key, bytes(stored))
    received = bytearray()

    def consume() -> None:
        for piece in harness.store.open(ref):
            received.extend(piece)

    with caplog.at_level(logging.ERROR, logger="carnet.blobs"), pytest.raises(CorruptBlob):
        consume()
    assert len(received) < size  # the complete content is never handed out
    if harness.encrypted:
        assert len(received) <= size // 2  # nothing from the altered segment onwards
    alerts = [r for r in caplog.records if r.name == "carnet.blobs" and r.levelno == logging.ERROR]
    assert alerts
    assert all(ref.key in r.getMessage() for r in alerts)
    assert not any(data[:16].hex() in r.getMessage() for r in alerts)


def test_tampered_range_is_detected_when_encrypted(encrypted_harness: Harness) -> None:
    h = encrypted_harness
    data = os.urandom(4 * SEG)
    ref = h.store.put([data])
    stored = bytearray(h.raw(ref.key))
    stored[HEADER_SIZE + 2 * (SEG + TAG_SIZE) + 7] ^= 0x80  # inside segment 2
    h.overwrite(ref.key, bytes(stored))
    assert read(h, ref, 0, SEG) == data[:SEG]  # other segments still authenticate
    with pytest.raises(CorruptBlob):
        read(h, ref, 2 * SEG + 1, 2 * SEG + 2)


@pytest.mark.parametrize("cut", [1, TAG_SIZE, SEG + TAG_SIZE])
def test_truncation_is_detected(harness: Harness, cut: int) -> None:
    data = os.urandom(3 * SEG)
    ref = harness.store.put([data])
    harness.overwrite(ref.key, harness.raw(ref.key)[:-cut])
    with pytest.raises(CorruptBlob):
        read(harness, ref)


def test_missing_blob_is_an_integrity_error(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    ref = harness.store.put([b"soon gone"])
    harness.store.delete(ref.key)
    with caplog.at_level(logging.ERROR, logger="carnet.blobs"), pytest.raises(MissingBlob):
        harness.store.open(ref)
    assert any("missing" in r.getMessage() for r in caplog.records)


def test_size_limit(harness: Harness) -> None:
    store = harness.build(max_size=1000)
    assert store.put([b"x" * 1000]).size == 1000
    with pytest.raises(TooLarge):
        store.put(chunked(b"y" * 1001, 100))
    assert [s.key for s in store.list()] == [store.put([b"x" * 1000]).key]
    assert harness.staging_left() == 0


def test_failed_stream_stores_nothing(harness: Harness) -> None:
    def broken() -> Iterator[bytes]:
        yield b"a" * 100_000
        raise OSError("client went away")

    with pytest.raises(OSError, match="went away"):
        harness.store.put(broken())
    assert list(harness.store.list()) == []
    assert harness.staging_left() == 0


def test_delete(harness: Harness) -> None:
    ref = harness.store.put([b"to delete"])
    keep = harness.store.put([b"to keep"])
    harness.store.delete(ref.key)
    harness.store.delete(ref.key)  # idempotent
    assert not harness.store.exists(ref)
    assert harness.store.exists(keep)
    assert [s.key for s in harness.store.list()] == [keep.key]


def test_list(harness: Harness) -> None:
    refs = [harness.store.put([os.urandom(n)]) for n in (0, 10, SEG + 1)]
    listed = {s.key: s for s in harness.store.list()}
    assert set(listed) == {r.key for r in refs}
    now = datetime.now(UTC)
    for ref in refs:
        blob = listed[ref.key]
        assert blob.size == len(harness.raw(ref.key))
        assert blob.modified.tzinfo is not None
        assert now - timedelta(minutes=5) < blob.modified < now + timedelta(minutes=5)


def test_janitor_removes_old_orphans_only(harness: Harness) -> None:
    kept = harness.store.put([b"committed document"])
    orphan = harness.store.put([b"rolled back document"])
    harness.leave_stale_staging()
    asked: list[str] = []

    def referenced(keys: list[str]) -> set[str]:
        asked.extend(keys)
        return {k for k in keys if k == kept.key}

    fresh = sweep_orphans(harness.objects, referenced, grace=timedelta(hours=1))
    assert (fresh.deleted, fresh.recent, fresh.staging_removed, asked) == (0, 2, 0, [])  # young blobs: their transaction may be open
    later = datetime.now(UTC) + timedelta(hours=2)
    report = sweep_orphans(harness.objects, referenced, grace=timedelta(hours=1), now=later, batch_size=1)
    assert (report.examined, report.deleted, report.referenced) == (2, 1, 1)
    assert report.staging_removed == 1
    assert harness.store.exists(kept)
    assert not harness.store.exists(orphan)
    assert read(harness, kept) == b"committed document"
    assert harness.staging_left() == 0


# -- encryption-specific parts of the contract -------------------------------------------------------
def test_same_content_for_two_patients_is_unlinkable(encrypted_harness: Harness) -> None:
    h = encrypted_harness
    data = os.urandom(5000)
    a = h.encrypted_store.for_patient("patient-a").put([data])
    b = h.encrypted_store.for_patient("patient-b").put([data])
    assert a.sha256 == b.sha256
    assert a.key != b.key
    raw_a, raw_b = h.raw(a.key), h.raw(b.key)
    assert len(raw_a) == len(raw_b) and raw_a[HEADER_SIZE:] != raw_b[HEADER_SIZE:]
    with pytest.raises(NotFound):
        h.encrypted_store.for_patient("patient-b").open(a)
    assert not h.encrypted_store.for_patient("patient-b").exists(a)


def test_shredding_makes_content_unreadable(encrypted_harness: Harness) -> None:
    h = encrypted_harness
    ref = h.store.put([b"a patient's letter"])
    h.store.open(ref)  # the key is now in the store's cache too
    assert h.encrypted_store.shred("patient-1")
    with pytest.raises(KeyDestroyed):
        h.store.open(ref)
    assert not h.store.exists(ref)


def test_purge_shreds_then_removes_blobs(encrypted_harness: Harness) -> None:
    h = encrypted_harness
    refs = [h.store.put([os.urandom(100)]) for _ in range(3)]
    other = h.encrypted_store.for_patient("patient-2").put([b"someone else"])
    h.encrypted_store.purge("patient-1", [r.key for r in refs])
    assert [s.key for s in h.encrypted_store.list()] == [other.key]
    with pytest.raises(KeyDestroyed):
        h.store.open(refs[0])


def test_rotation_keeps_content_readable(encrypted_harness: Harness) -> None:
    h = encrypted_harness
    data = os.urandom(3 * SEG + 1)
    ref = h.store.put([data])
    before = h.raw(ref.key)
    assert h.keyring.rotate(MasterKey.generate(), h.data_keys) == 1
    assert h.raw(ref.key) == before  # content untouched
    assert read(h, ref) == data
