"""The sequencer: gives queued audit rows their place in the Merkle log and signs checkpoints.

One sequencer runs at a time over a database: on PostgreSQL it holds a transaction-scoped
advisory lock, so several server processes (on several machines) share one log; on SQLite it runs
in the single writers' queue. It reads the rows still without an index in insertion order (only
committed rows are visible to it, so a row committed later gets a later index: the log's order is
commit order), numbers them after the current tree size without gaps, and stores the leaf hashes
and every tree node they complete. The right edge of the tree is kept in memory between runs and
rebuilt from the stored nodes when another process has moved the tree on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from carnet.audit.spool import Ingested, Spool
from carnet.background import Background
from carnet.db.engine import run_write
from carnet.db.tables import ledger_checkpoints, ledger_nodes
from carnet.fhir.values import now_us
from carnet.ledger.merkle import Appender, leaf_hash
from carnet.ledger.note import NoteSigner, format_checkpoint
from carnet.ledger.store import DbNodes, latest_checkpoint, tree_size

log = logging.getLogger("carnet.ledger")

LOCK_KEY = 0x6361726E6574  # "carnet": the advisory lock of the one sequencer
# The statements of a run, as driver SQL: a run writes tens of thousands of rows, and SQLAlchemy's
# per-row parameter processing would cost more than the database does.
SQLITE_PENDING = ("SELECT p.seq, a.content FROM audit_pending p JOIN audit_events a ON a.seq = p.seq "
                  "ORDER BY p.seq LIMIT {limit}")
SQLITE_NODES = "INSERT INTO ledger_nodes (height, idx, hash, seq) VALUES (?, ?, ?, ?)"
SQLITE_DONE = "DELETE FROM audit_pending WHERE seq <= ?"  # one writer: the batch is the queue's head
# PostgreSQL: the first pending seqs from the queue's primary key, then one probe each into
# audit_events (the plain join is planned as a merge join reading audit_events from its first row,
# every run); the server hashes each leaf, SHA-256(0x00 || content) as leaf_hash does, so 32 bytes
# a row come back (in binary) instead of the ~2 KB row spelled in hex.
PG_PENDING = ("SELECT p.seq, sha256(decode('00', 'hex') || a.content) "
              "FROM (SELECT seq FROM audit_pending ORDER BY seq LIMIT {limit}) p "
              "JOIN audit_events a ON a.seq = p.seq ORDER BY p.seq")
PG_NODES = "COPY ledger_nodes (height, idx, hash, seq) FROM STDIN (FORMAT BINARY)"
PG_NODE_TYPES = ("int4", "int8", "bytea", "int8")
PG_DONE = "DELETE FROM audit_pending WHERE seq = ANY(%b::bigint[])"  # rows only: lower ones may commit now
# Rows a run takes: on PostgreSQL writers go on beside the sequencer's transaction; on SQLite it
# holds the one write lock all along (0.15-0.25 s for 5,000 rows here).
BATCH_POSTGRES = 20_000
BATCH_SQLITE = 5_000


@dataclass
class Progress:
    sequenced: int = 0
    size: int = 0
    checkpoint: int | None = None  # the size of the checkpoint signed by this run, if any
    ingested: int = 0  # rows moved from the audit spool into the database by this run


class Sequencer:
    def __init__(self, engine: Engine, signer: NoteSigner, origin: str, *, batch: int | None = None,
                 checkpoint_seconds: float = 2.0, spool: Spool | None = None) -> None:
        self.engine = engine
        self.spool = spool if engine.dialect.name == "sqlite" else None  # read rows waiting in files
        self.signer = signer
        self.origin = origin
        self.postgres = engine.dialect.name == "postgresql"
        self.batch = batch or (BATCH_POSTGRES if self.postgres else BATCH_SQLITE)
        self.checkpoint_us = int(checkpoint_seconds * 1_000_000)
        self._edge: Appender | None = None  # the tree's right edge after the last run's commit
        self._last_leaf: bytes | None = None  # and the hash of its last leaf
        self._guard = threading.Lock()
        self.unsigned = True  # leaves may be sequenced that no checkpoint signs yet (unknown at first)

    # -- one run ---------------------------------------------------------------------------------
    def run(self, *, force_checkpoint: bool = False) -> Progress:
        """Sequence one batch of pending rows and, when the tree grew since the last checkpoint
        and the interval has passed (or ``force_checkpoint``), sign a new checkpoint."""
        with self._guard:
            progress = Progress()
            edge_after: list[Appender] = []
            self._pending_last: bytes | None = None
            ingested: list[Ingested] = []

            def work(conn: Connection) -> Progress:
                if self.postgres:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                edge = self._load_edge(conn)
                progress.sequenced = self._append(conn, edge)  # the queue's rows: committed before
                if self.spool is not None and progress.sequenced < self.batch:
                    # then the spool's, numbered as they go in (they never wait in the queue)
                    for earlier in ingested:  # a job run again after a failed batch was rolled back
                        self.spool.finish(earlier, committed=False)
                    ingested[:] = [self.spool.ingest(conn, self.batch - progress.sequenced, queue=False)]
                    progress.ingested = ingested[0].rows
                    progress.sequenced += self._store_leaves(conn, edge, ingested[0].leaves)
                progress.size = edge.size
                progress.checkpoint = self._maybe_checkpoint(conn, edge, force_checkpoint)
                edge_after.append(edge)
                return progress

            committed = False
            try:
                run_write(self.engine, work)
                committed = True
            except BaseException:
                self._edge = None  # the edge in memory may be ahead of the rolled-back tree
                raise
            finally:
                if self.spool is not None:
                    for done in ingested:
                        self.spool.finish(done, committed)
            self._edge = edge_after[0]
            self._last_leaf = self._pending_last
            if progress.checkpoint is not None:
                self.unsigned = False
            elif progress.sequenced:
                self.unsigned = True
            return progress

    def more(self, step: Progress) -> bool:
        """Whether rows were left for another run at once: a full batch, or a spool not read to
        its end (a run reads a bounded part of each file)."""
        return step.sequenced >= self.batch or bool(
            step.ingested and self.spool is not None and self.spool.waiting())

    def has_pending(self) -> bool:
        """Whether audit rows wait to be sequenced (a read: no lock taken)."""
        if self.spool is not None and self.spool.waiting():
            return True
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT 1 FROM audit_pending LIMIT 1").first() is not None

    def drain(self, *, checkpoint: bool = True) -> Progress:
        """Sequence everything pending (then sign a checkpoint): for tests and the command line."""
        total = Progress()
        while True:
            step = self.run(force_checkpoint=False)
            total.sequenced += step.sequenced
            total.size = step.size
            total.checkpoint = step.checkpoint or total.checkpoint
            total.ingested += step.ingested
            if not self.more(step):
                break
        if checkpoint:
            step = self.run(force_checkpoint=True)
            total.size = step.size
            total.checkpoint = step.checkpoint or total.checkpoint
        return total


    def _load_edge(self, conn: Connection) -> Appender:
        """The tree's right edge: the one kept from the last run when the tree is still the one it
        left (same size, same last leaf), else rebuilt from the stored nodes."""
        size = tree_size(conn)
        last = None if size == 0 else conn.execute(select(ledger_nodes.c.hash).where(
            ledger_nodes.c.height == 0, ledger_nodes.c.idx == size - 1)).scalar()
        self._pending_last = None if last is None else bytes(last)
        edge = self._edge
        if edge is not None and edge.size == size and self._pending_last == self._last_leaf:
            return edge
        return Appender.from_nodes(size, DbNodes(conn))

    def _append(self, conn: Connection, edge: Appender) -> int:
        return self._append_postgres(conn, edge) if self.postgres else self._append_sqlite(conn, edge)

    def _append_sqlite(self, conn: Connection, edge: Appender) -> int:
        rows = conn.exec_driver_sql(SQLITE_PENDING.format(limit=int(self.batch))).fetchall()
        if not rows:
            return 0
        self._store_leaves(conn, edge, rows)
        conn.exec_driver_sql(SQLITE_DONE, (rows[-1][0],))
        return len(rows)

    def _store_leaves(self, conn: Connection, edge: Appender, rows: Sequence[tuple[int, bytes]]) -> int:
        """Append the rows (seq, content), in order, and store every node they complete (SQLite)."""
        if not rows:
            return 0
        heights: list[int] = []
        idxs: list[int] = []
        hashes: list[bytes] = []
        seqs: list[int | None] = []
        digest = b""
        append = edge.append
        for seq, content in rows:
            digest = leaf_hash(bytes(content))
            for height, idx, node in append(digest):
                heights.append(height)
                idxs.append(idx)
                hashes.append(node)
                seqs.append(seq if height == 0 else None)
        self._pending_last = digest
        conn.exec_driver_sql(SQLITE_NODES, list(zip(heights, idxs, hashes, seqs, strict=True)))
        return len(rows)

    def _append_postgres(self, conn: Connection, edge: Appender) -> int:
        driver: Any = conn.connection.driver_connection  # psycopg, in the transaction of ``conn``
        rows = self._pg_pending(driver)
        if not rows:
            return 0
        nodes: list[tuple[int, int, bytes, int | None]] = []
        add = nodes.append
        append = edge.append
        for seq, digest in rows:
            completed = append(digest)
            add((0, completed[0][1], digest, seq))
            for height, idx, node in completed[1:]:
                add((height, idx, node, None))
        self._pending_last = rows[-1][1]
        self._pg_store(driver, nodes)
        conn.exec_driver_sql(PG_DONE, ([seq for seq, _ in rows],))
        return len(rows)

    # psycopg itself, for what SQLAlchemy does not offer: results in binary, and COPY
    def _pg_pending(self, driver: Any) -> list[tuple[int, bytes]]:
        """(seq, leaf hash) of the next pending rows, in seq order."""
        with driver.cursor(binary=True) as cursor:
            cursor.execute(PG_PENDING.format(limit=int(self.batch)))
            rows: list[tuple[int, bytes]] = cursor.fetchall()
        return rows

    def _pg_store(self, driver: Any, nodes: list[tuple[int, int, bytes, int | None]]) -> None:
        with driver.cursor() as cursor, cursor.copy(PG_NODES) as copy:
            copy.set_types(PG_NODE_TYPES)
            write = copy.write_row
            for row in nodes:
                write(row)

    def _maybe_checkpoint(self, conn: Connection, edge: Appender, force: bool) -> int | None:
        last = latest_checkpoint(conn)
        if edge.size == 0 or (last is not None and last.size >= edge.size):
            return None
        now = now_us()
        if not force and last is not None and now - last.created_at < self.checkpoint_us:
            return None
        root = edge.root()
        note = self.signer.sign(format_checkpoint(self.origin, edge.size, root))
        conn.execute(insert(ledger_checkpoints).values(size=edge.size, root=root, created_at=now, note=note))
        return edge.size


class LedgerWorker(Background):
    """Runs the sequencer in a background thread of a server process: a run as soon as the last
    one found a full batch, else every ``interval`` seconds (when rows wait, or a checkpoint is
    to sign). Several processes may each run one.

    On SQLite a run holds the one write lock. Where reads' rows go in through the database
    (no audit spool) every request's rows wait for it: the interval there is short (0.1 s), so
    that a run has a few tens of rows, not hundreds (at 500 requests/s with 0.5 s, one request in
    a hundred waited ~10 ms more for the run). With the spool only writes wait for a run, which
    moves and numbers a row in ~16 us (a run of 4,000 in 62 ms): the interval is 1 s, because each
    run slows the server's reads beyond its own cost (reads audited / not audited over HTTP, 64
    connections: 0.65-0.67 with runs every 0.1 or 0.5 s, 0.78 every 1 s, 0.80 every 2 s)."""

    name = "carnet-ledger"
    failure = "the ledger sequencer failed; retrying"  # the rows wait in the queue meanwhile

    def __init__(self, sequencer: Sequencer, interval: float | None = None) -> None:
        every = interval if interval is not None else (
            0.5 if sequencer.postgres else 1.0 if sequencer.spool is not None else 0.1)
        super().__init__(every, retry_after=5 * every, logger=log)
        self.sequencer = sequencer

    def step(self) -> bool:
        if not self.sequencer.unsigned and not self.sequencer.has_pending():
            return False  # nothing to do: no write lock taken
        return self.sequencer.more(self.sequencer.run())
