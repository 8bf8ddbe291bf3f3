"""`carnet keys` and `carnet blobs`: master key rotation, status and retirement, and the orphan sweep,
on a real database (SQLite and PostgreSQL) with content stored through the document store."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert, select

from carnet.blobs import BlobRef
from carnet.cli.main import main
from carnet.crypto.keyfiles import read_key_file
from carnet.crypto.keys import Keyring
from carnet.crypto.sqlstore import SqlDataKeyStore
from carnet.db.tables import data_keys, document_contents
from carnet.documents.storage import open_document_store
from carnet.fhir.values import now_us
from tests.conftest import BACKENDS, Backend


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """A fresh database (its own SQLite file or PostgreSQL database) and data folder for one test;
    the command sees only this site's settings."""
    for name in [k for k in os.environ if k.startswith("CARNET_")]:
        monkeypatch.delenv(name)
    b = Backend(request.param, tmp_path)
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path))  # restored afterwards (the CLI sets it too)
    monkeypatch.setenv("CARNET_DATABASE_URL", b.url)
    yield b
    b.close()


def carnet(site: Backend, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--data", str(site.tmp)], catch_exceptions=False)


def ok(site: Backend, *args: str) -> str:
    r = carnet(site, *args)
    assert r.exit_code == 0, r.output
    return r.stdout


def refused(site: Backend, *args: str) -> str:
    r = carnet(site, *args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def store_content(site: Backend, patients: dict[str, bytes]) -> dict[str, BlobRef]:
    store = open_document_store(site.settings, site.engine)
    return {pid: store.for_patient(pid).put([body[:7], body[7:]]) for pid, body in patients.items()}


def read_back(site: Backend, refs: dict[str, BlobRef]) -> dict[str, bytes]:
    store = open_document_store(site.settings, site.engine)  # a fresh keyring from the key files
    return {pid: b"".join(store.for_patient(pid).open(ref)) for pid, ref in refs.items()}


def blob_files(site: Backend) -> dict[str, tuple[bytes, int]]:
    root = site.tmp / "blobs"
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and ".staging" not in p.relative_to(root).parts}


def blob_path(site: Backend, key: str) -> Path:
    return site.tmp / "blobs" / key[:2] / key[2:4] / key


def wrapped_by(site: Backend) -> dict[str, str]:
    with site.engine.connect() as conn:
        return dict(conn.execute(select(data_keys.c.patient_id, data_keys.c.master_key_id)).all())


def key_hex(site: Backend) -> set[str]:
    return {p.read_text().strip() for p in (site.tmp / "keys").glob("master*.key")}


def current_id(site: Backend) -> str:
    return read_key_file(site.tmp / "keys" / "master.key").id


def test_rotate_rewraps_every_data_key_and_leaves_the_content_alone(site: Backend) -> None:
    bodies = {uuid.uuid4().hex: b"%PDF-1.7 compte rendu " + os.urandom(3000),
              uuid.uuid4().hex: "lettre de liaison, é à ç".encode() * 50}
    refs = store_content(site, bodies)
    old = current_id(site)
    assert set(wrapped_by(site).values()) == {old}
    before = blob_files(site)
    assert len(before) == 2
    hex_before = key_hex(site)

    out = ok(site, "keys", "rotate")
    new = current_id(site)
    assert new != old
    assert f"old master key        {old}" in out and f"new master key        {new}" in out
    assert "data keys rewrapped   2" in out
    assert wrapped_by(site) == dict.fromkeys(bodies, new)
    assert read_back(site, refs) == bodies
    assert blob_files(site) == before  # same keys, same bytes, not even rewritten
    assert (site.tmp / "keys" / f"master-{old}.key").is_file()

    status = ok(site, "keys", "status")
    assert f"current master key    {new}" in status
    assert "data keys             2" in status
    assert f"master.key                   {new}  wraps 2 data key(s)  current" in status
    assert f"master-{old}.key  {old}  wraps 0 data key(s)" in status
    for secret in hex_before | key_hex(site):
        assert secret not in status

    assert "current master key cannot be retired" in refused(site, "keys", "retire", new)
    assert ok(site, "keys", "retire", old).strip() == f"master key {old} retired"
    assert not (site.tmp / "keys" / f"master-{old}.key").exists()
    assert read_back(site, refs) == bodies
    assert old not in ok(site, "keys", "status")


def test_retire_is_refused_while_a_data_key_still_needs_the_old_master_key(site: Backend) -> None:
    refs = store_content(site, {"patient-a": b"first document"})
    old = current_id(site)
    ok(site, "keys", "rotate")
    # A server that has not reloaded its keys still wraps a new patient's data key with the old one.
    stale = Keyring(read_key_file(site.tmp / "keys" / f"master-{old}.key"))
    stale.data_key("patient-b", SqlDataKeyStore(site.engine), create=True)
    refs |= store_content(site, {"patient-b": b"second document"})

    message = refused(site, "keys", "retire", old)
    assert f"1 data keys are still wrapped by master key {old}" in message
    assert (site.tmp / "keys" / f"master-{old}.key").is_file()
    assert f"master-{old}.key  {old}  wraps 1 data key(s)" in ok(site, "keys", "status")

    assert "data keys rewrapped   2" in ok(site, "keys", "rotate")
    newest = current_id(site)
    assert set(wrapped_by(site).values()) == {newest}
    ok(site, "keys", "retire", old)
    assert read_back(site, refs) == {"patient-a": b"first document", "patient-b": b"second document"}


def test_errors_are_one_line_messages(site: Backend) -> None:
    assert "no master key" in refused(site, "keys", "rotate")
    assert "none yet" in ok(site, "keys", "status")
    store_content(site, {"patient-a": b"content"})
    assert "not a master key id" in refused(site, "keys", "retire", "../master")
    assert "no key file for master key 0123456789abcdef" in refused(site, "keys", "retire", "0123456789abcdef")


def test_status_flags_data_keys_whose_master_key_file_is_missing(site: Backend) -> None:
    store_content(site, {"patient-a": b"content"})
    old = current_id(site)
    ok(site, "keys", "rotate")
    stale = Keyring(read_key_file(site.tmp / "keys" / f"master-{old}.key"))
    stale.data_key("patient-b", SqlDataKeyStore(site.engine), create=True)
    (site.tmp / "keys" / f"master-{old}.key").unlink()  # lost, not retired
    r = carnet(site, "keys", "status")
    assert r.exit_code == 1
    assert f"(no key file)  {old}  wraps 1 data key(s)" in r.stdout
    assert "1 data key(s) are wrapped by master keys missing" in r.stderr


def test_sweep_deletes_unreferenced_content_and_keeps_referenced_content(site: Backend) -> None:
    refs = store_content(site, {"patient-a": b"published document"})
    orphan = store_content(site, {"patient-a": b"upload whose transaction rolled back"})["patient-a"]
    kept = refs["patient-a"]
    with site.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(insert(document_contents).values(
            binary_id=uuid.uuid4().hex, patient_id="patient-a", blob_key=kept.key, sha256=kept.sha256,
            sha1=kept.sha1, size=kept.size, content_type="application/pdf", created_at=now_us()))
    staging = site.tmp / "blobs" / ".staging" / "dead-writer.part"
    staging.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(staging, (hour_ago, hour_ago))

    out = ok(site, "blobs", "sweep")  # default grace (24 h): everything is too young to go
    assert "orphans deleted       0" in out and "kept, recent          2 (younger than 24 h)" in out
    assert blob_path(site, orphan.key).is_file() and staging.exists()

    out = ok(site, "blobs", "sweep", "--grace-hours", "0")
    assert "blobs examined        2" in out
    assert "orphans deleted       1" in out
    assert "kept, referenced      1" in out
    assert "staging files removed 1" in out
    assert not blob_path(site, orphan.key).exists() and not staging.exists()
    assert blob_path(site, kept.key).is_file()
    assert read_back(site, refs) == {"patient-a": b"published document"}


def test_keys_init_makes_every_key_once_and_the_server_uses_them(site: Backend, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The step before starting several nodes: every key made once in CARNET_KEYS_DIR, kept on a
    second run, and the ones a server then signs and wraps with (none made anew)."""
    keys = tmp_path / "shared-keys"
    monkeypatch.setenv("CARNET_KEYS_DIR", str(keys))
    first = ok(site, "keys", "init")
    assert first.count(" made") == 3 and "kept" not in first
    files = {p.name: p.read_bytes() for p in keys.iterdir()}
    assert set(files) == {"master.key", "token-signing.jwk", "ledger-ed25519.pem"}
    assert all((keys / name).stat().st_mode & 0o077 == 0 for name in files)  # readable by the owner only
    second = ok(site, "keys", "init")
    assert second.count(" kept") == 3 and " made" not in second
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == files
    master_id = read_key_file(keys / "master.key").id
    assert f"master key id         {master_id}" in second
    # a server on this folder publishes the printed verifier key and wraps with the master key
    from starlette.testclient import TestClient

    from carnet.app import create_app
    from carnet.config import Settings

    with TestClient(create_app(Settings())) as client:
        verifier = client.get("/ledger/key").text.strip()
        assert f"ledger verifier key   {verifier}" in second
    store = open_document_store(Settings(), site.engine)
    store.for_patient(f"pk-{uuid.uuid4().hex[:8]}").put([b"%PDF-1.4 shared keys"])
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == files  # nothing made anew
    assert "current master key    " + master_id in ok(site, "keys", "status")
