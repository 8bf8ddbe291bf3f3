"""The document content store as configured: the blob store (folder or S3) under per-patient
encryption, with data keys in the database and master keys in the keys folder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Engine, select

from carnet.blobs import EncryptedBlobStore, open_blob_store
from carnet.config import Settings
from carnet.crypto.keyfiles import load_keyring
from carnet.crypto.sqlstore import SqlDataKeyStore
from carnet.db.tables import document_contents


def open_document_store(settings: Settings, engine: Engine) -> EncryptedBlobStore:
    secret = settings.s3_secret_access_key
    inner = open_blob_store(
        settings.blob_url or None, data_dir=settings.data_dir, max_size=settings.max_document_bytes,
        s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=secret.get_secret_value() if secret is not None else None,
        spool_dir=settings.data_dir / "spool")
    return EncryptedBlobStore(inner, load_keyring(settings.keys_path), SqlDataKeyStore(engine))


def referenced_keys(engine: Engine) -> _Referenced:
    return _Referenced(engine)


class _Referenced:
    """For the janitor: which of a batch of stored keys some document content references."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, keys: Sequence[str]) -> Iterable[str]:
        t = document_contents.c
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(t.blob_key).where(t.blob_key.in_(list(keys))))}
