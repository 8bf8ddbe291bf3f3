"""What the contract cannot see: the local layout, file modes, key checks, helpers, the URL factory."""

from __future__ import annotations

import base64
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from carnet.blobs import BadRange, LocalBlobStore, S3BlobStore, open_blob_store
from carnet.blobs.content import Digest, resolve_range
from carnet.errors import Invalid, TooLarge


def test_layout_is_sharded_and_private(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    ref = store.put([b"document"])
    path = tmp_path / "blobs" / ref.key[:2] / ref.key[2:4] / ref.key
    assert path.read_bytes() == b"document"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, ""])
def test_keys_that_are_not_hex_digests_never_reach_a_path(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.objects.path(key)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.delete(key)


def test_list_ignores_foreign_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put([b"x"])
    (tmp_path / "README").write_text("not a blob")
    (tmp_path / ref.key[:2] / ref.key[2:4] / "notes.txt").write_text("nor this")
    assert [b.key for b in store.list()] == [ref.key]


def test_a_reader_keeps_the_version_it_opened(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put([b"v1"])
    reader = store.objects.open(ref.key)
    store.objects.write([b"other bytes"], lambda: ref.key)
    assert b"".join(reader.read(0, reader.size)) == b"v1"
    reader.close()
    reader.close()  # idempotent


def test_resolve_range() -> None:
    assert resolve_range(10, None, None) is None
    assert resolve_range(10, 0, 10) is None
    assert resolve_range(10, 0, 99) is None
    assert resolve_range(0, None, None) is None
    assert resolve_range(10, 2, None) == (2, 10)
    assert resolve_range(10, None, 3) == (0, 3)
    for start, end in [(10, None), (-1, 5), (5, 5), (6, 5)]:
        with pytest.raises(BadRange):
            resolve_range(10, start, end)


def test_digest_counts_hashes_and_limits() -> None:
    digest = Digest(max_size=5)
    assert b"".join(digest.feed([b"ab", b"", b"cde"])) == b"abcde"
    ref = digest.ref("k")
    assert (ref.size, ref.sha256) == (5, hashlib.sha256(b"abcde").hexdigest())
    assert ref.sha1_base64 == base64.b64encode(hashlib.sha1(b"abcde").digest()).decode()
    with pytest.raises(TooLarge):
        list(Digest(max_size=5).feed([b"abc", b"def"]))


def test_the_limit_stops_reading_the_stream(tmp_path: Path) -> None:
    pulled = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield b"z" * 1000

    with pytest.raises(TooLarge):
        LocalBlobStore(tmp_path, max_size=10_000).put(endless())
    assert len(pulled) == 11


def test_factory(tmp_path: Path) -> None:
    def root(url: str | None, **kw: int) -> Path:
        store = open_blob_store(url, data_dir=tmp_path, **kw)
        assert isinstance(store, LocalBlobStore)
        return store.objects.root

    assert root(None) == root("") == tmp_path / "blobs"
    assert root(f"file://{tmp_path}/elsewhere") == tmp_path / "elsewhere"
    assert root(str(tmp_path / "p")) == tmp_path / "p"
    assert open_blob_store(None, data_dir=tmp_path, max_size=7).max_size == 7
    s3 = open_blob_store("s3://bucket/some/prefix", data_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:1",
                         s3_access_key_id="key-id", s3_secret_access_key="s3cr3t-value")
    assert isinstance(s3, S3BlobStore)
    assert (s3.objects.bucket, s3.objects.prefix) == ("bucket", "some/prefix/")
    assert "s3cr3t" not in repr(s3) + repr(s3.objects) + str(vars(s3.objects))
    for bad in ("s3:///nobucket", "ftp://host/x"):
        with pytest.raises(Invalid):
            open_blob_store(bad, data_dir=tmp_path)
