"""The audit sink that feeds the transparency log: AuditEvents become rows of ``audit_events``,
queued there for the sequencer (:mod:`carnet.ledger.sequencer`) in the transaction they record.

Where the transaction can write (every PostgreSQL transaction; SQLite write transactions) the
rows go in with the change. A SQLite read transaction holds no write lock, so the rows of a read
wait in the request's trail and are written before the response leaves: by :class:`AuditWriter`
for an HTTP request (many requests' rows share one commit), else by the router itself. Denials and
failures always wait in the trail: their transaction is rolled back, the record of the attempt
must not be.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text

from carnet.audit import AuditRecord
from carnet.audit.events import agent_of, build_events, canonical
from carnet.audit.spool import COLUMNS, Ingested, Spool, spool_of
from carnet.auth.principal import Kind, Principal
from carnet.config import Settings
from carnet.db.engine import run_write
from carnet.fhir.values import now_us

# PostgreSQL: the row and its place in the queue in one statement (one round trip per row batch)
PG_INSERT = text(f"WITH e AS (INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES "
                 f"({', '.join(':' + c for c in COLUMNS)}) RETURNING seq) "
                 "INSERT INTO audit_pending (seq) SELECT seq FROM e")
# SQLite: driver SQL (the rows of many requests go in at once; SQLAlchemy's per-row work would cost
# more than SQLite does), then their place in the queue
SQLITE_ROWS = f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
SQLITE_QUEUE = "INSERT INTO audit_pending (seq) SELECT seq FROM audit_events WHERE id = ?"


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write audit rows and queue them for the sequencer, in the caller's transaction."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(PG_INSERT, rows)
    else:
        conn.exec_driver_sql(SQLITE_ROWS, [tuple(r[c] for c in COLUMNS) for r in rows])
        conn.exec_driver_sql(SQLITE_QUEUE, [(r["id"],) for r in rows])


def _is_id(value: str) -> bool:
    return 0 < len(value) <= 64 and "\x00" not in value


class LedgerAudit:
    def __init__(self, engine: Engine, spool: Spool | None = None) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.writer = AuditWriter(self)
        self.spool = spool if self.sqlite else None

    def rows(self, principal: Principal, entry: AuditRecord) -> list[dict[str, Any]]:
        when = now_us()
        # the columns hold what PostgreSQL can (no NUL, their lengths; the event in ``content`` keeps
        # everything): a patient id that no FHIR id can be (a hostile path's) names no record
        agent = agent_of(principal)[:128].replace("\x00", "")
        return [{"id": event["id"], "recorded": when,
                 "patient_id": patient if patient is None or _is_id(patient) else None, "agent": agent,
                 "action": event["action"], "subtype": entry.interaction.replace("\x00", "")[:32],
                 "outcome": entry.outcome, "content": canonical(event)}
                for patient, event in build_events(principal, entry, when)]

    def _writable(self, conn: Connection) -> bool:
        return not self.sqlite or bool(conn.get_execution_options().get("carnet_write"))

    def record(self, conn: Connection | None, principal: Principal, entry: AuditRecord,
               later: list[dict[str, Any]] | None = None) -> None:
        rows = self.rows(principal, entry)
        if later is not None and (entry.outcome != 0 or conn is None or not self._writable(conn)):
            later.extend(rows)
        elif conn is not None and self._writable(conn):
            insert_rows(conn, rows)
        else:
            self.write(rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write rows in a transaction of their own (a read's or a failure's trail)."""
        if rows:
            run_write(self.engine, lambda conn: insert_rows(conn, rows))

    async def write_async(self, rows: list[dict[str, Any]]) -> None:
        """:meth:`write` from a coroutine: appended to the spool (one ``write`` call, the
        sequencer moves them into the database), else sharing a commit with other requests' rows."""
        if self.spool is not None:
            self.spool.append(rows)
        else:
            await self.writer.write(rows)

    def flush(self) -> int:
        """Move the spool's rows into the database now (before the audit trail is read), as the
        sequencer's next run would; how many rows were moved."""
        if self.spool is None or not self.spool.waiting():
            return 0
        return ingest_now(self.engine, self.spool)

    def record_now(self, principal: Principal, entry: AuditRecord) -> None:
        """Record something done outside any FHIR transaction (a sign-in, a command of the operator)."""
        self.write(self.rows(principal, entry))


def ingest_now(engine: Engine, spool: Spool, max_rows: int = 50_000) -> int:
    """Move up to ``max_rows`` rows of the spool into ``audit_events`` in a write transaction
    (SQLite: no spool is kept for PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return 0
    done: list[Ingested] = []

    def work(conn: Connection) -> None:
        for earlier in done:  # a job run again after a failed batch: that try was rolled back
            spool.finish(earlier, committed=False)
        done[:] = [spool.ingest(conn, max_rows)]

    committed = False
    try:
        run_write(engine, work)
        committed = True
    finally:
        for d in done:
            spool.finish(d, committed)
    return sum(d.rows for d in done)


def take_in(settings: Settings, engine: Engine) -> int:
    """Move every row waiting in the data folder's spool into the database (a command that
    needs the whole trail in the database: ``carnet backup``, ``carnet journal seal``)."""
    spool = spool_of(settings)
    if spool is None or engine.dialect.name != "sqlite" or not spool.waiting():
        return 0
    return ingest_now(engine, spool, max_rows=10**9)


def record_admin(settings: Settings, engine: Engine, action: str, detail: dict[str, str], *,
                 patient: str | None = None) -> None:
    """Trace a command of the operator (``carnet client add``, ``carnet keys rotate``...): who ran
    it (the system account of the shell), what, and on which record if any. Never a secret in
    ``detail``."""
    if not settings.audit:
        return
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    who = Principal(Kind.OPERATOR, f"cli:{user}", display=f"carnet command ({user})")
    LedgerAudit(engine).record_now(who, AuditRecord(f"admin:{action}", 0, patient=patient, detail=detail))


class AuditWriter:
    """Writes the audit rows of many requests in one transaction, from a thread of its own.

    A read on SQLite holds no write lock, so its rows are written after it; a request thread that
    waited for that commit would sit idle in the server's small thread pool, and reads would queue
    behind commits. Instead the request hands its rows here and its coroutine awaits the commit
    (:meth:`write`): no thread waits, and every row queued meanwhile shares the next commit. The
    response still leaves only once its rows are durable; if they cannot be written, it does not
    leave at all (the caller answers 503).
    """

    def __init__(self, sink: LedgerAudit) -> None:
        self.sink = sink
        self.queue: list[tuple[list[dict[str, Any]], Callable[[BaseException | None], None]]] = []
        self.ready = threading.Condition()
        self.thread: threading.Thread | None = None
        self.pid = 0

    def submit(self, rows: list[dict[str, Any]], done: Callable[[BaseException | None], None]) -> None:
        with self.ready:
            if self.thread is None or self.pid != os.getpid():  # started lazily, once per process
                self.pid = os.getpid()
                self.thread = threading.Thread(target=self._loop, name="carnet-audit-writer", daemon=True)
                self.thread.start()
            self.queue.append((rows, done))
            self.ready.notify()

    def _loop(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                batch, self.queue = self.queue, []
            error: BaseException | None = None
            try:
                self.sink.write([row for rows, _ in batch for row in rows])
            except Exception as exc:  # each waiting request learns its rows were not written
                error = exc
            for _, done in batch:
                done(error)

    async def write(self, rows: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if not settled.done():
                if error is None:
                    settled.set_result(None)
                else:
                    settled.set_exception(error)

        def done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, error)

        self.submit(rows, done)
        await settled
