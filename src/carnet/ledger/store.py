"""The Merkle log in the database: tree nodes, leaves and checkpoints (tables ``ledger_nodes``,
``audit_events``, ``ledger_checkpoints``).

Complete nodes never change once written, so a process keeps the ones it has read in a bounded
cache: the upper levels of the tree, shared by every proof, are read from the database once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, TextClause, func, select, text

from carnet.db.tables import audit_events, ledger_checkpoints, ledger_nodes

CACHE_MAX = 200_000  # nodes (32 bytes each, ~25 MB with the dict's overhead)
_cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_key(conn: Connection) -> str:
    return str(conn.engine.url)


class DbNodes:
    """:class:`carnet.ledger.merkle.NodeReader` over ``ledger_nodes``: one query for every node
    a proof needs that the cache does not hold."""

    def __init__(self, conn: Connection, *, cached: bool = True) -> None:
        self.conn = conn
        self.key = _cache_key(conn)
        self.cached = cached  # False for a verifier, which trusts nothing remembered

    def nodes(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        found: dict[tuple[int, int], bytes] = {}
        missing = []
        with _cache_lock:
            for h, i in wanted:
                got = _cache.get((self.key, h, i)) if self.cached else None
                if got is None:
                    missing.append((h, i))
                else:
                    found[(h, i)] = got
        pg = self.conn.dialect.name == "postgresql"
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            if pg:
                rows = self.conn.execute(_PG_WANTED, {"hs": [h for h, _ in chunk],
                                                      "is": [i for _, i in chunk]}).all()
            else:
                rows = self.conn.execute(_wanted_nodes(len(chunk)),
                                         {f"{k}{n}": v for n, pair in enumerate(chunk)
                                          for k, v in zip("hi", pair, strict=True)}).all()
            with _cache_lock:
                for r in rows:
                    found[(r.height, r.idx)] = bytes(r.hash)
                    if self.cached:
                        _cache[(self.key, r.height, r.idx)] = bytes(r.hash)
                while len(_cache) > CACHE_MAX:
                    _cache.popitem(last=False)
        absent = [w for w in wanted if w not in found]
        if absent:
            raise LookupError(f"the log has no node {absent[0]}: it is smaller than asked")
        return found


@lru_cache(maxsize=128)
def _wanted_nodes(count: int) -> TextClause:
    """The nodes of ``count`` (height, idx) pairs, joined from a VALUES list: SQLite plans
    ``(height, idx) IN (...)`` as a scan of the whole table (seconds at 10 million leaves), the
    join as one primary-key probe per node, and PostgreSQL likewise."""
    pairs = ", ".join(f"(CAST(:h{n} AS INTEGER), CAST(:i{n} AS BIGINT))" for n in range(count))
    return text(f"WITH w(h, i) AS (VALUES {pairs}) SELECT n.height, n.idx, n.hash FROM w "
                "JOIN ledger_nodes n ON n.height = w.h AND n.idx = w.i")


# PostgreSQL: the pairs as two arrays, one statement text whatever their number. Planned on every
# run (plan_cache_mode=force_custom_plan, for searches), the VALUES list of a proof's ~24 pairs
# took 1.5 ms to plan and this 0.09 ms.
_PG_WANTED = text("SELECT n.height, n.idx, n.hash FROM unnest(CAST(:hs AS INTEGER[]), CAST(:is AS BIGINT[])) "
                  "AS w(h, i) JOIN ledger_nodes n ON n.height = w.h AND n.idx = w.i")


def forget_cached_nodes() -> None:
    """Empty the node cache and the signed sizes known (a test that rewrites the tables under a
    running process)."""
    with _cache_lock:
        _cache.clear()
        _signed_sizes.clear()


_signed_sizes: dict[str, int] = {}  # database -> the largest checkpoint size seen signed


def is_signed_size(conn: Connection, size: int) -> bool:
    """Whether a checkpoint covers ``size`` leaves (0 < size <= the latest checkpoint's size).
    Checkpoints only grow, so the latest size seen is remembered and the database is asked
    again only for a larger one (a proof request costs one statement, not two)."""
    if size < 1:
        return False
    key = _cache_key(conn)
    if size <= _signed_sizes.get(key, 0):
        return True
    latest = latest_checkpoint(conn)
    if latest is None:
        return False
    with _cache_lock:
        _signed_sizes[key] = max(_signed_sizes.get(key, 0), latest.size)
    return size <= latest.size


def tree_size(conn: Connection) -> int:
    """How many leaves the log holds (the next leaf's index)."""
    last = conn.execute(select(func.max(ledger_nodes.c.idx)).where(ledger_nodes.c.height == 0)).scalar()
    return 0 if last is None else int(last) + 1


def leaves(start: int, end: int) -> Select[Any]:
    """(leaf_index, recorded hash, seq, content, patient_id) of the leaves [start, end) in order,
    with the audit row each one points at (content None where that row is gone)."""
    n, a = ledger_nodes.c, audit_events.c
    return (select(n.idx.label("leaf_index"), n.hash, n.seq, a.content, a.patient_id)
            .select_from(ledger_nodes.outerjoin(audit_events, a.seq == n.seq))
            .where(n.height == 0, n.idx >= start, n.idx < end).order_by(n.idx))


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    created_at: int
    note: str


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    t = ledger_checkpoints.c
    row = conn.execute(select(t.size, t.root, t.created_at, t.note).order_by(t.size.desc()).limit(1)).first()
    return None if row is None else StoredCheckpoint(row.size, bytes(row.root), row.created_at, row.note)


def checkpoints(conn: Connection, after: int = -1, limit: int = 1000) -> list[StoredCheckpoint]:
    """Stored checkpoints of sizes greater than ``after``, smallest first."""
    t = ledger_checkpoints.c
    rows = conn.execute(select(t.size, t.root, t.created_at, t.note).where(t.size > after)
                        .order_by(t.size).limit(limit)).all()
    return [StoredCheckpoint(r.size, bytes(r.root), r.created_at, r.note) for r in rows]




def index_of_hash(conn: Connection, leaf_hash: bytes) -> int | None:
    """The index of the leaf whose hash this is (the log's own record of it, height 0)."""
    t = ledger_nodes.c
    return conn.execute(select(t.idx).where(t.height == 0, t.hash == leaf_hash).limit(1)).scalar()
