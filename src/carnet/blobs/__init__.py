"""Blob storage: content addressed by SHA-256, streamed, verified on read, encrypted at rest."""

from carnet.blobs.content import ContentAddressedStore
from carnet.blobs.encrypted import EncryptedBlobStore, PatientBlobStore
from carnet.blobs.errors import BadRange, CorruptBlob, MissingBlob
from carnet.blobs.factory import default_blob_dir, open_blob_store
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE, BlobRef, BlobStore, ObjectStore, StoredBlob
from carnet.blobs.janitor import SweepReport, sweep_orphans
from carnet.blobs.local import LocalBlobStore
from carnet.blobs.s3 import S3BlobStore

__all__ = [
    "DEFAULT_MAX_SIZE",
    "BadRange",
    "BlobRef",
    "BlobStore",
    "ContentAddressedStore",
    "CorruptBlob",
    "EncryptedBlobStore",
    "LocalBlobStore",
    "MissingBlob",
    "ObjectStore",
    "PatientBlobStore",
    "S3BlobStore",
    "StoredBlob",
    "SweepReport",
    "default_blob_dir",
    "open_blob_store",
    "sweep_orphans",
]
