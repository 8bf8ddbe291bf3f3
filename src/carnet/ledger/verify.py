"""Checking a log: ``carnet verify`` (a whole log) and ``carnet verify-proof`` (one entry).

A whole log is checked from its leaves up, trusting nothing but the verifier key:

1. every stored checkpoint's signature, with the key given (never one read from the log itself);
2. the leaves in index order: indices 0, 1, 2... without a gap or a repeat, each leaf's hash equal
   to the hash the sequencer recorded for that index when it sequenced it — an edited, deleted,
   inserted or reordered audit row shows at its own index;
3. the tree recomputed from the leaves: its root at each checkpoint's size equals that
   checkpoint's signed root, so the recorded hashes cannot have been rewritten to match;
4. each checkpoint consistent with the one before it (an RFC 9162 consistency proof).

The first problem found is named with its index. The same checks run against a database
(``--data``) or a server (``--url``: its public checkpoints and proofs, and the entries an
auditor's token may read).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from sqlalchemy import Engine, func, select

from carnet.db.tables import audit_events, audit_pending, ledger_checkpoints, ledger_nodes
from carnet.ledger.merkle import (
    EMPTY_ROOT,
    Appender,
    consistency_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from carnet.ledger.note import NoteError, NoteVerifier, parse_checkpoint
from carnet.ledger.store import DbNodes

FETCH = 20000
LEAVES_SQL = ("SELECT n.idx, a.content, n.hash FROM ledger_nodes n LEFT OUTER JOIN audit_events a "
              "ON a.seq = n.seq WHERE n.height = 0 AND n.idx >= {p} AND n.idx < {p} ORDER BY n.idx")
# PostgreSQL hashes each leaf beside its row (pg_catalog.sha256, PostgreSQL 11 and later): 32 bytes
# cross to the verifier instead of the row, and the server's cores share the hashing. This trusts
# the server no more than reading the rows does: a server that lied about a hash could as well
# serve the original bytes of an edited row; the signed roots are what it cannot forge.
PG_LEAVES_SQL = LEAVES_SQL.replace("a.content",
                                   "pg_catalog.sha256(pg_catalog.decode('00', 'hex') || a.content)")


@dataclass
class Problem:
    index: int | None  # the first leaf concerned; None for a checkpoint-level problem
    what: str

    def __str__(self) -> str:
        return f"index {self.index}: {self.what}" if self.index is not None else self.what


@dataclass
class Report:
    leaves: int = 0
    checkpoints: int = 0
    unsigned: int = 0  # leaves after the last checkpoint: sequenced, not yet covered by a signature
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rate(self) -> float:
        return self.leaves / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class SignedSize:
    size: int
    root: bytes


def check_checkpoints(notes: Iterable[tuple[int, bytes | None, str]], verifier: NoteVerifier,
                      origin: str | None, report: Report) -> list[SignedSize]:
    """The checkpoints whose signature verifies, smallest first; a forged or mismatched one is a
    problem. ``notes`` yields (stored size, stored root or None, note)."""
    good: list[SignedSize] = []
    for size, stored_root, note in notes:
        report.checkpoints += 1
        try:
            cp = parse_checkpoint(verifier.verify(note))
        except NoteError as exc:
            report.problems.append(Problem(None, f"checkpoint of size {size}: {exc}"))
            continue
        if origin is not None and cp.origin != origin:
            report.problems.append(Problem(None, f"checkpoint of size {size}: origin {cp.origin!r}, "
                                                 f"expected {origin!r}"))
            continue
        if cp.size != size or (stored_root is not None and cp.root != stored_root):
            report.problems.append(Problem(None, f"checkpoint of size {size}: its stored size or root "
                                                 "differs from what is signed"))
            continue
        good.append(SignedSize(cp.size, cp.root))
    return good


CHUNK = 1 << 16  # leaves per worker's range: a power of two, so each full range is one complete subtree
_PREFIX = hashlib.sha256(b"\x00")  # leaf hashes: copies of this (cheaper than a new object each)
Row: TypeAlias = tuple[int, bytes | None, bytes | None]
"""(index, leaf bytes or None where the audit row is gone, hash recorded for the index or None when
the source records none)."""


@dataclass
class Scan:
    """What one range of leaves holds, for :func:`merge_scans` to check against the checkpoints."""

    start: int
    count: int = 0  # good leaves from ``start``
    problem: Problem | None = None  # the first bad leaf, which ends the range
    # checkpoint size -> the right edge of [start, size): the complete subtrees, tallest first
    edges: dict[int, list[bytes]] = field(default_factory=dict)
    root: bytes | None = None  # the range's tree when it holds CHUNK good leaves


def _gap(index: int, following: int) -> Problem:
    """No row holds ``index``; the next one holds ``following``."""
    return Problem(index, f"no audit row holds this index (deleted: the next row is index {following})")


def _first_bad(rows: Sequence[Row], expected: int, locate: Callable[[bytes], int | None] | None,
               hashed: bool = False) -> tuple[int, Problem | None]:
    """The slow walk of a batch that failed the fast checks: how many rows are good, and the problem."""
    for good, (index, data, recorded) in enumerate(rows):
        if index != expected + good or data is None:
            if index < expected + good:
                what = "a second audit row holds this index (an inserted row)"
            elif index > expected + good:
                return good, _gap(expected + good, index)
            else:
                what = "the audit row of this leaf is gone (a deleted row)"
            return good, Problem(index, what)
        if hashed:
            digest = data
        else:
            h = _PREFIX.copy()
            h.update(data)
            digest = h.digest()
        if recorded is not None and digest != recorded:
            other = locate(digest) if locate is not None else None
            if other is not None and other != index:
                what = (f"the row holds the entry sequenced at index {other} (rows reordered, or deleted "
                        "and renumbered)")
            else:
                what = ("the row is not what was sequenced at this index (an edited row, or a row "
                        "inserted here)")
            return good, Problem(index, what)
    return len(rows), None


def _batch_digests(rows: Sequence[Row], hashed: bool) -> list[bytes] | None:
    """The leaf hashes of a batch when every leaf is there and equals its record, else None."""
    if hashed:
        digests = [r[1] for r in rows]
    else:
        copy = _PREFIX.copy
        digests = []
        append = digests.append
        for r in rows:
            if r[1] is None:  # the row is gone
                return None
            h = copy()
            h.update(r[1])
            append(h.digest())
    if None in digests or (rows[0][2] is not None and digests != [r[2] for r in rows]):
        return None
    return digests  # type: ignore[return-value]


def scan_leaves(batches: Iterable[Sequence[Row]], start: int, sizes: Sequence[int], *,
                locate: Callable[[bytes], int | None] | None = None, chunk: int = CHUNK,
                hashed: bool = False) -> Scan:
    """Hash the leaves of a range from ``start`` in index order, a batch at a time, and check each
    against the hash recorded for its index; keep the tree's right edge at each checkpoint size of
    ``sizes`` (ascending) that falls in the range. A batch is checked as a whole first (its indices
    run on, every leaf hash equals its record: two list comparisons); only a failing batch is
    walked row by row to name its first bad leaf. With ``hashed`` the rows carry the leaf's hash
    instead of its bytes (computed by the database beside the row)."""
    scan = Scan(start)
    tree = Appender()
    targets = iter([s for s in sizes if s > start])
    target = next(targets, None)
    for rows in batches:
        n = len(rows)
        if not n:
            continue
        expected = start + tree.size
        contiguous = rows[0][0] == expected and [r[0] for r in rows] == list(range(expected, expected + n))
        digests = _batch_digests(rows, hashed) if contiguous else None
        if digests is None:
            good, scan.problem = _first_bad(rows, expected, locate, hashed)
            digests = [r[1] if hashed else leaf_hash(r[1]) for r in rows[:good]]  # type: ignore[misc, arg-type]
        pos = 0
        while target is not None and target - start - tree.size <= len(digests) - pos:
            take = target - start - tree.size
            tree.extend(digests[pos:pos + take])
            pos += take
            scan.edges[target] = tree.edge()
            target = next(targets, None)
        tree.extend(digests[pos:])
        if scan.problem is not None:
            break
    scan.count = tree.size
    if scan.problem is None and tree.size == chunk:
        scan.root = tree.root()
    return scan


def _fold(edge: Sequence[bytes]) -> bytes:
    """The root of the tree whose right edge (complete subtrees, tallest first) this is."""
    if not edge:
        return EMPTY_ROOT
    h = edge[-1]
    for left in reversed(edge[:-1]):
        h = node_hash(left, h)
    return h


def merge_scans(scans: Iterable[Scan], signed: list[SignedSize], report: Report, chunk: int = CHUNK) -> None:
    """Check consecutive ranges' scans against the signed checkpoints, in index order: the root
    at each checkpoint size is the edge of the full ranges before it followed by the edge inside
    its own range (every range but the last is a complete, aligned subtree)."""
    targets = iter(signed)
    target = next(targets, None)
    while target is not None and target.size == 0:  # the empty tree's root is fixed
        if target.root != EMPTY_ROOT:
            report.problems.append(Problem(0, "the signed checkpoint of size 0 is not the empty tree"))
            return
        target = next(targets, None)
    before: list[tuple[int, bytes]] = []  # (height, hash) of the full ranges' subtrees, tallest first
    covered = 0  # leaves under the last checkpoint matched
    size = 0
    height = chunk.bit_length() - 1
    for scan in scans:
        if scan.start != size:
            raise AssertionError(f"ranges out of order: {scan.start} after {size}")
        while target is not None and target.size <= scan.start + scan.count:
            if _fold([h for _, h in before] + scan.edges[target.size]) != target.root:
                # rows and their recorded hashes both rewritten
                report.problems.append(Problem(
                    covered, f"an entry from index {covered} to {target.size - 1} was changed: the tree "
                             f"does not match the signed checkpoint of size {target.size}"))
                report.leaves = target.size
                return
            covered = target.size
            target = next(targets, None)
        size = scan.start + scan.count
        if scan.problem is not None:
            report.problems.append(scan.problem)
            report.leaves = size
            return
        if scan.root is None:  # the last range: the log ends here
            break
        node = (height, scan.root)
        while before and before[-1][0] == node[0]:  # like a binary counter: equal heights merge
            node = (node[0] + 1, node_hash(before.pop()[1], node[1]))
        before.append(node)
    report.leaves = size
    if target is not None:
        report.problems.append(Problem(size, f"the signed checkpoint of size {target.size} covers "
                                             f"leaves the log does not hold (it ends at {size})"))
    last = signed[-1].size if signed else 0
    report.unsigned = max(size - last, 0)


def check_leaves(batches: Iterable[Sequence[Row]], signed: list[SignedSize], report: Report, *,
                 locate: Callable[[bytes], int | None] | None = None) -> None:
    """Walk all the leaves in one range (a server's entries, a small log) and check them."""
    merge_scans([scan_leaves(batches, 0, [s.size for s in signed], locate=locate)], signed, report)


def check_consistency(signed: list[SignedSize], proof: Callable[[int, int], list[bytes]],
                      report: Report) -> None:
    for old, new in itertools.pairwise(signed):
        if not verify_consistency(old.size, new.size, old.root, new.root, proof(old.size, new.size)):
            report.problems.append(Problem(None, f"the checkpoint of size {new.size} is not consistent "
                                                 f"with the one of size {old.size}"))


@dataclass(frozen=True)
class LeafSource:
    """Where a worker process reads leaves from: the driver's own connection (SQLAlchemy's per-row
    processing would cost more than hashing), opened once per process."""

    dialect: str
    target: str  # the SQLite file, or a PostgreSQL connection URL

    @classmethod
    def of(cls, engine: Engine) -> LeafSource:
        if engine.dialect.name == "postgresql":
            url = engine.url.set(drivername="postgresql")
            return cls("postgresql", url.render_as_string(hide_password=False))
        return cls("sqlite", str(engine.url.database))

    def connect(self) -> Any:
        if self.dialect == "postgresql":
            import psycopg

            # one fixed scan: by the primary keys in index order (no sorts, no parallel workers: the
            # verifier's own processes share the cores), without JIT
            return psycopg.connect(self.target, options="-c jit=off -c max_parallel_workers_per_gather=0 "
                                   "-c enable_mergejoin=off -c enable_hashjoin=off")
        import sqlite3

        conn = sqlite3.connect(self.target)
        conn.execute("PRAGMA mmap_size=17179869184")  # read the leaves through the page cache, not read()
        conn.execute("PRAGMA cache_size=-65536")
        return conn


_worker_connection: Any = None  # a worker process's connection, opened by the pool's initializer


def _open_worker(source: LeafSource) -> None:
    global _worker_connection
    _worker_connection = source.connect()


def _normal(batch: list[Any]) -> list[Row]:
    """Rows as bytes; a row edited by hand may hold text (SQLite), or be gone (None)."""
    if all(type(r[1]) is bytes and type(r[2]) is bytes for r in batch):
        return batch
    return [(r[0], None if r[1] is None else r[1].encode() if isinstance(r[1], str) else bytes(r[1]),
             bytes(r[2])) for r in batch]


def scan_range(conn: Any, dialect: str, start: int, end: int, sizes: Sequence[int],
               chunk: int = CHUNK) -> Scan:
    """Scan the leaves [start, end) of a database through a driver connection."""
    pg = dialect == "postgresql"
    mark = "%s" if pg else "?"
    try:
        cursor = conn.cursor(name="carnet_verify", binary=True) if pg else conn.cursor()
        cursor.execute((PG_LEAVES_SQL if pg else LEAVES_SQL).format(p=mark), (start, end))

        def batches() -> Iterator[list[Row]]:
            while batch := cursor.fetchmany(FETCH):
                yield _normal(batch)

        def locate(digest: bytes) -> int | None:
            found = conn.execute(f"SELECT idx FROM ledger_nodes WHERE height = 0 AND hash = {mark} LIMIT 1",
                                 (digest,)).fetchone()
            return None if found is None else int(found[0])

        scan = scan_leaves(batches(), start, sizes, locate=locate, chunk=chunk, hashed=pg)
        cursor.close()
        if scan.problem is None and start + scan.count < end:  # rows missing at the end of the range
            after = start + scan.count
            found = conn.execute(f"SELECT min(idx) FROM ledger_nodes WHERE height = 0 AND idx >= {mark}",
                                 (after,)).fetchone()
            if found is not None and found[0] is not None:
                scan.problem = _gap(after, int(found[0]))
    finally:
        if pg:
            conn.rollback()  # end the read transaction: the next range sees the log as it is then
    return scan


def _scan_task(task: tuple[str, int, int, tuple[int, ...], int]) -> Scan:
    return scan_range(_worker_connection, *task)


def _scans(source: LeafSource, total: int, sizes: list[int], workers: int, chunk: int) -> Iterator[Scan]:
    """The scans of [0, total) in index order: one range for a small log, else ranges of ``chunk``
    leaves, spread over worker processes when there are several (hashing is the verifier's main
    cost)."""
    tasks = [(source.dialect, lo, min(lo + chunk, total), tuple(s for s in sizes if lo < s <= lo + chunk),
              chunk) for lo in range(0, total, chunk)] if total >= 2 * chunk else []
    if workers <= 1 or not tasks:
        conn = source.connect()
        try:
            for dialect, lo, hi, inside, size in tasks or [(source.dialect, 0, total, tuple(sizes), chunk)]:
                scan = scan_range(conn, dialect, lo, hi, inside, size)
                yield scan
                if scan.problem is not None or scan.root is None:
                    return
        finally:
            conn.close()
        return
    import multiprocessing
    import threading

    # fork is cheap, but only safe without other threads (the command's case); else spawn
    method = "fork" if threading.active_count() == 1 else "spawn"
    with multiprocessing.get_context(method).Pool(workers, _open_worker, (source,)) as pool:
        for scan in pool.imap(_scan_task, tasks):
            yield scan
            if scan.problem is not None or scan.root is None:
                pool.terminate()  # the first problem ends the walk
                return


def verify_database(engine: Engine, verifier: NoteVerifier, origin: str | None = None, *,
                    workers: int | None = None, chunk: int = CHUNK) -> Report:
    """Check a log in a database. A log of at least two ``chunk``s (a power of two) of leaves is
    hashed by ``workers`` processes (default: one per core), a range of ``chunk`` leaves each."""
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError("the range of leaves per worker is a power of two")
    report = Report()
    started = time.perf_counter()
    c, n = ledger_checkpoints.c, ledger_nodes.c
    with engine.connect() as conn:
        notes = [(r.size, bytes(r.root), r.note) for r in
                 conn.execute(select(c.size, c.root, c.note).order_by(c.size))]
        signed = check_checkpoints(notes, verifier, origin, report)
        if report.problems:
            report.seconds = time.perf_counter() - started
            return report
        last = conn.execute(select(func.max(n.idx)).where(n.height == 0)).scalar()
    total = 0 if last is None else int(last) + 1
    source = LeafSource.of(engine)
    sizes = [s.size for s in signed]
    merge_scans(_scans(source, total, sizes, workers or os.cpu_count() or 1, chunk), signed, report, chunk)
    with engine.connect() as conn:
        if not report.problems:
            # one statement, one snapshot: the server may be writing and sequencing meanwhile
            counts = conn.execute(select(
                select(func.count()).select_from(audit_events).scalar_subquery(),
                select(func.count()).select_from(audit_pending).scalar_subquery(),
                select(func.count()).select_from(ledger_nodes).where(n.height == 0).scalar_subquery())).one()
            beside = counts[0] - counts[1] - counts[2]
            if beside:
                report.problems.append(Problem(None, f"{beside} audit row(s) are neither in the log nor "
                                                     "queued for it"))
        if not report.problems:
            stored = DbNodes(conn, cached=False)
            check_consistency(signed, lambda old, new: consistency_proof(stored, old, new), report)
    report.seconds = time.perf_counter() - started
    return report


def verify_server(get: Callable[[str], Any], verifier: NoteVerifier, origin: str | None = None,
                  chunk: int = 1000) -> Report:
    """The same checks through a server's ``/ledger`` endpoints; ``get(path)`` returns parsed JSON."""
    report = Report()
    started = time.perf_counter()
    notes: list[tuple[int, bytes | None, str]] = []
    after = -1
    while True:
        page = get("/ledger/checkpoints" + (f"?after={after}" if after >= 0 else ""))["checkpoints"]
        if not page:
            break
        notes += [(int(p["size"]), None, p["note"]) for p in page]
        after = notes[-1][0]
    signed = check_checkpoints(notes, verifier, origin, report)
    if report.problems or not signed:
        report.seconds = time.perf_counter() - started
        return report
    end = signed[-1].size

    def pages() -> Iterator[list[tuple[int, bytes | None, bytes | None]]]:
        for start in range(0, end, chunk):
            got = get(f"/ledger/entries?start={start}&end={min(start + chunk, end)}")["entries"]
            yield [(int(e["index"]), base64.b64decode(e["data"]), None) for e in got]

    check_leaves(pages(), signed, report)
    if not report.problems:
        def proof(old: int, new: int) -> list[bytes]:
            got = get(f"/ledger/proof/consistency?old={old}&new={new}")
            return [base64.b64decode(h) for h in got["hashes"]]

        check_consistency(signed, proof, report)
    report.seconds = time.perf_counter() - started
    return report


# -- one entry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryProof:
    leaf: bytes
    index: int
    size: int
    hashes: list[bytes]
    checkpoint: str  # the signed note


def entry_proof_from_parameters(params: dict[str, Any]) -> EntryProof:
    """Read what ``AuditEvent/{id}/$inclusion-proof`` answers (a FHIR Parameters resource)."""
    if params.get("resourceType") != "Parameters":
        raise ValueError("expected the Parameters answered by $inclusion-proof")
    values: dict[str, list[Any]] = {}
    for p in params.get("parameter") or []:
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        values.setdefault(p.get("name"), []).append(value)
    try:
        return EntryProof(base64.b64decode(values["leaf"][0], validate=True), int(values["index"][0]),
                          int(values["size"][0]),
                          [base64.b64decode(h, validate=True) for h in values.get("hash", [])],
                          values["checkpoint"][0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"the proof is incomplete or malformed ({exc})") from None


def verify_entry(proof: EntryProof, verifier: NoteVerifier) -> str:
    """Check one entry offline: the checkpoint's signature, then the leaf's inclusion under its
    root. Returns a one-line account; raises ValueError naming what failed."""
    cp = parse_checkpoint(verifier.verify(proof.checkpoint))
    if cp.size != proof.size:
        raise ValueError(f"the proof is for size {proof.size}, the checkpoint is of size {cp.size}")
    if not verify_inclusion(leaf_hash(proof.leaf), proof.index, proof.size, proof.hashes, cp.root):
        raise ValueError(f"the entry is not at index {proof.index} of the tree the checkpoint signs")
    return f"entry {proof.index} is in the log {cp.origin} of size {cp.size}, signed by {verifier.name}"
