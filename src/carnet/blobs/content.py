"""Content addressing and verification, shared by every blob store.

:class:`ContentAddressedStore` turns an :class:`ObjectStore` into a :class:`BlobStore`: the key is
the SHA-256 of the content, computed (with the SHA-1 and the size) while the stream is written;
every full read recomputes the SHA-256 and refuses content that does not match.

How "never served" holds while streaming: content up to ``verify_whole`` bytes (1 MiB by
default, which covers ordinary documents) is read and checked whole before :meth:`open` returns,
so the caller can still answer with an error. Larger content is streamed with its last chunk held
back until the hash has been checked, so a consumer never receives the complete body of corrupt
content (an HTTP response is cut short, which clients treat as a failed transfer). The encrypted
store goes further: every segment is authenticated before any of its bytes is returned.

Range reads of a plain store cannot be checked against the whole-content hash; the encrypted
store authenticates ranges segment by segment.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator

from carnet.blobs.errors import BadRange, CorruptBlob, MissingBlob
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE, BlobRef, ObjectReader, ObjectStore, StoredBlob
from carnet.errors import TooLarge

log = logging.getLogger("carnet.blobs")

VERIFY_WHOLE = 1024 * 1024
_KEY = re.compile(r"[0-9a-f]{64}")


def check_key(key: str) -> str:
    """Keys are 64 lowercase hex digits (a SHA-256 or HMAC-SHA256): nothing else reaches a path."""
    if not _KEY.fullmatch(key):
        raise ValueError("a blob key is 64 lowercase hex digits")
    return key


def is_key(name: str) -> bool:
    return _KEY.fullmatch(name) is not None


def alert(key: str, reason: str) -> CorruptBlob:
    """Log the operator alert for an integrity failure and return the error to raise."""
    log.error("blob integrity failure: %s (blob %s)", reason, key,
              extra={"alert": "blob-integrity", "blob_key": key})
    return CorruptBlob(f"stored content failed its integrity check: {reason}")


def resolve_range(size: int, start: int | None, end: int | None) -> tuple[int, int] | None:
    """None for the whole content (which is verified), else [start, end) with end clamped."""
    lo = 0 if start is None else start
    hi = size if end is None else min(end, size)
    if (lo, hi) == (0, size):
        return None
    if lo < 0 or lo >= hi:
        raise BadRange(f"range {start}-{end} is not satisfiable for {size} bytes")
    return lo, hi


class Digest:
    """SHA-256, SHA-1 and size of a stream as it passes, with the size limit."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1(usedforsecurity=False)

    def feed(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self.max_size:
                raise TooLarge(f"content is larger than the limit of {self.max_size} bytes")
            self._sha256.update(chunk)
            self._sha1.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def ref(self, key: str) -> BlobRef:
        return BlobRef(key=key, sha256=self.sha256, sha1=self._sha1.hexdigest(), size=self.size)


def verified(chunks: Iterable[bytes], ref: BlobRef, on_fail: Callable[[str], CorruptBlob]) -> Iterator[bytes]:
    """Pass the chunks through, holding the last one back until size and SHA-256 check out."""
    sha = hashlib.sha256()
    size = 0
    held: bytes | None = None
    for chunk in chunks:
        if not chunk:
            continue
        sha.update(chunk)
        size += len(chunk)
        if held is not None:
            yield held
        held = chunk
    if size != ref.size:
        raise on_fail(f"read {size} bytes, expected {ref.size}")
    if sha.hexdigest() != ref.sha256:
        raise on_fail("SHA-256 differs from the reference")
    if held is not None:
        yield held


def open_object(objects: ObjectStore, key: str) -> ObjectReader:
    try:
        return objects.open(key)
    except MissingBlob:
        alert(key, "referenced blob is missing from the store")
        raise


def _closing(reader: ObjectReader, body: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        reader.close()


def finish(reader: ObjectReader, body: Iterator[bytes], length: int, verify_whole: int) -> Iterator[bytes]:
    """Small content is read (and so checked) now; larger content streams, closing the reader at the end."""
    if length <= verify_whole:
        try:
            data = list(body)
        finally:
            reader.close()
        return iter(data)
    return _closing(reader, body)


class ContentAddressedStore:
    """A BlobStore over any ObjectStore: key = SHA-256 of the content, hash checked on full reads."""

    def __init__(self, objects: ObjectStore, *, max_size: int = DEFAULT_MAX_SIZE,
                 verify_whole: int = VERIFY_WHOLE) -> None:
        self.objects = objects
        self.max_size = max_size
        self.verify_whole = verify_whole

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.objects!r})"

    def put(self, chunks: Iterable[bytes]) -> BlobRef:
        digest = Digest(self.max_size)
        key = self.objects.write(digest.feed(chunks), lambda: digest.sha256)
        return digest.ref(key)

    def open(self, ref: BlobRef, start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        span = resolve_range(ref.size, start, end)
        reader = open_object(self.objects, ref.key)
        try:
            if reader.size != ref.size:
                raise alert(ref.key, f"stored size {reader.size} differs from the reference's {ref.size}")
            if span is None:
                body = verified(reader.read(0, ref.size), ref, lambda reason: alert(ref.key, reason))
                return finish(reader, body, ref.size, self.verify_whole)
            return finish(reader, reader.read(*span), span[1] - span[0], self.verify_whole)
        except BaseException:
            reader.close()
            raise

    def exists(self, ref: BlobRef) -> bool:
        return self.objects.stat(ref.key) is not None

    def delete(self, key: str) -> None:
        self.objects.delete(key)

    def list(self) -> Iterator[StoredBlob]:
        return self.objects.list()
