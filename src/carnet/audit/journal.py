"""Sealed daily journals of the audit log (NF Z42-013 / ISO 14641 practice, SPEC C6).

The transparency log already proves that no entry was changed or removed once checkpointed; what
an archivist of NF Z42-013 asks for besides is a *journal* per day, fingerprinted, signed, and
chained to the previous day's, that can be kept and checked on its own: one small object per UTC
day that says which leaves of the log the day covers, how many operations of each kind they are,
and the SHA-256 of their leaf hashes, sealed with the log's key together with a checkpoint of the
tree that holds them.

A journal is a C2SP signed note (the same format and key as the checkpoints) whose text is the
canonical JSON of the journal (sorted keys, no whitespace) and a newline::

    {"checkpoint": "<signed checkpoint note>", "counts": {"action": {...}, "outcome": {...},
     "subtype": {...}}, "day": "2026-12-01", "end_index": 1234, "first_index": 1000,
     "format": "carnet-audit-journal/1", "leaves_sha256": "<hex>", "origin": "<log origin>",
     "previous": "<hex SHA-256 of the previous journal object>" | null,
     "sealed_at": "2026-12-02T00:05:00.000000Z"}

The object is kept in the blob store's object layer beside the content (a folder or an S3 bucket,
under ``journals/``: plain objects, not the encrypted per-patient content, and out of reach of the
orphan janitor, which only looks at the content's own keys). Its key is its SHA-256, so a journal
is written once and never overwritten, even by two sealers racing for the same day. The row of
``audit_journals`` records the key, the SHA-256 and the leaf range.

Which leaves belong to a day. Entries are numbered in commit order, not in the order of their
``recorded`` time: an entry recorded at 23:59:59.9 whose transaction commits after one recorded
at 00:00:00.1 the next day gets the later index. Cutting the log at a time would then leave leaves
outside every journal (or in two). Journals instead partition the log by index: journal D covers
``[first_index, end_index)`` where ``first_index`` is the previous journal's ``end_index`` (0 for
the first) and ``end_index`` is one past the highest index of the entries recorded before the end
of D (at least ``first_index``). So the ranges are contiguous, every sequenced leaf falls in
exactly one journal once the day of its ``recorded`` time is sealed, an entry lands in the journal
of its day or of an earlier one (when it was sequenced before a late entry of that earlier day),
and a journal may hold the first entries of the next day. ``counts`` and ``leaves_sha256`` are of
the leaves in the range. An entry recorded before midnight but committed after its day was sealed
falls in the next journal.

Order. Journals are sealed in day order, with no day skipped between the first one and the last:
sealing day D first seals every unsealed day before it (back to the day of the log's first entry),
empty days included (an empty journal says "nothing happened that day", and a missing day in the
chain is then a visible gap). A day before the first sealed journal can no longer be sealed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Engine, and_, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError

from carnet.blobs.content import ContentAddressedStore
from carnet.blobs.errors import MissingBlob
from carnet.blobs.interfaces import ObjectStore
from carnet.blobs.local import LocalObjects
from carnet.blobs.s3 import S3Objects
from carnet.db.engine import write_lock
from carnet.db.tables import audit_events, audit_journals, ledger_nodes
from carnet.errors import CarnetError, Conflict, Unprocessable
from carnet.fhir.values import from_us, to_us
from carnet.ledger.merkle import leaf_hash, root
from carnet.ledger.note import NoteError, NoteSigner, NoteVerifier, parse_checkpoint
from carnet.ledger.sequencer import Sequencer
from carnet.ledger.store import checkpoints, tree_size

if TYPE_CHECKING:
    from carnet.config import Settings

FORMAT = "carnet-audit-journal/1"
JOURNALS_PREFIX = "journals"
CHUNK = 5000  # leaves read per query while hashing a day

_A = audit_events.c
_J = audit_journals.c
_N = ledger_nodes.c


class JournalError(CarnetError):
    """The log cannot be sealed as it is (an entry no longer matches the hash the log recorded)."""

    code = "processing"


@dataclass(frozen=True)
class Journal:
    """One sealed day, as its ``audit_journals`` row records it."""

    day: date
    sealed_at: datetime
    blob_key: str
    sha256: str
    previous_sha256: str | None
    first_index: int
    end_index: int
    created: bool = False  # sealed by this call (False: it was sealed already)


@dataclass
class JournalReport:
    """What :func:`verify_journals` found: the journals that check, then the first that does not."""

    journals: int = 0  # journals checked and found good, in day order
    leaves: int = 0  # leaves those journals cover
    first_day: date | None = None
    last_day: date | None = None  # the last good journal's day
    head: str | None = None  # the SHA-256 of the last good journal (to keep elsewhere)
    failed_day: date | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


# -- where journals are kept ---------------------------------------------------------------------
def journal_objects(blobs: ContentAddressedStore) -> ObjectStore:
    """The object store of journals: ``journals/`` inside the blob store's folder or bucket prefix.

    The janitor lists only the blob store's own keys (two-level hex shards in a folder, hex names
    right under the prefix in a bucket), so it never sees, let alone sweeps, a journal."""
    objects = blobs.objects
    if isinstance(objects, LocalObjects):
        return LocalObjects(objects.root / JOURNALS_PREFIX)
    if isinstance(objects, S3Objects):
        return S3Objects(objects.bucket, prefix=f"{objects.prefix}{JOURNALS_PREFIX}/", client=objects.client,
                         part_size=objects.part_size, spool_dir=objects.spool_dir)
    raise TypeError(f"no journal store for {objects!r}")


def open_journal_store(settings: Settings) -> ObjectStore:
    """The journals' object store of the configured blob store (``CARNET_BLOB_URL``)."""
    from carnet.blobs.factory import open_blob_store

    secret = settings.s3_secret_access_key
    blobs = open_blob_store(
        settings.blob_url or None, data_dir=settings.data_dir,
        s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=secret.get_secret_value() if secret is not None else None,
        spool_dir=settings.data_dir / "spool")
    return journal_objects(blobs)


def read_object(store: ObjectStore, key: str) -> bytes:
    """A journal object's bytes; MissingBlob when absent."""
    try:
        reader = store.open(key)
    except ValueError:  # a key that is not one (an edited row): nothing can be stored under it
        raise MissingBlob(f"journal key {key!r} is not a store key") from None
    try:
        return b"".join(reader.read(0, reader.size))
    finally:
        reader.close()


def journal_body(note: bytes | str, verifier: NoteVerifier) -> dict[str, Any]:
    """The journal JSON of a signed journal object, once its signature checks (NoteError if not)."""
    text = verifier.verify(note)
    try:
        body = orjson.loads(text[:-1])
    except orjson.JSONDecodeError:
        raise NoteError("the journal text is not JSON") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise NoteError(f"the note is not a {FORMAT} journal")
    if _canonical(body) != text:
        raise NoteError("the journal text is not in canonical form")
    return body


# -- days ------------------------------------------------------------------------------------------
def day_bounds(day: date) -> tuple[int, int]:
    """[start, end) of a UTC day in µs since the epoch."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return to_us(start), to_us(start + timedelta(days=1))


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(body: dict[str, Any]) -> str:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode("utf-8") + "\n"


def _journal(row: Any, *, created: bool = False) -> Journal:
    return Journal(date.fromisoformat(row.day), from_us(row.sealed_at), row.blob_key, row.sha256,
                   row.previous_sha256, int(row.first_index), int(row.end_index), created)


def _row(conn: Connection, day: date) -> Journal | None:
    row = conn.execute(select(audit_journals).where(_J.day == day.isoformat())).first()
    return None if row is None else _journal(row)


def _last(conn: Connection) -> Journal | None:
    row = conn.execute(select(audit_journals).order_by(_J.day.desc()).limit(1)).first()
    return None if row is None else _journal(row)


# -- what a day's leaves are -----------------------------------------------------------------------
@dataclass
class _Leaves:
    sha256: str
    altered: tuple[int, str] | None  # the first leaf whose audit row is gone or no longer matches its hash
    missing: int | None  # the first index of the range the log does not hold


# the leaves (height 0 of the tree, where the sequencer records each row's place) joined to their rows
_LEAF = and_(_N.height == 0, _A.seq == _N.seq)


def _hash_leaves(conn: Connection, first: int, end: int) -> _Leaves:
    """SHA-256 over the leaf hashes of [first, end), recomputed from the audit rows' content, in
    index order, and the first leaf whose row is gone or differs from the hash the sequencer stored."""
    digest = hashlib.sha256()
    altered: tuple[int, str] | None = None
    expected = first
    for lo in range(first, end, CHUNK):
        hi = min(end, lo + CHUNK)
        rows = conn.execute(select(_N.idx, _N.hash, _A.id, _A.content)
                            .select_from(ledger_nodes.outerjoin(audit_events, _A.seq == _N.seq))
                            .where(_N.height == 0, _N.idx >= lo, _N.idx < hi).order_by(_N.idx))
        for row in rows:
            if row.idx != expected:
                return _Leaves(digest.hexdigest(), altered, expected)
            if row.content is None:  # the row was deleted: nothing to recompute the leaf from
                digest.update(b"\0")
                altered = altered or (expected, f"entry {expected}'s audit row was deleted")
            else:
                h = leaf_hash(bytes(row.content))
                digest.update(h)
                if bytes(row.hash) != h:
                    altered = altered or (expected, f"entry {expected} (AuditEvent {row.id}) was changed")
            expected += 1
    return _Leaves(digest.hexdigest(), altered, None if expected == end else expected)


def _counts(conn: Connection, first: int, end: int) -> dict[str, dict[str, int]]:
    """How many leaves of [first, end) per action, per outcome and per subtype."""
    action: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    subtype: Counter[str] = Counter()
    rows = conn.execute(select(_A.action, _A.outcome, _A.subtype, func.count().label("n"))
                        .select_from(ledger_nodes.join(audit_events, _LEAF))
                        .where(_N.idx >= first, _N.idx < end)
                        .group_by(_A.action, _A.outcome, _A.subtype))
    for row in rows:
        action[row.action] += row.n
        outcome[str(row.outcome)] += row.n
        subtype[row.subtype] += row.n
    return {"action": dict(action), "outcome": dict(outcome), "subtype": dict(subtype)}


def _end_index(conn: Connection, first: int, end_us: int) -> int:
    """One past the highest index of the entries recorded before ``end_us``, at least ``first``.

    Only indexes from ``first`` on can move it: the lower ones are in earlier journals already."""
    top = conn.execute(select(func.max(_N.idx)).select_from(ledger_nodes.join(audit_events, _LEAF))
                       .where(_N.idx >= first, _A.recorded < end_us)).scalar()
    return first if top is None else max(first, int(top) + 1)


# -- sealing ---------------------------------------------------------------------------------------
def _check_over(day: date, now: datetime) -> None:
    if day_bounds(day)[1] > to_us(now):
        raise Unprocessable(f"day {day.isoformat()} is not over yet (UTC): only past days can be sealed / "
                            f"le jour {day.isoformat()} n'est pas terminé (UTC) : seuls les jours passés "
                            "peuvent être scellés")


def seal_day(engine: Engine, store: ObjectStore, signer: NoteSigner, day: date, *,
             now: datetime | None = None) -> Journal:
    """Seal the journal of UTC ``day`` (refused unless the day is over) and return it.

    The pending audit entries are sequenced first, so that every entry committed by now has its
    place in the log. Every unsealed day before ``day`` is sealed first (see the module's note on
    order). Sealing a day already sealed returns its journal as it is (``created`` False)."""
    return seal_until(engine, store, signer, day, now or datetime.now(UTC))[-1]


def seal_due(engine: Engine, store: ObjectStore, signer: NoteSigner, today: date | None = None, *,
             now: datetime | None = None) -> list[Journal]:
    """Seal every complete day not sealed yet, up to the day before ``today`` (UTC); the journals
    sealed by this call, oldest first (none when the log is empty and nothing was sealed)."""
    moment = now or datetime.now(UTC)
    yesterday = (today or moment.date()) - timedelta(days=1)
    with engine.connect() as conn:
        last = _last(conn)
        oldest = None if last is not None else conn.execute(select(func.min(_A.recorded))).scalar()
    if last is None and (oldest is None or from_us(int(oldest)).date() > yesterday):
        return []  # nothing recorded before today: no journal is due
    if last is not None and last.day >= yesterday:
        return []
    return [j for j in seal_until(engine, store, signer, yesterday, moment) if j.created]


def seal_until(engine: Engine, store: ObjectStore, signer: NoteSigner, day: date,
               now: datetime | None = None) -> list[Journal]:
    """:func:`seal_day`, returning every journal it sealed on the way, oldest first (or only the
    day's journal, ``created`` False, when it was sealed already)."""
    now = now or datetime.now(UTC)
    _check_over(day, now)
    sequencer = Sequencer(engine, signer, signer.name)
    sequencer.drain()
    with engine.connect() as conn:
        existing = _row(conn, day)
        if existing is not None:
            return [existing]
        if tree_size(conn) == 0:
            raise Unprocessable("the log is empty: there is nothing to seal yet / le journal d'audit est "
                                "vide : rien à sceller pour l'instant")
        last = _last(conn)
        if last is not None:
            if day < last.day:
                raise Conflict(
                    f"day {day.isoformat()} precedes the first sealed journal and can no longer be sealed / "
                    f"le jour {day.isoformat()} précède le premier journal scellé et ne peut plus l'être")
            start = last.day + timedelta(days=1)
        else:
            oldest = conn.execute(select(func.min(_A.recorded))).scalar()
            start = day if oldest is None else min(day, from_us(int(oldest)).date())
    sealed: list[Journal] = []
    previous = last
    for each in _days(start, day):
        previous = _seal_one(engine, store, signer, sequencer, each, previous, now)
        sealed.append(previous)
    return sealed


def _seal_one(engine: Engine, store: ObjectStore, signer: NoteSigner, sequencer: Sequencer, day: date,
              previous: Journal | None, now: datetime) -> Journal:
    first = 0 if previous is None else previous.end_index
    with engine.connect() as conn:
        end = _end_index(conn, first, day_bounds(day)[1])
        leaves = _hash_leaves(conn, first, end)
        counts = _counts(conn, first, end)
        found = checkpoints(conn, after=end - 1, limit=1)
    if leaves.missing is not None:
        raise JournalError(f"the log has no entry at index {leaves.missing}: it cannot be sealed / "
                           f"le journal n'a pas d'entrée à l'index {leaves.missing} : scellement impossible")
    if leaves.altered is not None:
        raise JournalError(
            f"{leaves.altered[1]}: the log was altered since it was sequenced, run `carnet verify` / "
            f"l'entrée {leaves.altered[0]} ne correspond plus à l'empreinte enregistrée : le journal "
            "d'audit a été modifié")
    if not found:  # the tree grew between the drain and now: sign a checkpoint that covers it
        sequencer.run(force_checkpoint=True)
        with engine.connect() as conn:
            found = checkpoints(conn, after=end - 1, limit=1)
    chained = None if previous is None else previous.sha256
    body: dict[str, Any] = {
        "format": FORMAT,
        "day": day.isoformat(),
        "origin": signer.name,
        "first_index": first,
        "end_index": end,
        "counts": counts,
        "leaves_sha256": leaves.sha256,
        "checkpoint": found[0].note,
        "previous": chained,
        "sealed_at": _iso(now),
    }
    signed = signer.sign(_canonical(body)).encode("utf-8")
    digest = hashlib.sha256(signed).hexdigest()
    store.write([signed], lambda: digest)
    journal = Journal(day, from_us(to_us(now)), digest, digest, chained, first, end, created=True)
    try:
        with write_lock(engine), engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            last = _last(conn)
            if (None if last is None else last.sha256) != journal.previous_sha256:
                raise _Raced
            conn.execute(insert(audit_journals).values(
                day=day.isoformat(), sealed_at=to_us(now), blob_key=digest, sha256=digest,
                previous_sha256=journal.previous_sha256, first_index=first, end_index=end))
    except (IntegrityError, _Raced):  # another sealer got there first: theirs stands
        with engine.connect() as conn:
            theirs = _row(conn, day)
        if theirs is None or theirs.blob_key != digest:
            store.delete(digest)  # ours is referenced by no row
        if theirs is None:
            raise Conflict("another process sealed journals meanwhile; seal again / un autre processus a "
                           "scellé des journaux entre-temps ; recommencer") from None
        return theirs
    return journal


class _Raced(Exception):
    """The chain moved on between reading the previous journal and recording this one."""


# -- verifying -------------------------------------------------------------------------------------
def verify_journals(engine: Engine, store: ObjectStore, verifier: NoteVerifier) -> JournalReport:
    """Check every sealed journal, in day order, and stop at the first that fails (naming its day).

    For each: no day missing since the previous one; the leaf range continues the previous one's;
    the object is in the store and its SHA-256 is the recorded one; the recorded and embedded
    ``previous`` are the previous journal's SHA-256; the signature is the log key's; the leaves'
    SHA-256 and counts recomputed from ``audit_events`` are the sealed ones; the embedded checkpoint
    is signed by the same key, covers the range, and its root is the stored tree's at its size."""
    report = JournalReport()
    previous: Journal | None = None
    with engine.connect() as conn:
        rows = conn.execute(select(audit_journals).order_by(_J.day)).all()
        size = tree_size(conn)
        for row in rows:
            try:
                journal = _journal(row)
            except ValueError:
                report.reason = f"malformed journal row for day {row.day!r}"
                return report
            if previous is not None and journal.day != previous.day + timedelta(days=1):
                report.failed_day = previous.day + timedelta(days=1)
                report.reason = (f"no journal for this day: the chain skips from {previous.day} "
                                 f"to {journal.day}")
                return report
            problem = _check(conn, store, verifier, journal, previous, size)
            if problem is not None:
                report.failed_day, report.reason = journal.day, problem
                return report
            report.journals += 1
            report.leaves += journal.end_index - journal.first_index
            report.first_day = report.first_day or journal.day
            report.last_day, report.head = journal.day, journal.sha256
            previous = journal
    return report


def _check(conn: Connection, store: ObjectStore, verifier: NoteVerifier, journal: Journal,
           previous: Journal | None, size: int) -> str | None:
    """Why ``journal`` fails, or None."""
    first = 0 if previous is None else previous.end_index
    if journal.first_index != first or journal.end_index < journal.first_index:
        return (f"its leaf range [{journal.first_index}, {journal.end_index}) does not continue the previous "
                f"journal's, which ended at {first}")
    try:
        data = read_object(store, journal.blob_key)
    except MissingBlob:
        return f"the journal object {journal.blob_key} is missing from the store"
    if hashlib.sha256(data).hexdigest() != journal.sha256:
        return "the journal object does not match its recorded SHA-256: it was altered in the store"
    chained = None if previous is None else previous.sha256
    if journal.previous_sha256 != chained:
        return (f"the recorded previous journal SHA-256 {journal.previous_sha256} is not the previous "
                f"journal's ({chained})")
    try:
        body = journal_body(data, verifier)
    except NoteError as exc:
        return f"the journal's signature does not check: {exc}"
    if body.get("previous") != chained:
        return "the journal does not chain to the previous journal"
    if (body.get("day"), body.get("first_index"), body.get("end_index")) != (
            journal.day.isoformat(), journal.first_index, journal.end_index):
        return "the signed journal's day or leaf range is not the recorded one"
    if journal.end_index > size:
        return f"the journal covers leaves up to {journal.end_index}, beyond the log's {size}"
    leaves = _hash_leaves(conn, journal.first_index, journal.end_index)
    if leaves.missing is not None:
        return f"the log has no entry at index {leaves.missing}, which the journal covers"
    if leaves.sha256 != body.get("leaves_sha256"):
        which = "" if leaves.altered is None else f": {leaves.altered[1]}"
        return f"the day's entries no longer match the sealed fingerprint (leaves_sha256){which}"
    if _counts(conn, journal.first_index, journal.end_index) != body.get("counts"):
        return "the day's entries no longer match the sealed counts"
    return _check_checkpoint(conn, verifier, body, journal, size)


class _StoredNodes:
    """The tree nodes as stored now, without the process's node cache (``carnet.ledger.store.DbNodes``):
    a verifier checks what the database holds, not what this process remembers of it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def nodes(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(wanted), 500):
            rows = self.conn.execute(select(_N.height, _N.idx, _N.hash).where(
                tuple_(_N.height, _N.idx).in_(list(wanted[start:start + 500]))))
            found.update({(r.height, r.idx): bytes(r.hash) for r in rows})
        return found


def _check_checkpoint(conn: Connection, verifier: NoteVerifier, body: dict[str, Any], journal: Journal,
                      size: int) -> str | None:
    note = body.get("checkpoint")
    if not isinstance(note, str):
        return "the journal carries no checkpoint"
    try:
        checkpoint = parse_checkpoint(verifier.verify(note))
    except NoteError as exc:
        return f"the embedded checkpoint does not check: {exc}"
    if checkpoint.origin != body.get("origin"):
        return f"the embedded checkpoint is of another log ({checkpoint.origin})"
    if checkpoint.size < journal.end_index:
        return f"the embedded checkpoint (size {checkpoint.size}) does not cover the journal's leaves"
    if checkpoint.size > size:
        return f"the embedded checkpoint (size {checkpoint.size}) is beyond the log's {size} leaves"
    try:
        tree_root = root(_StoredNodes(conn), checkpoint.size)
    except LookupError as exc:
        return f"the stored tree cannot give the checkpoint's root: {exc}"
    if tree_root != checkpoint.root:
        return f"the embedded checkpoint's root is not the stored tree's at size {checkpoint.size}"
    return None
