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

from sqlalchemy import Connection, Engine, bindparam, insert, select, text, update

from carnet.db.engine import committer, write_lock
from carnet.db.tables import audit_events, ledger_checkpoints, ledger_nodes
from carnet.fhir.values import now_us
from carnet.ledger.merkle import Appender, leaf_hash
from carnet.ledger.note import NoteSigner, format_checkpoint
from carnet.ledger.store import DbNodes, latest_checkpoint, tree_size

log = logging.getLogger("carnet.ledger")

LOCK_KEY = 0x6361726E6574  # "carnet": the advisory lock of the one sequencer
PENDING = (select(audit_events.c.seq, audit_events.c.content)
           .where(audit_events.c.leaf_index.is_(None)).order_by(audit_events.c.seq))
SET_INDEX = (update(audit_events).where(audit_events.c.seq == bindparam("s"))
             .values(leaf_index=bindparam("i")))
INSERT_NODE = insert(ledger_nodes)
PG_SET_INDEX = text("UPDATE audit_events SET leaf_index = v.i FROM unnest(CAST(:seqs AS bigint[]), "
                    "CAST(:idxs AS bigint[])) AS v(s, i) WHERE audit_events.seq = v.s")


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
                self._transaction(work)
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

    def _transaction(self, work: object) -> None:
        assert callable(work)
        group = committer(self.engine)
        if group is not None:
            group.run(work)
            return
        with write_lock(self.engine), self.engine.connect() as conn:
            conn.execution_options(carnet_write=True)
            with conn.begin():
                work(conn)

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
        rows = conn.execute(PENDING.limit(self.batch)).all()
        if not rows:
            return 0
        seqs, idxs, nodes = [], [], []
        digest = b""
        for row in rows:
            idxs.append(edge.size)
            seqs.append(row.seq)
            digest = leaf_hash(bytes(row.content))
            for height, idx, node in edge.append(digest):
                nodes.append({"height": height, "idx": idx, "hash": node})
        self._pending_last = digest or self._pending_last
        if self.postgres:
            conn.execute(PG_SET_INDEX, {"seqs": seqs, "idxs": idxs})
        else:
            conn.execute(SET_INDEX, [{"s": s, "i": i} for s, i in zip(seqs, idxs, strict=True)])
        conn.execute(INSERT_NODE, nodes)
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
