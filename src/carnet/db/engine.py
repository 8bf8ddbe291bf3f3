"""Engine creation for SQLite (embedded, WAL) and PostgreSQL (server mode)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from carnet.config import Settings


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute("PRAGMA mmap_size=268435456")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # A write transaction takes the write lock at BEGIN: a deferred one that later writes can fail
    # with SQLITE_BUSY without waiting. Reads begin deferred (a WAL snapshot, no lock).
    if conn.get_execution_options().get("carnet_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(settings: Settings, url: str | None = None) -> Engine:
    url = url or settings.sqlalchemy_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30,
                                                  "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                         pool_pre_ping=True)


class SqliteWriteLock:
    """Hands SQLite's single write slot from one writer to the next without polling.

    SQLite's busy handler sleeps in growing steps (up to 100 ms) while another connection
    writes, which turns contention between server processes into second-long tail latencies.
    Writers instead queue on a thread lock (within a process) and an ``flock`` on a file beside the
    database (across processes): the kernel wakes the next writer as soon as the lock is released.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".writelock")
        self.thread_lock = threading.Lock()
        self.fd: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self.thread_lock:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_LOCKS: dict[str, SqliteWriteLock] = {}
_LOCKS_GUARD = threading.Lock()


def write_lock(engine: Engine) -> AbstractContextManager[None]:
    """The context a write transaction runs in: the SQLite writers' queue, or nothing on
    PostgreSQL (row locks and MVCC let writers run side by side)."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return nullcontext()
    path = Path(engine.url.database).resolve()
    key = f"{os.getpid()}:{path}"  # a forked worker opens its own lock file descriptor
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = SqliteWriteLock(path)
    return lock.hold()
