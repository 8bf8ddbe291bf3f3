"""Engine creation for SQLite (embedded, WAL) and PostgreSQL (server mode)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
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
    # psycopg prepares a statement run five times, and PostgreSQL then switches to a generic plan
    # that cannot see the values: a search driven by a rare value (one patient's observations) gets
    # the plan of a common one and costs 20x more. Search plans must look at the values.
    return create_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                         pool_pre_ping=True,
                         connect_args={"options": "-c plan_cache_mode=force_custom_plan"})


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


T = TypeVar("T")


@dataclass
class _Job(Generic[T]):
    work: Callable[[Connection], T]
    done: bool = False
    result: T | None = None
    error: BaseException | None = None


class GroupCommit:
    """Runs the write transactions of one process through SQLite's single write slot, many per commit.

    A writer enqueues its work and queues for the leader's seat. Whoever holds the seat takes every
    waiting job, opens one transaction (under :func:`write_lock`), runs each job in its own savepoint
    (a job that raises is rolled back alone and gets its exception back), commits once, and hands
    the seat on; a writer whose job was done by an earlier leader returns at once. No job's result
    is released before the commit that made it durable. Parsing and validation stay outside: only
    the database work of a request runs here.
    """

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.seat = threading.Lock()
        self.guard = threading.Lock()
        self.pending: list[_Job[Any]] = []

    def run(self, work: Callable[[Connection], T]) -> T:
        job: _Job[T] = _Job(work)
        with self.guard:
            self.pending.append(job)
        while not job.done:
            with self.seat:
                if not job.done:
                    with self.guard:
                        batch = self.pending[: self.max_batch]
                        del self.pending[: self.max_batch]
                    self._execute(batch)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _execute(self, batch: list[_Job[Any]]) -> None:
        if not batch:
            return
        try:
            with write_lock(self.engine), self.engine.connect() as conn:
                conn.execution_options(carnet_write=True)
                with conn.begin():
                    for job in batch:
                        savepoint = conn.begin_nested() if len(batch) > 1 else None
                        try:
                            job.result = job.work(conn)
                        except Exception as exc:
                            job.error = exc
                            if savepoint is not None:
                                savepoint.rollback()
                            else:
                                raise
                        else:
                            if savepoint is not None:
                                savepoint.commit()
        except Exception as exc:  # the commit (or the one job of a batch of one) failed
            for job in batch:
                if job.error is None:
                    job.error = exc
                    job.result = None
        finally:
            for job in batch:
                job.done = True


_COMMITTERS: dict[tuple[int, int], GroupCommit] = {}


def committer(engine: Engine) -> GroupCommit | None:
    """The process's group committer for a file-backed SQLite engine; None on PostgreSQL, where
    concurrent transactions commit side by side."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    key = (os.getpid(), id(engine))
    with _LOCKS_GUARD:
        found = _COMMITTERS.get(key)
        if found is None:
            found = _COMMITTERS[key] = GroupCommit(engine)
    return found


def run_write(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a write transaction: through the process's group committer on a SQLite
    file, else in a transaction of its own (under :func:`write_lock`)."""
    group = committer(engine)
    if group is not None:
        return group.run(work)
    with write_lock(engine), engine.connect() as conn:
        conn.execution_options(carnet_write=True)
        with conn.begin():
            return work(conn)
