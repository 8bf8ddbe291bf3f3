"""The janitor: removes orphan blobs, written by a transaction that then rolled back.

Content is written to the store *before* the transaction that references it commits, so a failed
or rolled-back publish leaves an orphan behind. Orphans are never served: every read starts from
a reference found in the database (a BlobRef in a committed row), so an unreferenced blob cannot
be reached. The janitor only reclaims their space.

Safety: a blob younger than the grace period is kept whatever the database says (its transaction
may still be open); every write of a key refreshes its modification time, so content re-published
after becoming an orphan is young again; and each candidate is looked at once more just before it
is deleted. Staging left by writers that died (temporary files, unfinished multipart uploads)
older than the grace period goes too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from carnet.blobs.interfaces import StoredBlob

log = logging.getLogger("carnet.blobs")

DEFAULT_GRACE = timedelta(hours=24)


class Sweepable(Protocol):
    """What the janitor needs: a ContentAddressedStore's or EncryptedBlobStore's ``objects``."""

    def list(self) -> Iterator[StoredBlob]: ...

    def stat(self, key: str) -> StoredBlob | None: ...

    def delete(self, key: str) -> None: ...

    def sweep_staging(self, older_than: datetime) -> int: ...


@dataclass
class SweepReport:
    examined: int = 0
    recent: int = 0
    referenced: int = 0
    deleted: int = 0
    staging_removed: int = 0


def sweep_orphans(objects: Sweepable, referenced: Callable[[Sequence[str]], Iterable[str]], *,
                  grace: timedelta = DEFAULT_GRACE, now: datetime | None = None,
                  batch_size: int = 500) -> SweepReport:
    """Delete stored blobs older than ``grace`` that the database does not reference.

    ``referenced(keys)`` answers which of a batch of stored keys the database references (for
    example ``SELECT blob_key FROM ... WHERE blob_key IN :keys``), so the reference set never has
    to fit in memory. Pass ``store.objects`` of a LocalBlobStore, S3BlobStore or EncryptedBlobStore.
    """
    now = now or datetime.now(UTC)
    cutoff = now - grace
    report = SweepReport()
    batch: list[StoredBlob] = []

    def flush() -> None:
        keep = set(referenced([b.key for b in batch]))
        for blob in batch:
            if blob.key in keep:
                report.referenced += 1
                continue
            current = objects.stat(blob.key)
            if current is None:
                continue
            if current.modified >= cutoff:
                report.recent += 1
                continue
            objects.delete(blob.key)
            report.deleted += 1
        batch.clear()

    for blob in objects.list():
        report.examined += 1
        if blob.modified >= cutoff:
            report.recent += 1
            continue
        batch.append(blob)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    report.staging_removed = objects.sweep_staging(cutoff)
    log.info("blob janitor: %d examined, %d orphans deleted, %d recent, %d referenced, %d staging removed",
             report.examined, report.deleted, report.recent, report.referenced, report.staging_removed)
    return report
