"""The blob-store protocols.

Two layers. An :class:`ObjectStore` keeps opaque bytes under keys (a folder, an S3 bucket) and
writes atomically. A :class:`BlobStore` is what the services use: content addressed by the
SHA-256 of its plaintext, written from a stream, read back as a stream whose hash is checked,
with byte ranges for HTTP range requests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

DEFAULT_MAX_SIZE = 50 * 1024 * 1024


@dataclass(frozen=True)
class BlobRef:
    """What the database keeps about a blob: enough to find it and check it.

    ``key`` is where the store keeps it (for the janitor's reference set); ``sha256``/``sha1`` are
    hex digests of the plaintext, ``size`` its length in bytes.
    """

    key: str
    sha256: str
    sha1: str
    size: int

    @property
    def sha1_base64(self) -> str:
        """The SHA-1 as MHD's ``attachment.hash`` wants it (base64Binary)."""
        return base64.b64encode(bytes.fromhex(self.sha1)).decode("ascii")


@dataclass(frozen=True)
class StoredBlob:
    """One stored object as listed: its key, stored size and last modification (aware, UTC)."""

    key: str
    size: int
    modified: datetime


class BlobStore(Protocol):
    max_size: int

    def put(self, chunks: Iterable[bytes]) -> BlobRef:
        """Store the stream's bytes; raise carnet.errors.TooLarge past ``max_size``."""
        ...

    def open(self, ref: BlobRef, start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        """The content, or bytes [start, end) of it (end exclusive, clamped to the size).

        Checks run before this returns where they can (missing blob, size, header, and the whole
        content when it is small), so a caller can still answer with an error status.
        """
        ...

    def exists(self, ref: BlobRef) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self) -> Iterator[StoredBlob]: ...


class ObjectReader(Protocol):
    """One stored object, pinned: every read sees the same version."""

    size: int

    def read(self, start: int, end: int) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    def write(self, chunks: Iterable[bytes], key_for: Callable[[], str]) -> str:
        """Stage the stream, then (once it is exhausted) commit it atomically under ``key_for()``.

        An existing object under that key is replaced, which also refreshes its modification
        time (the janitor relies on it). On any error nothing is committed."""
        ...

    def open(self, key: str) -> ObjectReader:
        """Raise MissingBlob when absent."""
        ...

    def stat(self, key: str) -> StoredBlob | None: ...

    def delete(self, key: str) -> None: ...

    def list(self) -> Iterator[StoredBlob]: ...

    def sweep_staging(self, older_than: datetime) -> int:
        """Remove staging left by writers that died (temp files, unfinished multipart uploads)."""
        ...
