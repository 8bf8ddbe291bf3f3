"""Sealed daily journals of the audit log on both databases (SPEC C6): sealing chains the days,
verification recomputes each journal from the log, and each kind of tampering (an audit row, a
journal object in the store, a journal row, a journal signed with another key) is named by day.

Audit rows are made through the audit sink with its clock set to a past day, so their
``recorded`` column and the AuditEvent they hold agree, as they would have on that day.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, date, datetime, time, timedelta

import orjson
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from carnet.audit import AuditRecord
from carnet.audit.journal import (
    JournalError,
    journal_body,
    open_journal_store,
    read_object,
    seal_day,
    seal_due,
    verify_journals,
)
from carnet.audit.sink import LedgerAudit
from carnet.auth.principal import Principal
from carnet.blobs.interfaces import ObjectStore
from carnet.cli.main import main
from carnet.errors import Unprocessable
from carnet.fhir.values import to_us
from carnet.ledger.keys import load_signer
from carnet.ledger.merkle import leaf_hash
from carnet.ledger.note import NoteSigner, NoteVerifier, parse_checkpoint
from carnet.ledger.sequencer import Sequencer
from tests.conftest import Backend

TODAY = datetime.now(UTC).date()
D1 = TODAY - timedelta(days=2)
D2 = TODAY - timedelta(days=1)
LEAF = "(SELECT seq FROM ledger_nodes WHERE height = 0 AND idx = :i)"  # the audit row of leaf :i


def at(day: date, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=UTC)


class Site:
    """A clean database with its journal store, log key and audit sink."""

    def __init__(self, backend: Backend) -> None:
        backend.clean()
        self.backend = backend
        self.engine = backend.engine
        self.store: ObjectStore = open_journal_store(backend.settings)
        self.signer = load_signer(backend.settings)
        self.verifier = NoteVerifier.from_key(self.signer.verifier_key())
        self.sink = LedgerAudit(backend.engine)

    def record(self, moment: datetime, interaction: str = "read", outcome: int = 0, n: int = 1) -> None:
        """``n`` audit events recorded at ``moment`` (one patient each)."""
        with pytest.MonkeyPatch.context() as clock:
            clock.setattr("carnet.audit.sink.now_us", lambda: to_us(moment))
            for i in range(n):
                self.sink.record_now(Principal.system(), AuditRecord(
                    interaction, outcome, "DocumentReference", (f"doc-{i}",),
                    entities=(("DocumentReference", f"doc-{i}", f"pat-{i}"),)))

    def drain(self) -> None:
        Sequencer(self.engine, self.signer, self.signer.name).drain()

    def sql(self, statement: str, **params: object) -> None:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(text(statement), params)

    def rows(self, statement: str, **params: object) -> list[tuple[object, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(statement), params)]

    def blobs(self, statement: str) -> list[bytes]:
        with self.engine.connect() as conn:
            return [bytes(r[0]) for r in conn.execute(text(statement))]

    def body(self, key: str) -> dict[str, object]:
        return journal_body(read_object(self.store, key), self.verifier)

    def failure(self) -> tuple[date | None, str]:
        report = verify_journals(self.engine, self.store, self.verifier)
        assert not report.ok, "the tampering went unnoticed"
        assert report.reason is not None
        return report.failed_day, report.reason


@pytest.fixture
def site(backend: Backend) -> Site:
    return Site(backend)


@pytest.fixture
def sealed(site: Site) -> Site:
    """Two sealed days (D1: 3 reads, a create and a refused read; D2: 2 searches) and an entry of today."""
    site.record(at(D1, 9), n=3)
    site.record(at(D1, 10), "create")
    site.record(at(D1, 11), "read", outcome=4)
    site.record(at(D2, 8), "search", n=2)
    site.record(at(TODAY, 0))
    journals = seal_due(site.engine, site.store, site.signer)
    assert [j.day for j in journals] == [D1, D2]
    return site


def journal_row(site: Site, day: date) -> tuple[object, ...]:
    rows = site.rows("SELECT blob_key, sha256, previous_sha256, first_index, end_index FROM audit_journals "
                     "WHERE day = :d", d=day.isoformat())
    assert len(rows) == 1
    return rows[0]


# -- sealing -------------------------------------------------------------------------------------
def test_two_sealed_days_chain_and_verify(sealed: Site) -> None:
    site = sealed
    key1, sha1, prev1, first1, end1 = journal_row(site, D1)
    key2, sha2, prev2, first2, end2 = journal_row(site, D2)
    assert (prev1, first1, end1) == (None, 0, 5)
    assert (prev2, first2, end2) == (sha1, 5, 7)
    assert hashlib.sha256(read_object(site.store, str(key2))).hexdigest() == sha2

    body1, body2 = site.body(str(key1)), site.body(str(key2))
    assert body1["day"] == D1.isoformat() and body1["previous"] is None
    assert body2["previous"] == sha1 and body2["origin"] == site.signer.name
    assert body1["counts"] == {"action": {"R": 4, "C": 1}, "outcome": {"0": 4, "4": 1},
                               "subtype": {"read": 4, "create": 1}}
    assert body2["counts"] == {"action": {"E": 2}, "outcome": {"0": 2}, "subtype": {"search": 2}}
    contents = site.blobs(
        "SELECT a.content FROM ledger_nodes n JOIN audit_events a ON a.seq = n.seq "
        "WHERE n.height = 0 AND n.idx >= 5 AND n.idx < 7 ORDER BY n.idx")
    assert body2["leaves_sha256"] == hashlib.sha256(b"".join(leaf_hash(c) for c in contents)).hexdigest()
    checkpoint = parse_checkpoint(site.verifier.verify(str(body2["checkpoint"])))
    assert checkpoint.size >= 7

    report = verify_journals(site.engine, site.store, site.verifier)
    assert report.ok, report.reason
    assert (report.journals, report.leaves, report.first_day, report.last_day) == (2, 7, D1, D2)
    assert report.head == sha2
    # today's entry is in the log but in no journal yet
    assert site.rows("SELECT count(*) FROM ledger_nodes WHERE height = 0 AND idx >= 7") == [(1,)]


def test_the_journal_object_is_a_signed_note_of_canonical_json(sealed: Site) -> None:
    key, *_ = journal_row(sealed, D1)
    note = read_object(sealed.store, str(key)).decode("utf-8")
    text_part = sealed.verifier.verify(note)
    assert text_part.endswith("}\n") and text_part.count("\n") == 1
    assert orjson.dumps(orjson.loads(text_part), option=orjson.OPT_SORT_KEYS).decode() + "\n" == text_part
    assert note.startswith(text_part + "\n\u2014 " + sealed.signer.name + " ")


def test_sealing_today_or_a_future_day_is_refused(site: Site) -> None:
    site.record(at(D1))
    for day in (TODAY, TODAY + timedelta(days=1)):
        with pytest.raises(Unprocessable, match=r"not over yet.*n'est pas terminé"):
            seal_day(site.engine, site.store, site.signer, day)
    assert site.rows("SELECT count(*) FROM audit_journals") == [(0,)]


def test_sealing_twice_is_idempotent(sealed: Site) -> None:
    site = sealed
    again = seal_day(site.engine, site.store, site.signer, D1)
    assert not again.created and again.sha256 == journal_row(site, D1)[1]
    assert seal_due(site.engine, site.store, site.signer) == []
    assert site.rows("SELECT count(*) FROM audit_journals") == [(2,)]
    assert verify_journals(site.engine, site.store, site.verifier).ok


def test_sealing_a_day_seals_the_unsealed_days_before_it_empty_ones_included(site: Site) -> None:
    site.record(at(D1 - timedelta(days=2)), n=2)  # then an empty day
    site.record(at(D1), n=1)
    journal = seal_day(site.engine, site.store, site.signer, D1)
    days = site.rows("SELECT day, first_index, end_index FROM audit_journals ORDER BY day")
    assert days == [((D1 - timedelta(days=2)).isoformat(), 0, 2), ((D1 - timedelta(days=1)).isoformat(), 2, 2),
                    (D1.isoformat(), 2, 3)]
    assert journal.day == D1 and journal.created
    empty = site.body(str(journal_row(site, D1 - timedelta(days=1))[0]))
    assert empty["counts"] == {"action": {}, "outcome": {}, "subtype": {}}
    assert empty["leaves_sha256"] == hashlib.sha256(b"").hexdigest()
    assert verify_journals(site.engine, site.store, site.verifier).ok
    with pytest.raises(Exception, match="precedes the first sealed journal"):
        seal_day(site.engine, site.store, site.signer, D1 - timedelta(days=5))


def test_an_entry_recorded_before_midnight_and_sequenced_after_the_next_days_first_is_in_one_journal(
        site: Site) -> None:
    site.record(at(D1, 10))
    site.drain()
    site.record(at(D2, 0, 0, 1))  # committed first...
    site.drain()
    site.record(at(D1, 23, 59, 59))  # ...before this one, recorded earlier
    site.drain()
    site.record(at(D2, 9))
    seal_due(site.engine, site.store, site.signer)
    assert site.rows("SELECT day, first_index, end_index FROM audit_journals ORDER BY day") == [
        (D1.isoformat(), 0, 3), (D2.isoformat(), 3, 4)]
    assert verify_journals(site.engine, site.store, site.verifier).ok


def test_a_log_altered_before_sealing_is_not_sealed(site: Site) -> None:
    site.record(at(D1), n=3)
    site.drain()
    site.sql("UPDATE audit_events SET content = :c WHERE seq = " + LEAF, i=1, c=b'{"resourceType":"AuditEvent"}')
    with pytest.raises(JournalError, match=r"entry 1 \(AuditEvent .*\) was changed"):
        seal_due(site.engine, site.store, site.signer)
    assert site.rows("SELECT count(*) FROM audit_journals") == [(0,)]


def test_nothing_is_due_on_an_empty_log_or_when_everything_is_today(site: Site) -> None:
    assert seal_due(site.engine, site.store, site.signer) == []
    with pytest.raises(Unprocessable, match="empty"):
        seal_day(site.engine, site.store, site.signer, D1)
    site.record(at(TODAY, 0))
    assert seal_due(site.engine, site.store, site.signer) == []


# -- tampering -------------------------------------------------------------------------------------
def test_an_edited_audit_row_of_a_sealed_day_is_named(sealed: Site) -> None:
    sealed.sql("UPDATE audit_events SET content = :c WHERE seq = " + LEAF, i=6, c=b'{"resourceType":"AuditEvent"}')
    day, reason = sealed.failure()
    assert day == D2 and "entry 6" in reason and "fingerprint" in reason, (day, reason)


def test_a_deleted_audit_row_of_a_sealed_day_is_named(sealed: Site) -> None:
    sealed.sql("DELETE FROM audit_events WHERE seq = " + LEAF, i=3)
    day, reason = sealed.failure()
    assert day == D1 and "entry 3's audit row was deleted" in reason, (day, reason)


def test_an_edited_audit_column_of_a_sealed_day_is_named(sealed: Site) -> None:
    sealed.sql("UPDATE audit_events SET outcome = 0 WHERE seq = " + LEAF, i=4)
    day, reason = sealed.failure()
    assert day == D1 and "counts" in reason, (day, reason)


def test_an_edited_journal_object_is_named(sealed: Site) -> None:
    key = str(journal_row(sealed, D1)[0])
    data = read_object(sealed.store, key).replace(b'"end_index":5', b'"end_index":4')
    sealed.store.write([data], lambda: key)
    day, reason = sealed.failure()
    assert day == D1 and "SHA-256" in reason and "altered" in reason, (day, reason)


def test_a_deleted_journal_object_is_named(sealed: Site) -> None:
    sealed.store.delete(str(journal_row(sealed, D2)[0]))
    day, reason = sealed.failure()
    assert day == D2 and "missing" in reason, (day, reason)


def test_an_edited_previous_sha256_is_named(sealed: Site) -> None:
    sealed.sql("UPDATE audit_journals SET previous_sha256 = :p WHERE day = :d", p="ab" * 32, d=D2.isoformat())
    day, reason = sealed.failure()
    assert day == D2 and "previous" in reason, (day, reason)


def test_a_journal_signed_with_another_key_is_named(sealed: Site) -> None:
    """A journal rewritten and re-signed by someone without the log key, its row updated to match."""
    site = sealed
    key = str(journal_row(site, D1)[0])
    text_part = site.verifier.verify(read_object(site.store, key))
    forged = NoteSigner(site.signer.name, Ed25519PrivateKey.generate()).sign(text_part).encode()
    digest = hashlib.sha256(forged).hexdigest()
    site.store.write([forged], lambda: digest)
    site.sql("UPDATE audit_journals SET blob_key = :k, sha256 = :k WHERE day = :d", k=digest, d=D1.isoformat())
    day, reason = site.failure()
    assert day == D1 and "signature" in reason, (day, reason)


def test_a_missing_day_in_the_chain_is_named(site: Site) -> None:
    for each in (D1 - timedelta(days=1), D1, D2):
        site.record(at(each))
    seal_due(site.engine, site.store, site.signer)
    site.sql("DELETE FROM audit_journals WHERE day = :d", d=D1.isoformat())
    day, reason = site.failure()
    assert day == D1 and "no journal for this day" in reason, (day, reason)


# -- the command -------------------------------------------------------------------------------------
@pytest.fixture
def command_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The commands see only this backend's database and data folder."""
    for name in [k for k in os.environ if k.startswith("CARNET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CARNET_DATA_DIR", str(site.backend.tmp))
    monkeypatch.setenv("CARNET_DATABASE_URL", site.backend.url)
    return site


def carnet(site: Site, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--data", str(site.backend.tmp)], catch_exceptions=False)


def test_the_commands_seal_and_verify_and_name_the_failing_day(command_site: Site) -> None:
    site = command_site
    site.record(at(D1), n=2)
    site.record(at(D2), "update")  # not sequenced yet: `seal` does it first
    r = carnet(site, "journal", "seal")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{D1}  sealed") and "leaves [0, 2)" in lines[0]
    assert lines[1].startswith(f"{D2}  sealed") and "leaves [2, 3)" in lines[1]

    r = carnet(site, "journal", "seal")
    assert r.exit_code == 0 and r.stdout.strip() == "no complete day to seal"
    r = carnet(site, "journal", "seal", "--day", D1.isoformat())
    assert r.exit_code == 0 and "already sealed" in r.stdout

    r = carnet(site, "journal", "verify")
    assert r.exit_code == 0, r.output
    assert f"2 journal(s) verify, {D1} to {D2}, 3 leaves" in r.stdout

    r = carnet(site, "journal", "verify", "--key", site.signer.verifier_key())
    assert r.exit_code == 0, r.output
    other = NoteSigner(site.signer.name, Ed25519PrivateKey.generate()).verifier_key()
    r = carnet(site, "journal", "verify", "--key", other)
    assert r.exit_code == 1 and f"journal {D1} fails" in r.stderr and "signature" in r.stderr

    site.sql("UPDATE audit_events SET content = :c WHERE seq = " + LEAF, i=2, c=b'{"resourceType":"AuditEvent"}')
    r = carnet(site, "journal", "verify")
    assert r.exit_code == 1
    assert f"1 journal(s) verify, {D1} to {D1}" in r.stdout
    assert r.stderr.strip().startswith(f"Error: journal {D2} fails:") and "entry 2" in r.stderr


def test_the_seal_command_refuses_today_and_bad_days(command_site: Site) -> None:
    site = command_site
    site.record(at(D1))
    r = carnet(site, "journal", "seal", "--day", TODAY.isoformat())
    assert r.exit_code == 1 and "not over yet" in r.stderr and "Traceback" not in r.output
    r = carnet(site, "journal", "seal", "--day", "2026-13-01")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.stderr
    r = carnet(site, "journal", "verify")
    assert r.exit_code == 0 and "no journal sealed yet" in r.stdout
