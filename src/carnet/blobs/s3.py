"""Blobs in an S3-compatible object store (server deployments), through boto3.

boto3 rather than obstore: it is the client every S3-compatible server (Swift's s3api, Ceph RGW,
MinIO, Garage) is tested against, it exposes the multipart calls directly so the upload stays
under our control (part size, abort on failure, Content-MD5 per part), its clients are
thread-safe, and our request paths are synchronous; obstore's advantages (Rust speed, async)
matter little next to the network and the server.

A write is spooled while it streams (in memory up to one part, then in a temporary file), because
the key is the content hash, known only at the end of the stream; then it is uploaded in one PUT,
or as a multipart upload of ``part_size`` parts for large content, each part with a Content-MD5
that the server checks. Memory stays at about two parts whatever the size. A failed multipart
upload is aborted; one left behind by a dead process is removed by :meth:`S3Objects.sweep_staging`.
Reads pin the object's ETag (``If-Match``), so the reads of one :meth:`S3Objects.open` never mix
two versions of an object that is rewritten meanwhile.

The client turns off boto3's default CRC trailers (``request_checksum_calculation`` and
``response_checksum_validation`` at ``when_required``): several S3-compatible servers reject
them; Content-MD5 gives the same in-transit check everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from carnet.blobs.content import VERIFY_WHOLE, ContentAddressedStore, check_key, is_key
from carnet.blobs.errors import MissingBlob
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE, StoredBlob
from carnet.errors import Unavailable

PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(exc: Exception, what: str) -> Unavailable:
    detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    return Unavailable(f"object store: {what} failed ({detail})")


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def make_client(*, endpoint_url: str | None = None, region: str | None = None,
                access_key_id: str | None = None, secret_access_key: str | None = None,
                path_style: bool = True) -> Any:
    """An S3 client; credentials not given here come from boto3's usual chain."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if path_style else "virtual"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                        aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                        config=config)


class S3Reader:
    def __init__(self, client: Any, bucket: str, name: str, size: int, etag: str) -> None:
        self._client, self._bucket, self._name = client, bucket, name
        self.size, self._etag = size, etag

    def read(self, start: int, end: int) -> Iterator[bytes]:
        if start >= end:
            return
        try:
            resp = self._client.get_object(Bucket=self._bucket, Key=self._name,
                                           Range=f"bytes={start}-{end - 1}", IfMatch=self._etag)
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412"}:
                raise Unavailable("object store: the object changed during the read; retry") from None
            if _code(exc) in _NOT_FOUND:
                raise MissingBlob("blob disappeared during the read") from None
            raise _unavailable(exc, "read") from None
        except BotoCoreError as exc:
            raise _unavailable(exc, "read") from None
        body = resp["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        except BotoCoreError as exc:
            raise _unavailable(exc, "read") from None
        finally:
            body.close()

    def close(self) -> None:
        pass


class S3Objects:
    """An ObjectStore in one bucket, under an optional key prefix."""

    def __init__(self, bucket: str, *, prefix: str = "", client: Any = None, part_size: int = PART_SIZE,
                 spool_dir: Path | None = None, **client_options: Any) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 multipart parts are at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.spool_dir = spool_dir
        self.client = client if client is not None else make_client(**client_options)

    def __repr__(self) -> str:
        return f"S3Objects(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (deployment and test setup)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise _unavailable(exc, "bucket check") from None
            self.client.create_bucket(Bucket=self.bucket)

    # -- writing ------------------------------------------------------------------------------
    def write(self, chunks: Iterable[bytes], key_for: Callable[[], str]) -> str:
        spool_dir = None if self.spool_dir is None else str(self.spool_dir)
        with tempfile.SpooledTemporaryFile(max_size=self.part_size, dir=spool_dir) as spool:
            for chunk in chunks:
                spool.write(chunk)
            size = spool.tell()
            key = key_for()
            name = self.name(key)
            spool.seek(0)
            try:
                if size <= self.part_size:
                    data = spool.read()
                    self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentMD5=_md5(data),
                                           ContentType="application/octet-stream")
                else:
                    self._multipart(name, spool)
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable(exc, "write") from None
        return key

    def _multipart(self, name: str, spool: Any) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name,
                                                     ContentType="application/octet-stream")
        upload_id = upload["UploadId"]
        try:
            parts = []
            number = 1
            while data := spool.read(self.part_size):
                resp = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                               PartNumber=number, Body=data, ContentMD5=_md5(data))
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
                number += 1
                del data
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):  # else sweep_staging removes it later
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise

    # -- reading and housekeeping ---------------------------------------------------------------
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.name(key)))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise _unavailable(exc, "lookup") from None
        except BotoCoreError as exc:
            raise _unavailable(exc, "lookup") from None

    def open(self, key: str) -> S3Reader:
        head = self._head(key)
        if head is None:
            raise MissingBlob(f"blob {key} is not in the store")
        return S3Reader(self.client, self.bucket, self.name(key), int(head["ContentLength"]), head["ETag"])

    def stat(self, key: str) -> StoredBlob | None:
        head = self._head(key)
        if head is None:
            return None
        return StoredBlob(key, int(head["ContentLength"]), head["LastModified"].astimezone(UTC))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.name(key))
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise _unavailable(exc, "delete") from None
        except BotoCoreError as exc:
            raise _unavailable(exc, "delete") from None

    def list(self) -> Iterator[StoredBlob]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    if is_key(key):
                        yield StoredBlob(key, int(obj["Size"]), obj["LastModified"].astimezone(UTC))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc, "listing") from None

    def sweep_staging(self, older_than: datetime) -> int:
        removed = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                             Prefix=self.prefix)
        try:
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].astimezone(UTC) < older_than:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc, "multipart sweep") from None
        return removed


class S3BlobStore(ContentAddressedStore):
    """Content-addressed blobs in an S3 bucket."""

    objects: S3Objects

    def __init__(self, bucket: str, *, prefix: str = "", max_size: int = DEFAULT_MAX_SIZE,
                 verify_whole: int = VERIFY_WHOLE, part_size: int = PART_SIZE, spool_dir: Path | None = None,
                 client: Any = None, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None) -> None:
        if client is None:
            client = make_client(endpoint_url=endpoint_url, region=region, access_key_id=access_key_id,
                                 secret_access_key=secret_access_key)
        super().__init__(S3Objects(bucket, prefix=prefix, client=client, part_size=part_size,
                                   spool_dir=spool_dir),
                         max_size=max_size, verify_whole=verify_whole)
