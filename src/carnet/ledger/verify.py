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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select

from carnet.db.tables import audit_events, audit_pending, ledger_checkpoints, ledger_nodes
from carnet.ledger.merkle import (
    EMPTY_ROOT,
    Appender,
    consistency_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from carnet.ledger.note import NoteError, NoteVerifier, parse_checkpoint
from carnet.ledger.store import DbNodes

FETCH = 20000
LEAVES_SQL = ("SELECT n.idx, a.content, n.hash FROM ledger_nodes n LEFT OUTER JOIN audit_events a "
              "ON a.seq = n.seq WHERE n.height = 0 ORDER BY n.idx")


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


def check_leaves(chunks: Iterable[Sequence[tuple[int, bytes | None, bytes | None]]],
                 signed: list[SignedSize], report: Report, *,
                 locate: Callable[[bytes], int | None] | None = None) -> Appender:
    """Walk the leaves in index order, a chunk at a time: (index, leaf bytes or None where the
    audit row is gone, hash recorded for the index or None when the source records none). The
    chunk's leaf hashes are checked, then fed to the tree in one go up to each checkpoint's size
    (the inner loop is what makes ``carnet verify`` fast on millions of leaves)."""
    tree = Appender()
    targets = iter(signed)
    target = next(targets, None)
    while target is not None and target.size == 0:  # the empty tree's root is fixed
        if target.root != EMPTY_ROOT:
            report.problems.append(Problem(0, "the signed checkpoint of size 0 is not the empty tree"))
            return tree
        target = next(targets, None)
    covered = 0  # leaves under the last checkpoint matched
    prefix = hashlib.sha256(b"\x00")
    failed = False
    for chunk in chunks:
        digests: list[bytes] = []
        expected = tree.size
        for index, data, recorded in chunk:
            if index != expected or data is None:
                if index < expected:
                    what = "a second audit row holds this index (an inserted row)"
                elif index > expected:
                    what = f"no audit row holds this index (deleted: the next row is index {index})"
                    index = expected
                else:
                    what = "the audit row of this leaf is gone (a deleted row)"
                report.problems.append(Problem(index, what))
                failed = True
                break
            h = prefix.copy()
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
                report.problems.append(Problem(index, what))
                failed = True
                break
            digests.append(digest)
            expected += 1
        pos = 0  # the good leaves of the chunk go into the tree, checkpoint by checkpoint
        while pos < len(digests):
            if target is not None and target.size - tree.size <= len(digests) - pos:
                take = target.size - tree.size
                tree.extend(digests[pos:pos + take])
                pos += take
                if tree.root() != target.root:  # rows and their recorded hashes both rewritten
                    report.problems.append(Problem(
                        covered, f"an entry from index {covered} to {tree.size - 1} was changed: the tree "
                                 f"does not match the signed checkpoint of size {target.size}"))
                    report.leaves = tree.size
                    return tree
                covered = target.size
                target = next(targets, None)
            else:
                tree.extend(digests[pos:])
                pos = len(digests)
        if failed:
            break
    report.leaves = tree.size
    if not failed and target is not None:
        report.problems.append(Problem(tree.size, f"the signed checkpoint of size {target.size} covers "
                                                  f"leaves the log does not hold (it ends at {tree.size})"))
    last = signed[-1].size if signed else 0
    report.unsigned = max(tree.size - last, 0)
    return tree


def check_consistency(signed: list[SignedSize], proof: Callable[[int, int], list[bytes]],
                      report: Report) -> None:
    for old, new in itertools.pairwise(signed):
        if not verify_consistency(old.size, new.size, old.root, new.root, proof(old.size, new.size)):
            report.problems.append(Problem(None, f"the checkpoint of size {new.size} is not consistent "
                                                 f"with the one of size {old.size}"))


def verify_database(engine: Engine, verifier: NoteVerifier, origin: str | None = None) -> Report:
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
        # the driver's own cursor (server-side on PostgreSQL): SQLAlchemy's per-row processing
        # would cost more than hashing
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = (raw.cursor(name="carnet_verify", binary=True) if conn.dialect.name == "postgresql"
                  else raw.cursor())
        cursor.execute(LEAVES_SQL)

        def chunks() -> Iterator[Sequence[tuple[int, bytes | None, bytes | None]]]:
            while True:
                batch = cursor.fetchmany(FETCH)
                if not batch:
                    return
                if any(type(r[1]) is not bytes for r in batch):  # a row edited by hand: text, or gone
                    batch = [(r[0], None if r[1] is None else r[1].encode() if isinstance(r[1], str)
                              else bytes(r[1]), bytes(r[2])) for r in batch]
                yield batch

        with engine.connect() as lookups:
            def locate(digest: bytes) -> int | None:
                found = lookups.execute(select(n.idx).where(n.height == 0, n.hash == digest)).scalar()
                return None if found is None else int(found)

            check_leaves(chunks(), signed, report, locate=locate)
        cursor.close()
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
