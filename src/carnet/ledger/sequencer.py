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
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, text

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
PENDING = ("SELECT p.seq, a.content FROM audit_pending p JOIN audit_events a ON a.seq = p.seq "
           "ORDER BY p.seq LIMIT {limit}")
SQLITE_NODES = "INSERT INTO ledger_nodes (height, idx, hash, seq) VALUES (?, ?, ?, ?)"
SQLITE_DONE = "DELETE FROM audit_pending WHERE seq <= ?"  # one writer: the batch is the queue's head
PG_NODES = ("INSERT INTO ledger_nodes (height, idx, hash, seq) SELECT * FROM unnest("
            "%b::int[], %b::bigint[], %b::bytea[], %b::bigint[])")  # %b: sent in binary, no escaping
PG_DONE = "DELETE FROM audit_pending WHERE seq = ANY(%b::bigint[])"  # rows only: lower ones may commit now


@dataclass
class Progress:
    sequenced: int = 0
    size: int = 0
    checkpoint: int | None = None  # the size of the checkpoint signed by this run, if any


class Sequencer:
    def __init__(self, engine: Engine, signer: NoteSigner, origin: str, *, batch: int = 5000,
                 checkpoint_seconds: float = 2.0) -> None:
        self.engine = engine
        self.signer = signer
        self.origin = origin
        self.batch = batch
        self.checkpoint_us = int(checkpoint_seconds * 1_000_000)
        self.postgres = engine.dialect.name == "postgresql"
        self._edge: Appender | None = None  # the tree's right edge after the last run's commit
        self._last_leaf: bytes | None = None  # and the hash of its last leaf
        self._guard = threading.Lock()

    # -- one run ---------------------------------------------------------------------------------
    def run(self, *, force_checkpoint: bool = False) -> Progress:
        """Sequence one batch of pending rows and, when the tree grew since the last checkpoint
        and the interval has passed (or ``force_checkpoint``), sign a new checkpoint."""
        with self._guard:
            progress = Progress()
            edge_after: list[Appender] = []
            self._pending_last: bytes | None = None

            def work(conn: Connection) -> Progress:
                if self.postgres:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                edge = self._load_edge(conn)
                progress.sequenced = self._append(conn, edge)
                progress.size = edge.size
                progress.checkpoint = self._maybe_checkpoint(conn, edge, force_checkpoint)
                edge_after.append(edge)
                return progress

            try:
                run_write(self.engine, work)
            except BaseException:
                self._edge = None  # the edge in memory may be ahead of the rolled-back tree
                raise
            self._edge = edge_after[0]
            self._last_leaf = self._pending_last
            return progress

    def drain(self, *, checkpoint: bool = True) -> Progress:
        """Sequence everything pending (then sign a checkpoint): for tests and the command line."""
        total = Progress()
        while True:
            step = self.run(force_checkpoint=False)
            total.sequenced += step.sequenced
            total.size = step.size
            total.checkpoint = step.checkpoint or total.checkpoint
            if step.sequenced < self.batch:
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
        rows = conn.exec_driver_sql(PENDING.format(limit=int(self.batch))).fetchall()
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
        self._pending_last = digest or self._pending_last
        if self.postgres:
            conn.exec_driver_sql(PG_NODES, (heights, idxs, hashes, seqs))
            conn.exec_driver_sql(PG_DONE, ([r[0] for r in rows],))
        else:
            conn.exec_driver_sql(SQLITE_NODES, list(zip(heights, idxs, hashes, seqs, strict=True)))
            conn.exec_driver_sql(SQLITE_DONE, (rows[-1][0],))
        return len(rows)

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


class LedgerWorker:
    """Runs the sequencer in a background thread of a server process: a run as soon as the last
    one found a full batch, else every ``interval`` seconds. Several processes may each run one."""

    def __init__(self, sequencer: Sequencer, interval: float = 0.5) -> None:
        self.sequencer = sequencer
        self.interval = interval
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="carnet-ledger", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                progress = self.sequencer.run()
            except Exception:  # the next run retries; the rows wait in the queue meanwhile
                log.exception("the ledger sequencer failed; retrying")
                self.stopping.wait(5 * self.interval)
                continue
            if progress.sequenced < self.sequencer.batch:
                self.stopping.wait(self.interval)
            else:
                time.sleep(0)  # let request threads in between two full batches
