"""Build the configured blob store from a URL (``CARNET_BLOB_URL``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from carnet.blobs.content import ContentAddressedStore
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE
from carnet.blobs.local import LocalBlobStore
from carnet.blobs.s3 import S3BlobStore
from carnet.errors import Invalid


def default_blob_dir(data_dir: Path) -> Path:
    return data_dir / "blobs"


def open_blob_store(url: str | None, *, data_dir: Path, max_size: int = DEFAULT_MAX_SIZE,
                    s3_endpoint_url: str | None = None, s3_region: str | None = None,
                    s3_access_key_id: str | None = None, s3_secret_access_key: str | None = None,
                    spool_dir: Path | None = None) -> ContentAddressedStore:
    """``None``/empty: ``<data_dir>/blobs``; ``file:///path`` or a plain path: that folder;
    ``s3://bucket/optional/prefix``: that bucket (endpoint and credentials from the s3_ arguments,
    else boto3's usual chain)."""
    if not url:
        return LocalBlobStore(default_blob_dir(data_dir), max_size=max_size)
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalBlobStore(Path(unquote(parts.path) if parts.scheme else url), max_size=max_size)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise Invalid("blob URL s3://BUCKET[/PREFIX] needs a bucket")
        prefix = parts.path.strip("/")
        return S3BlobStore(parts.netloc, prefix=prefix + "/" if prefix else "", max_size=max_size,
                           spool_dir=spool_dir, endpoint_url=s3_endpoint_url, region=s3_region,
                           access_key_id=s3_access_key_id, secret_access_key=s3_secret_access_key)
    raise Invalid(f"blob URL scheme {parts.scheme!r} is not supported (file, s3)")
