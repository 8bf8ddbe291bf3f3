"""The audit spool (SQLite): a read's audit rows, durable before its response leaves, without
waiting for the database's one write lock.

A read on SQLite holds no write lock, so its AuditEvent cannot go in with it. Writing it to the
database from the server process that answered, even many rows per commit, halved the rate of
reads (bench/README.md, "Reads with auditing"): the commits, the sequencer and the request
threads shared one interpreter lock. Instead each server process appends its rows to a file of
its own in ``<data>/audit-spool`` (one ``write`` per request, from the request's thread; the
bytes are then in the operating system's hands, as a SQLite commit with ``synchronous=NORMAL``
is: they survive the process, not a power cut). The sequencer moves them into ``audit_events``
and its queue in the transaction of its run, where the file's consumed length is recorded too:
a crash on either side neither loses nor repeats a row.

A file is written by the one process that created it, which holds an exclusive ``flock`` on it
while it may still write. A file that nobody holds (its writer moved on to a new file, or died)
is final: once wholly consumed it is deleted. Frames are ``length (4 bytes) | CRC-32 (4 bytes) |
JSON``; a torn last frame of a final file (its writer died mid-write) is reported and skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

if TYPE_CHECKING:
    from carnet.config import Settings

log = logging.getLogger("carnet.audit")

COLUMNS = ("id", "recorded", "patient_id", "agent", "action", "subtype", "outcome", "content")
HEADER = struct.Struct(">II")
SUFFIX = ".spool"
ROTATE_BYTES = 8 * 2**20  # a writer starts a new file past this size
READ_BYTES = 4 * 2**20  # read from one file per ingest, at most
ROWS = f"INSERT OR IGNORE INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
QUEUE = "INSERT INTO audit_pending (seq) SELECT seq FROM audit_events WHERE seq > ?"
SEQS = "SELECT id, seq FROM audit_events WHERE seq > ? ORDER BY seq"


def encode(rows: list[dict[str, Any]]) -> bytes:
    """One frame: the rows' columns in order, ``content`` (canonical JSON, UTF-8) as text."""
    payload = orjson.dumps([[r[c] for c in COLUMNS[:-1]] + [r["content"].decode()] for r in rows])
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes) -> tuple[list[tuple[Any, ...]], int, bool]:
    """The rows of the whole frames at the start of ``data``, how many bytes they take, and
    whether what follows them is damaged (a bad checksum) rather than merely incomplete."""
    rows: list[tuple[Any, ...]] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if end > len(data):
            break
        payload = data[pos + HEADER.size:end]
        if zlib.crc32(payload) != crc:
            return rows, pos, True
        for r in orjson.loads(payload):
            rows.append((*r[:-1], r[-1].encode()))
        pos = end
    return rows, pos, False


@dataclass
class Ingested:
    rows: int = 0
    # wholly consumed final files, to delete, each with a descriptor holding its lock until then
    finished: list[tuple[Path, int]] = field(default_factory=list)
    consumed: dict[str, int] = field(default_factory=dict)  # each file's consumed length after it
    leaves: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, content) when not queued


class Spool:
    def __init__(self, directory: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.directory = directory
        # the folder's key in audit_spool_files: its absolute path's digest (a short, fixed length)
        self.key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = 0
        self._size = 0
        self._count = 0
        self._token = ""
        self._consumed: dict[str, int] = {}  # as this process's last committed ingest left them

    # -- writing (every server process) ----------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to this process's file; when this returns they are in the file."""
        if not rows:
            return
        frame = encode(rows)
        with self._lock:
            if self._pid != os.getpid() or self._size >= self.rotate_bytes:
                self._open()
            view = memoryview(frame)
            while view:  # a regular file takes it whole, unless the disk is full (OSError)
                view = view[os.write(self._fd, view):]
            self._size += len(frame)

    def _open(self) -> None:
        """A new file of this process, locked before it has its name (an ingest never sees it
        unlocked while this process may still write it)."""
        if self._pid != os.getpid():  # first use, or a forked child: nothing of the parent's is ours
            self._pid, self._fd, self._count = os.getpid(), -1, 0
            self._token = os.urandom(4).hex()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count += 1
        name = f"{self._pid}-{self._token}-{self._count:06d}"
        temp = self.directory / (name + ".new")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(temp, self.directory / (name + SUFFIX))
        old, self._fd, self._size = self._fd, fd, 0
        if old >= 0:
            os.close(old)  # final from now on: the lock goes with it

    # -- ingesting (the sequencer, in its write transaction) --------------------------------------
    def waiting(self) -> bool:
        """Whether some file may hold rows not yet in the database (a directory listing, no lock)."""
        try:
            with os.scandir(self.directory) as entries:
                return any(entry.name.endswith(SUFFIX)
                           and entry.stat().st_size > self._consumed.get(entry.name, 0)
                           for entry in entries)
        except FileNotFoundError:
            return False

    def ingest(self, conn: Connection, max_rows: int, *, queue: bool = True) -> Ingested:
        """Move the rows of the spool's files into ``audit_events`` and the sequencer's queue, and
        record how far each file is consumed, all in ``conn``'s write transaction. Call
        :meth:`finish` once it has committed. The sequencer itself (``queue`` false) numbers the
        rows in the same transaction: they skip the queue, and come back as ``leaves``."""
        done = Ingested()
        try:
            with os.scandir(self.directory) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(SUFFIX))
        except FileNotFoundError:
            names = []
        # the files of this folder (several folders may feed one database: keys, not just names)
        prefix = self.key + "/"
        known: dict[str, int] = {f[len(prefix):]: c for f, c in conn.exec_driver_sql(
            "SELECT file, consumed FROM audit_spool_files WHERE file LIKE ?", (prefix + "%",)).all()}
        gone = [(prefix + name,) for name in known if name not in names]  # deleted once consumed
        if gone:
            conn.exec_driver_sql("DELETE FROM audit_spool_files WHERE file = ?", gone)
        rows: list[tuple[Any, ...]] = []
        consumed: list[tuple[int, str]] = []
        for name in names:
            if len(rows) >= max_rows:
                break
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            final = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                final = True  # nobody writes it any more
            except BlockingIOError:
                pass
            start = int(known.get(name, 0))
            size = os.fstat(fd).st_size
            want = READ_BYTES
            if size - start >= HEADER.size:  # a frame longer than the usual read is read whole
                want = max(want, HEADER.size + HEADER.unpack(os.pread(fd, HEADER.size, start))[0])
            got, used, damaged = decode(os.pread(fd, min(size - start, want), start)) if size > start \
                else ([], 0, False)
            end = start + used
            if (damaged or final) and end < size and (damaged or size - start <= want):
                # a damaged frame, or the torn tail of a writer that died: what follows is unreadable
                log.error("audit spool %s: %d bytes at offset %d are %s and were skipped", path,
                          size - end, end, "damaged" if damaged else "an incomplete last write")
                end = size
            rows.extend(got)
            done.consumed[name] = end
            if end != start or name not in known:
                consumed.append((end, name))
            if final and end >= size:
                done.finished.append((path, fd))  # locked until deleted: no one takes it for live
            else:
                os.close(fd)
        if rows:
            before = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM audit_events").scalar()
            conn.exec_driver_sql(ROWS, rows)
            # this transaction's rows (the one writer's), in the order they went in; a row already
            # there (never expected: each byte is consumed once) is reported, not taken twice
            seqs: dict[str, int] = dict(conn.exec_driver_sql(SEQS, (before,)).all())
            if len(seqs) != len(rows):
                log.error("audit spool: %d rows were already in the database and were not taken again",
                          len(rows) - len(seqs))
            if queue:
                conn.exec_driver_sql(QUEUE, (before,))
            else:
                done.leaves = [(seqs[row[0]], row[-1]) for row in rows if row[0] in seqs]
        for end, name in consumed:
            if name in known:
                conn.exec_driver_sql("UPDATE audit_spool_files SET consumed = ? WHERE file = ?",
                                     (end, prefix + name))
            else:
                conn.exec_driver_sql("INSERT INTO audit_spool_files (file, consumed) VALUES (?, ?)",
                                     (prefix + name, end))
        done.rows = len(rows)
        return done

    def finish(self, done: Ingested, committed: bool) -> None:
        """After the ingest's transaction: once committed, delete the files it consumed whole
        (their rows of ``audit_spool_files`` go with the next ingest); either way, unlock them."""
        if committed:
            self._consumed = {**{n: c for n, c in self._consumed.items()
                                 if (self.directory / n).exists()}, **done.consumed}
        for path, fd in done.finished:
            if committed:
                path.unlink(missing_ok=True)
                self._consumed.pop(path.name, None)
            os.close(fd)
        done.finished.clear()
        done.consumed.clear()


def spool_of(settings: Settings) -> Spool | None:
    """The spool of the data folder, where the settings keep one (``CARNET_AUDIT_SPOOL``)."""
    return Spool(settings.data_dir / "audit-spool") if settings.audit_spool else None
