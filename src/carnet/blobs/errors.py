"""Errors of the blob stores. Messages name storage keys and reasons, never content or keys."""

from __future__ import annotations

from carnet.errors import CarnetError


class CorruptBlob(CarnetError):
    """Stored content failed its integrity check (hash, size or authentication): never served.

    Raising it goes with an operator alert on the ``carnet.blobs`` logger."""

    code = "exception"


class MissingBlob(CorruptBlob):
    """A referenced blob is not in the store: data loss as far as its reader is concerned."""


class BadRange(CarnetError):
    """The requested byte range lies outside the content (HTTP 416)."""

    code = "value"
