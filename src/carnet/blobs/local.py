"""Blobs in a local folder (the embedded default: ``<data_dir>/blobs``).

Layout: ``<root>/<k[0:2]>/<k[2:4]>/<key>`` (two levels of 256 shards keep folders small), and
``<root>/.staging/`` for writes in progress. A write goes to a staging file (mode 0600), is
fsynced, renamed onto its key and the shard folder is fsynced: a crash leaves either the old state
or the new one, never a partial blob under a key, and at worst a stale staging file that the
janitor removes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from carnet.blobs.content import VERIFY_WHOLE, ContentAddressedStore, check_key, is_key
from carnet.blobs.errors import MissingBlob
from carnet.blobs.interfaces import DEFAULT_MAX_SIZE, StoredBlob

READ_CHUNK = 1024 * 1024
STAGING = ".staging"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=UTC)


class LocalReader:
    """An open file: reads see the version that was opened, whatever replaces it meanwhile."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self.size = os.fstat(fd).st_size

    def read(self, start: int, end: int) -> Iterator[bytes]:
        pos = start
        while pos < end:
            if self._fd is None:
                raise ValueError("reader is closed")
            data = os.pread(self._fd, min(READ_CHUNK, end - pos), pos)
            if not data:
                return
            pos += len(data)
            yield data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalObjects:
    """An ObjectStore in a folder, with atomic, durable writes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging = self.root / STAGING

    def __repr__(self) -> str:
        return f"LocalObjects({self.root.name!r})"

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    def _ensure(self, folder: Path) -> None:
        """Create ``folder`` and any missing parents, fsyncing each parent that gained an entry."""
        missing: list[Path] = []
        here = folder
        while not here.exists():
            missing.append(here)
            here = here.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
            _fsync_dir(path.parent)

    def write(self, chunks: Iterable[bytes], key_for: Callable[[], str]) -> str:
        self._ensure(self.staging)
        fd, name = tempfile.mkstemp(dir=self.staging, suffix=".part")
        staged = Path(name)
        try:
            with os.fdopen(fd, "wb", buffering=READ_CHUNK) as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            key = key_for()
            final = self.path(key)
            self._ensure(final.parent)
            os.replace(staged, final)
            _fsync_dir(final.parent)
            return key
        except BaseException:
            staged.unlink(missing_ok=True)
            raise

    def open(self, key: str) -> LocalReader:
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise MissingBlob(f"blob {key} is not in the store") from None
        return LocalReader(fd)

    def stat(self, key: str) -> StoredBlob | None:
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        return StoredBlob(key, st.st_size, _mtime(st))

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def list(self) -> Iterator[StoredBlob]:
        if not self.root.exists():
            return
        for top in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(top.name) != 2 or not top.is_dir():
                continue
            for mid in sorted(os.scandir(top.path), key=lambda e: e.name):
                if not mid.is_dir():
                    continue
                for entry in sorted(os.scandir(mid.path), key=lambda e: e.name):
                    if is_key(entry.name) and entry.is_file():
                        st = entry.stat()
                        yield StoredBlob(entry.name, st.st_size, _mtime(st))

    def sweep_staging(self, older_than: datetime) -> int:
        removed = 0
        if not self.staging.exists():
            return 0
        for entry in os.scandir(self.staging):
            with contextlib.suppress(FileNotFoundError):
                if _mtime(entry.stat()) < older_than:
                    os.unlink(entry.path)
                    removed += 1
        return removed


class LocalBlobStore(ContentAddressedStore):
    """Content-addressed blobs in a local folder (default ``<data_dir>/blobs``)."""

    objects: LocalObjects

    def __init__(self, root: Path, *, max_size: int = DEFAULT_MAX_SIZE,
                 verify_whole: int = VERIFY_WHOLE) -> None:
        super().__init__(LocalObjects(root), max_size=max_size, verify_whole=verify_whole)
