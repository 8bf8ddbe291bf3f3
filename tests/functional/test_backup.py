"""`carnet backup` and `carnet restore`, the embedded mode's backups (so SQLite only: the suite's
`backend` fixture is not used). A backup is taken while a live server stores documents, restored into
a fresh folder that `carnet verify` passes and that serves every document byte for byte; damaged
backups, folders that are not empty, PostgreSQL and missing keys are refused. Real files, real
SQLite, real HTTP, the command run through click as a user runs it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from sqlalchemy import select

from carnet import backup as backups
from carnet import demo
from carnet.blobs import BlobRef
from carnet.config import Settings
from carnet.crypto.keyfiles import load_keyring
from carnet.db.engine import make_engine
from carnet.db.migrate import head_revision, upgrade
from carnet.db.tables import document_contents
from carnet.documents.storage import open_document_store
from carnet.ledger.keys import load_signer, origin_of
from carnet.ledger.sequencer import Sequencer
from tests.conftest import LiveServer
from tests.support.cli import run_carnet

FHIR_JSON = {"Content-Type": "application/fhir+json"}


# -- the command, with nothing from the environment but what it is given ---------------------------
def settings_for(data: Path) -> Settings:
    """The settings the command derives from ``--data`` alone."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("CARNET_")]:
            mp.delenv(name)
        return Settings(data_dir=data)


def carnet(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return run_carnet(*(str(a) for a in args), env=env)


def ok(*args: str | Path) -> Result:
    r = carnet(*args)
    assert r.exit_code == 0, r.output
    return r


def refused(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """The one-line refusal (after any progress label on standard error)."""
    r = carnet(*args, env=env)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), r.stderr
    return last


# -- a live installation: demo data, a sequenced log, and a server storing documents ----------------
@dataclass(frozen=True)
class Ack:
    sent: float  # time.monotonic() when the request left
    at: float  # when its 201 arrived
    doc_id: str
    content: bytes


class Writer:
    """Stores documents (each with content of its own) on a server from a thread, one request after
    the other, until stopped; remembers when each was acknowledged."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url + "/fhir", headers=FHIR_JSON, timeout=60)
        r = self.client.put("Patient/bk-writer", json={"resourceType": "Patient", "id": "bk-writer",
                                                       "name": [{"family": "Sauvegarde", "given": ["Eve"]}]})
        assert r.status_code in (200, 201), r.text
        self.acks: list[Ack] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            content = f"Compte rendu {n}\n".encode() * 40 + os.urandom(24)
            doc = {"resourceType": "DocumentReference", "status": "current",
                   "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                   "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
                   "subject": {"reference": "Patient/bk-writer"},
                   "content": [{"attachment": {"contentType": "text/plain",
                                               "data": base64.b64encode(content).decode()}}]}
            sent = time.monotonic()
            r = self.client.post("DocumentReference", json=doc)
            if r.status_code != 201:
                self.errors.append(r.text[:300])
                continue
            with self.lock:
                self.acks.append(Ack(sent, time.monotonic(), r.json()["id"], content))

    def acked(self) -> list[Ack]:
        with self.lock:
            return list(self.acks)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked()) < count:
            assert not self.errors, self.errors[0]
            assert time.monotonic() < deadline, f"the server stored {len(self.acked())} documents, not {count}"
            time.sleep(0.01)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        self.client.close()


@dataclass
class Site:
    data: Path
    settings: Settings
    server: LiveServer
    writer: Writer


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("backup") / "site"
    settings = settings_for(data)
    engine = make_engine(settings)
    upgrade(engine)
    demo.load(settings, engine, patients=3)  # 12 documents among the rest, and their audit events
    Sequencer(engine, load_signer(settings), origin_of(settings)).drain()
    engine.dispose()
    server = LiveServer(settings)
    writer = Writer(server.url)
    writer.wait_for(3)
    yield Site(data, settings, server, writer)
    writer.close()
    server.stop()
    assert not writer.errors, writer.errors[0]


@dataclass
class Taken:
    dest: Path
    result: Result
    started: float
    ended: float
    manifest: dict[str, Any]


@pytest.fixture(scope="module")
def taken(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Taken:
    """`carnet backup` of the site while its server keeps storing documents."""
    dest = tmp_path_factory.mktemp("backups") / "full"
    site.writer.wait_for(len(site.writer.acked()) + 1)
    started = time.monotonic()
    result = carnet("backup", dest, "--data", site.data)
    ended = time.monotonic()
    assert result.exit_code == 0, result.output
    site.writer.wait_for(len(site.writer.acked()) + 1)
    return Taken(dest, result, started, ended, json.loads((dest / backups.MANIFEST).read_text()))


def contents(settings: Settings) -> dict[str, bytes]:
    """Every document content of an installation, read in-process through its document store
    (decrypted with its keys, checked against the recorded SHA-256)."""
    engine = make_engine(settings)
    try:
        store = open_document_store(settings, engine)
        with engine.connect() as conn:
            rows = conn.execute(select(document_contents)).all()
        return {r.binary_id: b"".join(store.for_patient(r.patient_id).open(
            BlobRef(r.blob_key, r.sha256, r.sha1, r.size))) for r in rows}
    finally:
        engine.dispose()


def documents(client: httpx.Client) -> dict[str, str]:
    """DocumentReference id -> Binary id, of every document a server holds."""
    r = client.get("DocumentReference", params={"_count": "1000"})
    assert r.status_code == 200, r.text
    found = {}
    for e in r.json().get("entry", []):
        if e["search"]["mode"] == "match":
            found[e["resource"]["id"]] = e["resource"]["content"][0]["attachment"]["url"].rsplit("/", 1)[1]
    assert "next" not in {link["relation"] for link in r.json().get("link", [])}
    return found


# -- the tests -------------------------------------------------------------------------------------
def test_a_backup_taken_while_the_server_writes_restores_a_copy_that_verifies_and_serves_every_document(
        site: Site, taken: Taken, tmp_path: Path) -> None:
    out, err = taken.result.stdout, taken.result.stderr
    assert "backup written to" in out and "WARNING: this backup holds the master key" in err
    # the server was storing a document while the backup ran (usually several, start to finish)
    during = [a for a in site.writer.acked() if a.sent < taken.ended and a.at > taken.started]
    assert during, "no document was being stored while the backup ran"
    before = [a for a in site.writer.acked() if a.at < taken.started]
    m = taken.manifest
    assert m["format"] == backups.FORMAT and m["with_keys"] is True and m["problems"] == []
    paths = {f["path"] for f in m["files"]}
    assert {"carnet.db", "keys/master.key", "keys/ledger-ed25519.pem", "insi/identities.json"} <= paths
    assert not list(taken.dest.glob("carnet.db-*"))  # a self-contained database file
    assert m["ledger"]["tree_size"] > 0 and m["ledger"]["checkpoint"]["size"] > 0

    restored = tmp_path / "restored"
    r = ok("restore", taken.dest, "--data", restored)
    assert f"carnet verify --data {restored}" in r.stdout
    v = ok("verify", "--data", restored)
    assert f"{m['ledger']['tree_size']} leaves" in v.stdout and "the log verifies" in v.stdout
    ok("keys", "status", "--data", restored)

    copy = LiveServer(settings_for(restored))
    try:
        with (httpx.Client(base_url=copy.url + "/fhir", headers=FHIR_JSON, timeout=60) as new,
              httpx.Client(base_url=site.server.url + "/fhir", headers=FHIR_JSON, timeout=60) as old):
            held = documents(new)
            assert len(held) == m["counts"]["documents"]
            # every document acknowledged before the backup began is in it; nothing that never was
            assert {a.doc_id for a in before} <= set(held)
            assert set(held) <= set(documents(old))
            posted = {a.doc_id: a.content for a in site.writer.acked()}
            for doc_id, binary_id in held.items():
                body = new.get(f"Binary/{binary_id}")
                assert body.status_code == 200, body.text
                assert body.content == old.get(f"Binary/{binary_id}").content, doc_id
                if doc_id in posted:
                    assert body.content == posted[doc_id]
            demo_docs = [d for d in held if d not in posted]
            assert demo_docs, "the demo documents are in the copy"
    finally:
        copy.stop()


def test_content_stored_after_the_snapshot_is_an_extra_the_sweep_removes(site: Site, tmp_path: Path) -> None:
    """Hold the backup between the database snapshot and the blob copy until the server has stored
    two more documents: their content is copied, their rows are not; the restore still verifies,
    every document it holds reads, and `carnet blobs sweep` deletes exactly the extra content."""
    at_snapshot: list[int] = []

    @contextmanager
    def progress(total: int, label: str) -> Iterator[Any]:
        yield backups._NoProgress()
        if label == "copying the database":
            at_snapshot.append(len(site.writer.acked()))
            # the request in flight may have committed before the snapshot; the one after it cannot
            site.writer.wait_for(at_snapshot[0] + 2)

    dest = tmp_path / "held"
    report = backups.backup(site.settings, dest, progress=progress)
    assert report.problems == []
    extra = report.manifest["counts"]["unreferenced_blob_files"]
    assert extra >= 1
    later = site.writer.acked()[at_snapshot[0] + 1]

    restored = tmp_path / "restored"
    ok("restore", dest, "--data", restored)
    ok("verify", "--data", restored)
    readable = contents(settings_for(restored))
    assert len(readable) == report.manifest["counts"]["documents"]
    assert later.content not in readable.values()
    swept = ok("blobs", "sweep", "--grace-hours", "0", "--data", restored).stdout
    assert f"orphans deleted       {extra}" in swept
    assert contents(settings_for(restored)) == readable


def test_a_damaged_backup_is_refused_naming_the_file_and_nothing_is_restored(taken: Taken,
                                                                             tmp_path: Path) -> None:
    blob = next(f["path"] for f in taken.manifest["files"] if f["path"].startswith("blobs/"))
    for n, victim in enumerate([blob, "carnet.db", "keys/master.key"]):
        copy = tmp_path / f"copy-{n}"
        shutil.copytree(taken.dest, copy)
        path = copy / victim
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit
        path.write_bytes(bytes(data))
        target = tmp_path / f"target-{n}"
        line = refused("restore", copy, "--data", target)
        assert "is damaged, nothing was restored" in line and f"{victim} differs from the manifest" in line
        assert not target.exists()
    # a file gone, and two damaged: each named
    copy = tmp_path / "copy-gone"
    shutil.copytree(taken.dest, copy)
    blobs = [f["path"] for f in taken.manifest["files"] if f["path"].startswith("blobs/")]
    (copy / blobs[1]).unlink()
    (copy / blobs[2]).write_bytes(b"")
    line = refused("restore", copy, "--data", tmp_path / "target-gone")
    assert f"{blobs[1]} is missing" in line and f"{blobs[2]} differs from the manifest (size)" in line
    assert not (tmp_path / "target-gone").exists()
    # an unfinished backup (its manifest is written last)
    (copy / backups.MANIFEST).unlink()
    line = refused("restore", copy, "--data", tmp_path / "target-unfinished")
    assert "holds no MANIFEST.json" in line


def test_folders_that_are_not_empty_are_refused(site: Site, taken: Taken, tmp_path: Path) -> None:
    line = refused("backup", taken.dest, "--data", site.data)
    assert "already holds a backup" in line
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("à garder")
    assert "is not empty" in refused("backup", busy, "--data", site.data)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    assert "inside the data folder" in refused("backup", site.data / "backups", "--data", site.data)
    assert not (site.data / "backups").exists()

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "carnet.db").write_bytes(b"")
    assert "is not empty" in refused("restore", taken.dest, "--data", occupied)
    assert [p.name for p in occupied.iterdir()] == ["carnet.db"]
    assert "is not empty" in refused("restore", taken.dest, "--data", site.data)  # the live site itself
    # an existing empty folder will do, for both
    empty, again = tmp_path / "empty", tmp_path / "again"
    empty.mkdir()
    again.mkdir()
    ok("restore", taken.dest, "--data", empty)
    ok("backup", again, "--data", empty)


def test_a_backup_without_keys_is_restored_only_with_its_keys(site: Site, taken: Taken, tmp_path: Path) -> None:
    dest = tmp_path / "no-keys"
    r = ok("backup", dest, "--without-keys", "--data", site.data)
    assert "cannot be read without the key files" in r.stderr and "--keys KEYDIR" in r.stderr
    manifest = json.loads((dest / backups.MANIFEST).read_text())
    assert manifest["with_keys"] is False and not (dest / "keys").exists()
    assert not [f for f in manifest["files"] if f["path"].startswith("keys/")]
    assert manifest["master_key_ids"] == [load_keyring(site.settings.keys_path).current_id]

    line = refused("restore", dest, "--data", tmp_path / "a")
    assert "made --without-keys" in line and "--keys KEYDIR" in line
    stranger = tmp_path / "stranger-keys"
    load_keyring(stranger)  # another installation's master key
    line = refused("restore", dest, "--data", tmp_path / "a", "--keys", stranger)
    assert f"lacks master key(s) {manifest['master_key_ids'][0]}" in line
    no_ledger = tmp_path / "no-ledger-key"
    shutil.copytree(site.settings.keys_path, no_ledger)
    (no_ledger / "ledger-ed25519.pem").unlink()
    assert "has no ledger-ed25519.pem" in refused("restore", dest, "--data", tmp_path / "a", "--keys", no_ledger)
    assert not (tmp_path / "a").exists()

    restored = tmp_path / "restored"
    ok("restore", dest, "--data", restored, "--keys", site.settings.keys_path)
    ok("verify", "--data", restored)
    readable = contents(settings_for(restored))
    original = contents(site.settings)
    assert len(readable) == manifest["counts"]["documents"]
    assert all(original[k] == v for k, v in readable.items())
    # a backup that holds its keys takes no --keys
    line = refused("restore", taken.dest, "--data", tmp_path / "b", "--keys", site.settings.keys_path)
    assert "--keys is for a backup made --without-keys" in line


def test_postgresql_and_s3_are_refused_pointing_to_the_documented_procedure(tmp_path: Path) -> None:
    pg = {"CARNET_DATABASE_URL": "postgresql+psycopg://carnet@127.0.0.1:5432/carnet"}
    line = refused("backup", tmp_path / "b", "--data", tmp_path / "d", env=pg)
    assert "postgresql" in line and "docs/backup.md" in line and "pg_dump" in line
    assert not (tmp_path / "b").exists()
    s3 = {"CARNET_BLOB_URL": "s3://carnet-documents/prod"}
    line = refused("backup", tmp_path / "b", "--data", tmp_path / "d", env=s3)
    assert "s3://" in line and "docs/backup.md" in line


def test_content_missing_from_the_blob_folder_is_reported(taken: Taken, tmp_path: Path) -> None:
    """A backup of an installation that lost a document's content is written, lists the gap in its
    manifest and exits 1."""
    site = tmp_path / "damaged-site"
    ok("restore", taken.dest, "--data", site)
    engine = make_engine(settings_for(site))
    with engine.connect() as conn:
        key = conn.execute(select(document_contents.c.blob_key).limit(1)).scalar_one()
    engine.dispose()
    (site / "blobs" / key[:2] / key[2:4] / key).unlink()
    r = carnet("backup", tmp_path / "b", "--data", site)
    assert r.exit_code == 1 and "written but incomplete: 1 problem(s)" in r.stderr
    manifest = json.loads((tmp_path / "b" / backups.MANIFEST).read_text())
    assert len(manifest["problems"]) == 1 and key in manifest["problems"][0]
    assert hashlib.sha256((tmp_path / "b" / "carnet.db").read_bytes()).hexdigest() == next(
        f["sha256"] for f in manifest["files"] if f["path"] == "carnet.db")


def test_a_backup_of_an_older_schema_is_upgraded_by_the_restore(tmp_path: Path) -> None:
    old = tmp_path / "old"
    engine = make_engine(settings_for(old))
    upgrade(engine, "0007")  # before the audit log's tables
    engine.dispose()
    r = carnet("backup", tmp_path / "b", "--data", old)
    assert r.exit_code == 0, r.output
    assert "could not be recorded in the audit log" in r.stderr  # no audit tables to record it in
    assert json.loads((tmp_path / "b" / backups.MANIFEST).read_text())["database_revision"] == "0007"
    r = ok("restore", tmp_path / "b", "--data", tmp_path / "new")
    assert f"upgraded from 0007 to {head_revision()}" in r.stdout
    ok("verify", "--data", tmp_path / "new")


def test_the_reads_still_in_the_audit_spool_are_in_the_backup(tmp_path: Path) -> None:
    """A read's audit rows wait in the server's spool until the sequencer's next run: the backup
    takes them in before its snapshot, so the copy holds every trace answered before it began."""
    from carnet.audit.events import event_id
    from carnet.audit.spool import Spool
    from carnet.db.tables import audit_events

    data = tmp_path / "data"
    engine = make_engine(settings_for(data))
    upgrade(engine)
    engine.dispose()
    ids = [event_id() for _ in range(3)]
    Spool(data / "audit-spool").append([
        {"id": i, "recorded": 1_796_000_000_000_000, "patient_id": "p", "agent": "Practitioner/x",
         "action": "R", "subtype": "read", "outcome": 0, "content": f'{{"id":"{i}"}}'.encode()} for i in ids])
    ok("backup", tmp_path / "b", "--data", data)
    ok("restore", tmp_path / "b", "--data", tmp_path / "new")
    copy = make_engine(settings_for(tmp_path / "new"))
    with copy.connect() as conn:
        stored = set(conn.execute(select(audit_events.c.id)).scalars())
    copy.dispose()
    assert set(ids) <= stored
