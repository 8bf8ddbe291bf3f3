"""Engine creation for SQLite (embedded, WAL) and PostgreSQL (server mode)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from carnet.background import Background
from carnet.config import Settings


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-65536")
    # Temporary files stay files (SQLite's default, not temp_store=MEMORY): inside a savepoint (every
    # job of a group commit) SQLite keeps the original of each page changed in a sub-journal, and a
    # statement with a statement journal of its own (one that may fail after changing rows, such as
    # INSERT ... SELECT) truncates it back when it ends; in memory that walks the whole journal, so
    # each such statement cost O(pages changed so far): 6.7 ms after 40k rows changed, 11 us with a
    # file (bench/sqlite_subjournal.py). Small temporary structures stay in the page cache either way.
    cur.execute("PRAGMA temp_store=FILE")
    cur.execute("PRAGMA mmap_size=268435456")
    cur.close()


WAL_RESTART_BYTES = 64 * 2**20  # a write-ahead log longer than this starts over (see WalCheckpointer)


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")
    # a log that starts over is cut back to this size (one grown by an earlier version, or a burst)
    dbapi_conn.execute(f"PRAGMA journal_size_limit={WAL_RESTART_BYTES}")


class WalCheckpointer(Background):
    """Copies a SQLite file's write-ahead log back into the database from a thread of the server
    process, every ``interval`` seconds (a passive checkpoint: writers and readers go on).

    By default the commit that grows the log past 1,000 pages does it, and that request waits
    for the copy and the database file's fsync: at 500k practitioners (5.5 GB), one request in a
    hundred or so took 10-30 ms longer than the others for that alone.

    A passive checkpoint copies pages back but never lets the log start over: a writer restarts
    the log only when, as it begins, every frame has been copied back and no reader uses any, and
    with writes arriving all the time a frame committed after the copy is always there. The log
    then grows without end (10 GB for a 1 GB database after 180k directory entries, every page
    lookup slower as its index grew: loading fell from 600 to 200 resources/s). So once the log
    is longer than ``restart_bytes`` the checkpointer takes the writers' lock (no frame can be
    added), copies the rest and waits for the readers still on the log (at most ``reader_wait``
    seconds, else it tries again next time): the next writer starts the log over."""

    name = "carnet-checkpoint"
    failure = "checkpointing the SQLite write-ahead log failed; retrying"

    def __init__(self, engine: Engine, interval: float = 0.5, restart_bytes: int = WAL_RESTART_BYTES,
                 reader_wait: float = 0.1) -> None:
        super().__init__(interval, logger=logging.getLogger("carnet.db"))
        self.engine = engine
        self.restart_bytes = restart_bytes
        self.reader_wait_ms = max(int(reader_wait * 1000), 1)
        self.restarts = 0  # how many times the log was made to start over (for tests and benches)
        self.page_size = 0  # the database's, read once

    def step(self) -> bool:
        raw = self.engine.raw_connection()  # autocommit: the checkpoint runs outside any transaction
        try:
            cur = raw.cursor()
            _busy, frames, _copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not self.page_size:
                self.page_size = cur.execute("PRAGMA page_size").fetchone()[0]
            if frames * self.page_size >= self.restart_bytes:
                with write_lock(self.engine):
                    cur.execute(f"PRAGMA busy_timeout={self.reader_wait_ms}")
                    try:
                        busy = cur.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                    finally:
                        cur.execute("PRAGMA busy_timeout=30000")
                if not busy:
                    self.restarts += 1
        finally:
            raw.close()
        return False


def _sqlite_begin(conn: Any) -> None:
    # A write transaction takes the write lock at BEGIN: a deferred one that later writes can fail
    # with SQLITE_BUSY without waiting. Reads begin deferred (a WAL snapshot, no lock).
    if conn.get_execution_options().get("carnet_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


_PROGRESS_STEPS = 1000  # SQLite virtual-machine steps between two looks at a statement's deadline
_READ = re.compile(r"\s*(?:SELECT|WITH)\b", re.IGNORECASE)
# execution option: the connection's statements are not timed (a server's start-up work, which a
# busy machine must not make fail: it is not a request)
UNTIMED = "carnet_untimed"
_DEADLINE = "carnet_deadline"  # key, in the pool's record of a SQLite connection, of its deadline cell


def _sqlite_statement_limit(engine: Engine, seconds: float) -> None:
    """Stop a SQLite query running longer than ``seconds``: a progress handler looks at the clock
    every few virtual-machine steps. Only reading statements are timed (each from its start, its
    rows' fetching included): interrupting a write would roll back the whole transaction, the
    other requests' writes of the same group commit with it."""

    def connect(dbapi_conn: Any, record: Any) -> None:
        cell = [0.0]  # the running statement's deadline (time.monotonic), 0: none
        record.info[_DEADLINE] = cell
        dbapi_conn.set_progress_handler(lambda: 1 if cell[0] and time.monotonic() > cell[0] else 0,
                                        _PROGRESS_STEPS)

    def before(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        cell = conn.info.get(_DEADLINE)
        if cell is not None:
            timed = _READ.match(statement) and not conn.get_execution_options().get(UNTIMED)
            cell[0] = time.monotonic() + seconds if timed else 0.0

    def settle(conn: Connection) -> None:  # a commit or a rollback is never interrupted
        cell = conn.info.get(_DEADLINE)
        if cell is not None:
            cell[0] = 0.0

    event.listen(engine, "connect", connect)
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", settle)
    event.listen(engine, "rollback", settle)


def clear_deadline(conn: Connection) -> None:
    """No time limit for the statement about to run on ``conn`` (one run on the driver's cursor,
    which the ``before_cursor_execute`` event does not see: it would otherwise inherit the
    deadline of the reading statement before it)."""
    cell = conn.info.get(_DEADLINE)
    if cell is not None:
        cell[0] = 0.0


def is_timeout(exc: BaseException) -> bool:
    """Whether a database error is a statement stopped by the time limit of :func:`make_engine`."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig) == "interrupted"
    return getattr(orig, "sqlstate", None) == "57014"  # PostgreSQL query_canceled (statement_timeout)


def make_engine(settings: Settings, url: str | None = None, *,
                statement_seconds: float | None = None, background_checkpoints: bool = False) -> Engine:
    """The engine of a database. ``statement_seconds`` (the server's, not the command line's: a
    migration or a backup may run longer) stops a statement that runs longer: PostgreSQL's
    ``statement_timeout``, on SQLite a progress handler timing reading statements; the error it
    raises is recognised by :func:`is_timeout`. ``background_checkpoints``: on a SQLite file, no
    commit copies the write-ahead log back into the database; a :class:`WalCheckpointer` must."""
    url = url or settings.sqlalchemy_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30,
                                                  "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        if background_checkpoints:
            event.listen(engine, "connect", _no_autocheckpoint)
        event.listen(engine, "begin", _sqlite_begin)
        if statement_seconds:
            _sqlite_statement_limit(engine, statement_seconds)
        return engine
    # psycopg prepares a statement run five times, and PostgreSQL then switches to a generic plan
    # that cannot see the values: a search driven by a rare value (one patient's observations) gets
    # the plan of a common one and costs 20x more. Search plans must look at the values.
    # JIT compilation pays only in long analytic queries: on a search that walks many rows it adds
    # about a second of compiling (measured on Patient?_sort=name over 200,000 patients).
    options = "-c plan_cache_mode=force_custom_plan -c jit=off"
    if statement_seconds:
        options += f" -c statement_timeout={max(int(statement_seconds * 1000), 1)}"
    engine = create_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                           pool_pre_ping=True, connect_args={"options": options})
    if statement_seconds:
        event.listen(engine, "begin", _pg_untimed)
    return engine


def _pg_untimed(conn: Connection) -> None:
    if conn.get_execution_options().get(UNTIMED):
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")


class SqliteWriteLock:
    """Hands SQLite's single write slot from one writer to the next without polling, in turn.

    SQLite's busy handler sleeps in growing steps (up to 100 ms) while another connection
    writes, which turns contention between server processes into second-long tail latencies.
    Writers instead queue on a thread lock (within a process) and an ``flock`` on a file beside the
    database (across processes): the kernel wakes the next writer as soon as the lock is released.

    An ``flock`` alone is not fair: a process that releases it and asks again at once (its next
    group commit, its audit writer's next batch) usually gets it back before the woken waiter
    runs, and the other server process starved: 12 s in a row without the lock while loading the
    directory. So a writer first takes a second lock, the turnstile, and holds it only while it
    waits for the write lock: the writer that just released must pass the turnstile to ask again,
    and the one already waiting there holds it. Two processes that both write all the time take
    turns (tests/unit/db/test_write_lock.py).
    """

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".writelock")
        self.turnstile_path = db_path.with_name(db_path.name + ".writelock-turn")
        self.thread_lock = threading.Lock()
        self.fd: int | None = None
        self.turnstile: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self.thread_lock:
            if self.fd is None or self.turnstile is None:
                self.turnstile = os.open(self.turnstile_path, os.O_RDWR | os.O_CREAT, 0o600)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.turnstile, fcntl.LOCK_EX)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(self.turnstile, fcntl.LOCK_UN)
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
    rerunnable: bool = False
    done: bool = False
    result: T | None = None
    error: BaseException | None = None


class _JobFailed(Exception):
    """A job of a batch run without savepoints raised: the whole try is rolled back."""


class GroupCommit:
    """Runs the write transactions of one process through SQLite's single write slot, many per commit.

    A writer enqueues its work and queues for the leader's seat. Whoever holds the seat takes every
    waiting job, opens one transaction (under :func:`write_lock`), runs each job in its own savepoint
    (a job that raises is rolled back alone and gets its exception back), commits once, and hands
    the seat on; a writer whose job was done by an earlier leader returns at once. No job's result
    is released before the commit that made it durable. Parsing and validation stay outside: only
    the database work of a request runs here.

    A savepoint is not free in SQLite: every page a job changes is first copied to the statement
    sub-journal (0.25-0.45 ms per single-resource write, 15-20 % of it; bench/write_local.py). So a
    batch whose jobs are all *rerunnable* (their work starts from their own unchanged input each
    time it is called, as the FHIR router's single-resource writes do) first runs without
    savepoints; if one of them raises, that try is rolled back and the batch runs again the way
    above, each job in its savepoint. The outcome is the same either way; a failing job costs its
    batch one more run.
    """

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.seat = threading.Lock()
        self.guard = threading.Lock()
        self.pending: list[_Job[Any]] = []

    def run(self, work: Callable[[Connection], T], *, rerunnable: bool = False) -> T:
        job: _Job[T] = _Job(work, rerunnable)
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
            if len(batch) > 1 and all(job.rerunnable for job in batch):
                try:
                    self._run(batch, savepoints=False)
                    return
                except _JobFailed:
                    for job in batch:
                        job.result = job.error = None
            self._run(batch, savepoints=len(batch) > 1)
        except Exception as exc:  # the commit (or the one job of a batch of one) failed
            for job in batch:
                if job.error is None:
                    job.error = exc
                    job.result = None
        finally:
            for job in batch:
                job.done = True

    def _run(self, batch: list[_Job[Any]], *, savepoints: bool) -> None:
        with write_lock(self.engine), self.engine.connect() as conn:
            conn.execution_options(carnet_write=True)
            with conn.begin():
                for job in batch:
                    if not savepoints:
                        try:
                            job.result = job.work(conn)
                        except Exception as exc:
                            if len(batch) > 1:
                                raise _JobFailed from exc
                            job.error = exc
                            raise
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        job.result = job.work(conn)
                    except Exception as exc:
                        job.error = exc
                        savepoint.rollback()
                    else:
                        savepoint.commit()


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


def run_write(engine: Engine, work: Callable[[Connection], T], *, rerunnable: bool = False) -> T:
    """Run ``work`` in a write transaction: through the process's group committer on a SQLite
    file, else in a transaction of its own (under :func:`write_lock`). ``rerunnable``: ``work``
    may be called again after a rolled-back try, and starts afresh (see :class:`GroupCommit`)."""
    group = committer(engine)
    if group is not None:
        return group.run(work, rerunnable=rerunnable)
    with write_lock(engine), engine.connect() as conn:
        conn.execution_options(carnet_write=True)
        with conn.begin():
            return work(conn)
