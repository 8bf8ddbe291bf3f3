"""Fixtures for the blob-store contract: every implementation behind one harness.

The S3 implementations run against a real S3-compatible server: OpenStack Swift with its s3api
middleware, started by ``scripts/swift-s3`` (installed from Debian's packages if missing) unless
one already answers. It is left running for later runs; ``scripts/swift-s3 stop`` stops it.
``CARNET_TEST_S3_ENDPOINT`` (with ``CARNET_TEST_S3_ACCESS_KEY`` / ``_SECRET_KEY``) points the tests at
another S3-compatible server instead. A missing server fails the tests; it never skips them.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carnet.blobs import EncryptedBlobStore, LocalBlobStore, S3BlobStore
from carnet.blobs.content import ContentAddressedStore
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE, BlobStore, ObjectStore
from carnet.blobs.local import LocalObjects
from carnet.blobs.s3 import S3Objects, make_client
from carnet.crypto import InMemoryDataKeyStore, Keyring, MasterKey

ROOT = Path(__file__).resolve().parents[2]
SWIFT_SCRIPT = ROOT / "scripts" / "swift-s3"
DEFAULT_ENDPOINT = "http://127.0.0.1:18080"
ENDPOINT = os.environ.get("CARNET_TEST_S3_ENDPOINT", DEFAULT_ENDPOINT)
ACCESS_KEY = os.environ.get("CARNET_TEST_S3_ACCESS_KEY", "test:tester")
SECRET_KEY = os.environ.get("CARNET_TEST_S3_SECRET_KEY", "testing")
IMPLEMENTATIONS = ["local", "encrypted-local", "s3", "encrypted-s3"]


def _swift_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{DEFAULT_ENDPOINT}/healthcheck", timeout=2) as resp:  # loopback only
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_client() -> Any:
    if ENDPOINT == DEFAULT_ENDPOINT and not _swift_answers():
        lock_path = Path(tempfile.gettempdir()) / "carnet-swift-s3.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers start it once
            if not _swift_answers():
                done = subprocess.run(["bash", str(SWIFT_SCRIPT), "start"], capture_output=True, text=True,
                                      timeout=900, check=False)
                if done.returncode != 0:
                    pytest.fail(f"could not start the Swift S3 test server:\n{done.stdout}\n{done.stderr}")
    return make_client(endpoint_url=ENDPOINT, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


@pytest.fixture(scope="session")
def s3_bucket(s3_client: Any) -> Iterator[str]:
    bucket = f"carnet-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for obj in page.get("Contents", []):
            s3_client.delete_object(Bucket=bucket, Key=obj["Key"])
    for page in s3_client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            s3_client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    s3_client.delete_bucket(Bucket=bucket)


class Harness:
    """One implementation under test, with the backdoors the contract needs (tampering, staging)."""

    def __init__(self, name: str, make_base: Callable[[int], ContentAddressedStore]) -> None:
        self.name = name
        self.encrypted = name.startswith("encrypted")
        self._make_base = make_base
        self.keyring = Keyring(MasterKey.generate())
        self.data_keys = InMemoryDataKeyStore()
        self.store = self.build()

    def build(self, max_size: int = DEFAULT_MAX_SIZE) -> BlobStore:
        base = self._make_base(max_size)
        self.objects: ObjectStore = base.objects
        if self.encrypted:
            self.encrypted_store = EncryptedBlobStore(base, self.keyring, self.data_keys)
            return self.encrypted_store.for_patient("patient-1")
        return base

    def raw(self, key: str) -> bytes:
        reader = self.objects.open(key)
        try:
            return b"".join(reader.read(0, reader.size))
        finally:
            reader.close()

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace the stored bytes behind the store's back (what a disk fault or an attacker does)."""
        if isinstance(self.objects, LocalObjects):
            path = self.objects.path(key)
            mtime = path.stat().st_mtime
            path.write_bytes(data)
            os.utime(path, (mtime, mtime))
        else:
            assert isinstance(self.objects, S3Objects)
            self.objects.client.put_object(Bucket=self.objects.bucket, Key=self.objects.name(key), Body=data)

    def leave_stale_staging(self) -> None:
        """What a writer that died mid-upload leaves behind."""
        if isinstance(self.objects, LocalObjects):
            self.objects.staging.mkdir(parents=True, exist_ok=True)
            part = self.objects.staging / "dead-writer.part"
            part.write_bytes(b"partial")
        else:
            assert isinstance(self.objects, S3Objects)
            self.objects.client.create_multipart_upload(Bucket=self.objects.bucket,
                                                        Key=self.objects.prefix + "0" * 64)

    def staging_left(self) -> int:
        if isinstance(self.objects, LocalObjects):
            return len(list(self.objects.staging.glob("*"))) if self.objects.staging.exists() else 0
        assert isinstance(self.objects, S3Objects)
        resp = self.objects.client.list_multipart_uploads(Bucket=self.objects.bucket, Prefix=self.objects.prefix)
        return len(resp.get("Uploads", []))


def _harness(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if name.endswith("s3"):
        client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        prefix = f"{uuid.uuid4().hex}/"  # each test sees only its own objects

        def make_base(max_size: int) -> ContentAddressedStore:
            return S3BlobStore(bucket, prefix=prefix, client=client, max_size=max_size, spool_dir=tmp_path)
    else:
        def make_base(max_size: int) -> ContentAddressedStore:
            return LocalBlobStore(tmp_path / "blobs", max_size=max_size)
    return Harness(name, make_base)


@pytest.fixture(params=IMPLEMENTATIONS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return _harness(request.param, request, tmp_path)


@pytest.fixture(params=[n for n in IMPLEMENTATIONS if n.startswith("encrypted")])
def encrypted_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return _harness(request.param, request, tmp_path)
