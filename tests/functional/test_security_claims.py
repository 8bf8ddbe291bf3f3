"""The claims of docs/security.md that no other test holds, over real HTTP on both databases.

- A document's bytes are nowhere in clear at rest: not in any column of any table, not in any file
  of the data folder (the SQLite database and its WAL included), while the clinical resources of
  the FHIR store are in clear (the scanner finds those: it can fail).
- The blob folder and the database without the master key file give ciphertext only; with it they
  give the document.
- What a copy of the database shows, said by the test as the document says it.
- A hidden document, binary or record answers byte for byte like an absent one.
- Secrets (password, TOTP secret and code, authorisation code, access, refresh and ID tokens,
  client secret, cookies, master key, signing keys) never reach the log.
- In production mode the API and the log's entries need a token; proofs and checkpoints do not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from carnet.auth.accounts import AccountStore
from carnet.auth.clients import ClientType
from carnet.config import Mode
from carnet.crypto import stream
from carnet.crypto.errors import DecryptionFailed, KeyUnavailable
from carnet.crypto.keyfiles import load_keyring
from carnet.crypto.keys import DataKey, Keyring, MasterKey, WrappedKey
from carnet.db.tables import (
    audit_events,
    data_keys,
    document_contents,
    metadata,
    oauth_clients,
    patient_accounts,
    resources,
    signin_sessions,
)
from tests.conftest import Fhir, LiveServer
from tests.functional.dicah_world import LAB_REPORT, NORMAL, World
from tests.functional.oauth_helpers import (
    Browser,
    authorize_params,
    backend_token,
    ec_key,
    exchange,
    pkce,
    public_jwks,
    redirect_params,
    register,
)
from tests.functional.test_patient_signin import fresh_totp

LOINC = "http://loinc.org"
ABSENT = "00000000-0000-7000-8000-000000000000"  # the shape of a server id, of no resource


@pytest.fixture
def world(fhir: Fhir) -> World:
    return World(fhir)


def publish(
    fhir: Fhir, patient_id: str, content: bytes, content_type: str = "application/pdf"
) -> dict[str, Any]:
    """ITI-105 as the operator: the DocumentReference as stored."""
    r = fhir.post(
        "DocumentReference",
        json={
            "resourceType": "DocumentReference",
            "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            "type": {"coding": [{"system": LOINC, "code": LAB_REPORT}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "securityLabel": [NORMAL],
            "content": [
                {"attachment": {"contentType": content_type, "data": base64.b64encode(content).decode()}}
            ],
        },
    )
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def binary_id(doc: dict[str, Any]) -> str:
    return str(doc["content"][0]["attachment"]["url"].rsplit("/", 1)[1])


def database_values(fhir: Fhir) -> Iterator[tuple[str, str, bytes]]:
    """Every value of every column of every table, as bytes: (table, column, value)."""
    with fhir.backend.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for column, value in row.items():
                    if isinstance(value, (bytes, memoryview)):
                        yield table.name, column, bytes(value)
                    elif value is not None:
                        yield table.name, column, str(value).encode()


def found_in_database(fhir: Fhir, needle: bytes) -> set[str]:
    return {f"{t}.{c}" for t, c, v in database_values(fhir) if needle in v}


def found_in_files(folder: Path, needle: bytes) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()}


def test_a_documents_bytes_are_in_clear_nowhere_at_rest(world: World) -> None:
    fhir = world.fhir
    alice = world.patient("alice")
    marker = f"SECRET-{secrets.token_hex(16)}".encode()
    content = b"%PDF-1.4\n% compte rendu " + marker + b"\n" + secrets.token_bytes(300) + b"\n%%EOF\n"
    doc = publish(fhir, alice.id, content)
    # the control: a clinical resource of the FHIR store, which is not encrypted, is found by the scans
    observed = f"OBSERVED-{secrets.token_hex(16)}"
    fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": observed},
            "subject": {"reference": f"Patient/{alice.id}"},
        }
    )
    assert fhir.get(f"Binary/{binary_id(doc)}").content == content  # the API serves the bytes

    needles = (marker, base64.b64encode(content), base64.b64encode(marker))
    for needle in needles:
        assert found_in_database(fhir, needle) == set()
        assert found_in_files(fhir.backend.settings.data_dir, needle) == set()
    assert "resources.content" in found_in_database(fhir, observed.encode())
    if fhir.backend.name == "sqlite":  # the database file (or its write-ahead log) holds it in clear
        files = found_in_files(fhir.backend.settings.data_dir, observed.encode())
        assert files and files <= {"carnet.db", "carnet.db-wal"}


def test_the_stored_content_without_the_master_key_file_is_ciphertext_only(world: World) -> None:
    fhir = world.fhir
    alice = world.patient("alice")
    content = b"%PDF-1.4\n" + secrets.token_bytes(2000)
    doc = publish(fhir, alice.id, content)
    with fhir.backend.engine.connect() as conn:
        ref = (
            conn.execute(select(document_contents).where(document_contents.c.binary_id == binary_id(doc)))
            .mappings()
            .one()
        )
        wrapped_row = (
            conn.execute(select(data_keys).where(data_keys.c.patient_id == alice.id)).mappings().one()
        )
    stored = Path(
        fhir.backend.settings.data_dir, "blobs", ref["blob_key"][:2], ref["blob_key"][2:4], ref["blob_key"]
    ).read_bytes()
    # the file: the CRNB header and authenticated segments; its name is not the content's hash
    assert stored[:4] == stream.MAGIC and len(stored) == stream.ciphertext_size(len(content))
    assert content[9:41] not in stored
    assert ref["blob_key"] != hashlib.sha256(content).hexdigest()
    # the database holds the data key wrapped only (61 bytes: version, nonce, key and tag)
    wrapped = WrappedKey(wrapped_row["master_key_id"], bytes(wrapped_row["wrapped"]))
    assert len(wrapped.ciphertext) == 61
    # without the key file: another master key does not unwrap it, even relabelled as the right one
    stranger = Keyring(MasterKey.generate())
    with pytest.raises(KeyUnavailable):
        stranger.unwrap(alice.id, wrapped)
    with pytest.raises(DecryptionFailed):
        stranger.unwrap(alice.id, WrappedKey(stranger.current_id, wrapped.ciphertext))
    # and a guessed data key does not open the content
    with pytest.raises(DecryptionFailed):
        b"".join(stream.decrypt(DataKey.generate(), [stored]))
    # with the key file, the same two things give the document
    keyring = load_keyring(fhir.backend.settings.keys_path, create=False)
    key = keyring.unwrap(alice.id, wrapped)
    assert b"".join(stream.decrypt(key, [stored])) == content
    # a wrapped key moved onto another patient's row does not unwrap for them
    with pytest.raises(DecryptionFailed):
        keyring.unwrap("someone-else", wrapped)


def test_what_a_copy_of_the_database_shows_without_the_key_file(world: World) -> None:
    """The table of docs/security.md: what is in clear in the database, and what is not."""
    fhir = world.fhir
    alice = world.patient("alice")
    pro = world.professional("reader", "10")
    world.care_team(alice, pro)
    content = b"%PDF-1.4\n" + secrets.token_bytes(500)
    doc = publish(fhir, alice.id, content)
    with world.client(pro) as c:
        assert c.get(f"DocumentReference/{doc['id']}").status_code == 200
    secret = AccountStore(fhir.live.settings, fhir.backend.engine).add(
        "alice.sec", "pass phrase 123", alice.id
    )
    assert secret
    patient = fhir.get(f"Patient/{alice.id}").json()
    fhir.live.flush_audit()
    with fhir.backend.engine.connect() as conn:
        stored = {
            (r.res_type, r.res_id): json.loads(bytes(r.content))
            for r in conn.execute(select(resources.c.res_type, resources.c.res_id, resources.c.content))
        }
        contents = (
            conn.execute(select(document_contents).where(document_contents.c.binary_id == binary_id(doc)))
            .mappings()
            .one()
        )
        trail = [
            json.loads(bytes(r.content))
            for r in conn.execute(select(audit_events.c.content).where(audit_events.c.patient_id == alice.id))
        ]
        account = (
            conn.execute(select(patient_accounts).where(patient_accounts.c.username == "alice.sec"))
            .mappings()
            .one()
        )
    # identities: the Patient with its INS matricule and strict traits, as JSON
    assert stored[("Patient", alice.id)]["identifier"] == patient["identifier"]
    assert alice.matricule in json.dumps(stored[("Patient", alice.id)])
    # the document's metadata, its content's SHA-1 (attachment.hash) and SHA-256 and size
    assert stored[("DocumentReference", doc["id"])]["type"] == doc["type"]
    assert contents["sha256"] == hashlib.sha256(content).hexdigest() and contents["size"] == len(content)
    assert (
        stored[("DocumentReference", doc["id"])]["content"][0]["attachment"]["hash"]
        == base64.b64encode(hashlib.sha1(content).digest()).decode()
    )
    # who read the record and when, in the audit trail
    assert any(e["agent"][0]["who"].get("reference") == pro.ref for e in trail)
    # the care team (the record's access rules)
    assert any(t == "CareTeam" for t, _ in stored)
    # accounts: the password as an argon2id hash, the TOTP secret sealed (in no column in clear)
    assert account["password_hash"].startswith("$argon2id$") and "pass phrase" not in account["password_hash"]
    assert account["totp_secret"].startswith("v1.") and not found_in_database(fhir, secret.encode())
    # and not the content: the Binary resource holds no data
    assert "data" not in stored[("Binary", binary_id(doc))]
    # but a Binary created through plain FHIR REST, outside MHD, is a resource like any other: in clear
    plain = base64.b64encode(b"not a document " + secrets.token_bytes(8)).decode()
    loose = fhir.create({"resourceType": "Binary", "contentType": "text/plain", "data": plain})
    assert found_in_database(fhir, plain.encode()) >= {"resources.content", "resource_versions.content"}
    assert loose["data"] == plain


def normalised(r: httpx.Response, *ids: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """A response with the ids asked for and the instants it was made replaced: what a caller can
    compare between a hidden resource and an absent one."""
    body = r.content
    for rid in ids:
        body = body.replace(rid.encode(), b"<id>")
    body = re.sub(rb"_snapshot=\d+", b"_snapshot=<t>", body)
    body = re.sub(rb'"(lastUpdated|timestamp)":"[^"]+"', rb'"\1":"<t>"', body)
    body = re.sub(rb'"id":"[0-9a-f-]{36}"', b'"id":"<bundle>"', body)
    headers = sorted((k, v) for k, v in r.headers.items() if k not in ("date", "content-length"))
    return r.status_code, headers, body


def test_a_hidden_resource_answers_byte_for_byte_like_an_absent_one(world: World) -> None:
    alice = world.patient("alice")
    nurse, outsider = world.professional("nurse", "60"), world.professional("outsider", "10")
    world.care_team(alice, nurse)
    plain = world.document(alice)
    masked = world.document(alice, labels=("MASQUE_PS",))
    plain_binary = binary_id(world.fhir.get(f"DocumentReference/{plain}").json())
    masked_binary = binary_id(world.fhir.get(f"DocumentReference/{masked}").json())
    probes = [
        "DocumentReference/{}",
        "DocumentReference/{}/_history",
        "DocumentReference/{}/_history/1",
        "DocumentReference?_id={}",
        "DocumentReference?_id={}&_summary=count",
        "DocumentReference?_id={}&_include=DocumentReference:subject",
        "DocumentReference?_id={}&_total=accurate",
    ]
    cases = [(outsider, plain, plain_binary, f"Patient/{alice.id}"), (nurse, masked, masked_binary, None)]
    for who, doc, binary, record in cases:
        with world.client(who) as c:
            for probe in probes:
                hidden, absent = c.get(probe.format(doc)), c.get(probe.format(ABSENT))
                assert normalised(hidden, doc) == normalised(absent, ABSENT), probe
            hidden, absent = c.get(f"Binary/{binary}"), c.get(f"Binary/{ABSENT}")
            assert hidden.status_code == 404 and normalised(hidden, binary) == normalised(absent, ABSENT)
            if record:
                hidden, absent = c.get(record), c.get(f"Patient/{ABSENT}")
                assert hidden.status_code == 404
                assert normalised(hidden, alice.id) == normalised(absent, ABSENT)
        assert world.sees(alice, f"DocumentReference/{doc}")  # it exists: its patient reads it


CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own HTTP client, not the server


def test_secrets_never_reach_the_log(fhir: Fhir, caplog: pytest.LogCaptureFixture) -> None:
    """A patient's whole sign-in (a wrong password, then password and TOTP), the code exchange with
    PKCE, refresh, API calls, a refused token, revocation and an emergency token,
    with the root logger at DEBUG (as an operator chasing a problem would set it). SQLAlchemy's
    statement log stays off: it prints the parameters of every statement (docs/security.md)."""
    world = World(fhir)
    alice = world.patient("alice")
    er = world.professional("er", "10")
    base = fhir.live.url
    password = f"pw-{secrets.token_urlsafe(12)}"
    caplog.set_level(logging.WARNING, logger="sqlalchemy")
    caplog.set_level(logging.DEBUG)  # last: it sets the capturing handler's level too
    totp = AccountStore(fhir.live.settings, fhir.backend.engine).add("alice.logs", password, alice.id)
    assert totp
    client, _ = register(fhir, ClientType.PUBLIC, "openid fhirUser offline_access patient/*.rs")
    seen: list[str] = [password, totp]
    with Browser(timeout=30, follow_redirects=False) as browser:
        verifier, challenge = pkce()
        params = authorize_params(
            client.client_id,
            "openid fhirUser offline_access patient/*.rs",
            challenge,
            base + "/fhir",
            nonce=secrets.token_urlsafe(8),
        )
        page = browser.start(base, params)
        wrong = browser.submit(
            base, "/oauth/signin/patient", page, username="alice.logs", password=password + "x"
        )
        assert wrong.status_code == 401
        page = browser.get(base + "/oauth/signin")
        browser.submit(base, "/oauth/signin/patient", page, username="alice.logs", password=password)
        code_page = browser.get(base + "/oauth/signin")
        code = fresh_totp(totp)
        got = redirect_params(browser.submit(base, "/oauth/signin/patient/code", code_page, code=code))
        seen += [got["code"], verifier, *browser.cookies.values()]
        tokens = exchange(browser, base, client.client_id, got["code"], verifier).json()
        refreshed = browser.post(
            base + "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": client.client_id,
            },
        ).json()
        seen += [
            tokens["access_token"],
            tokens["refresh_token"],
            tokens["id_token"],
            refreshed["access_token"],
            refreshed["refresh_token"],
        ]
        auth = {"Authorization": f"Bearer {refreshed['access_token']}"}
        assert browser.get(f"{base}/fhir/Patient/{alice.id}", headers=auth).status_code == 200
        assert (
            browser.get(
                f"{base}/fhir/Patient/{alice.id}",
                headers={"Authorization": f"Bearer {refreshed['access_token'][:-4]}AAAA"},
            ).status_code
            == 401
        )
        r = browser.post(
            base + "/oauth/revoke", data={"token": refreshed["refresh_token"], "client_id": client.client_id}
        )
        assert r.status_code == 200
        assert (
            browser.post(
                base + "/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refreshed["refresh_token"],
                    "client_id": client.client_id,
                },
            ).status_code
            == 400
        )
    with world.client(er) as c:
        r = c.post(
            f"Patient/{alice.id}/$break-glass",
            json={
                "resourceType": "Parameters",
                "parameter": [{"name": "reason", "valueString": "inconsciente"}],
            },
        )
        assert r.status_code == 200, r.text
        seen.append(next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "access_token"))
        seen.append(c.headers["authorization"].split()[1])
    keys = fhir.backend.settings.keys_path
    seen.append((keys / "master.key").read_text().strip())
    seen.append(json.loads((keys / "token-signing.jwk").read_text())["d"])
    seen.append(fhir.backend.settings.signing_key().decode())
    pem = (keys / "ledger-ed25519.pem").read_text()
    seen.append("".join(pem.splitlines()[1:-1]))
    server = [r for r in caplog.records if r.name.split(".")[0] not in CLIENT_LOGGERS]
    assert any(r.name == "carnet.auth" and "signed in" in r.getMessage() for r in server)  # the log is caught
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in server)
    for value in seen:
        assert value and value not in logged, f"a secret of {len(value)} characters is in the log"
    assert not re.search(rf"(?<!\d){code}(?!\d)", logged), "the TOTP code is in the log"


@pytest.fixture
def production(fhir: Fhir) -> Iterator[LiveServer]:
    server = LiveServer(fhir.backend.settings.model_copy(update={"mode": Mode.PRODUCTION}))
    yield server
    server.stop()


def test_in_production_the_api_and_the_logs_entries_need_a_token(fhir: Fhir, production: LiveServer) -> None:
    world = World(fhir)
    alice = world.patient("alice")
    base = production.url
    with httpx.Client(timeout=30) as http:
        for path in (f"/fhir/Patient/{alice.id}", "/fhir/Patient", "/fhir/AuditEvent"):
            r = http.get(base + path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["resourceType"] == "OperationOutcome"
            assert alice.id not in r.text or path.endswith(alice.id)
        assert http.get(base + "/ledger/entries", params={"start": 0, "end": 1}).status_code in (401, 403)
        # what reveals nobody is public: the verifier key, checkpoints (the first within seconds), proofs
        assert http.get(base + "/ledger/key").status_code == 200
        deadline = time.monotonic() + 15
        while (checkpoint := http.get(base + "/ledger/checkpoint")).status_code == 404:
            assert time.monotonic() < deadline, "no checkpoint was signed"
            time.sleep(0.2)
        assert checkpoint.status_code == 200
        size = int(checkpoint.text.splitlines()[1])
        assert (
            http.get(base + "/ledger/proof/inclusion", params={"index": 0, "size": size}).status_code == 200
        )
        # the development sign-in (pick any professional) does not exist in production; it does in development
        assert http.post(base + "/oauth/signin/development", data={"csrf": "x"}).status_code in (404, 405)
        assert http.post(fhir.live.url + "/oauth/signin/development", data={"csrf": "x"}).status_code not in (
            404,
            405,
        )
        token = production.app.state.issuer.issue(world.principal(alice))
        r = http.get(f"{base}/fhir/Patient/{alice.id}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


REFUSE_AUDIT = {
    "sqlite": [
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    ],
}
ALLOW_AUDIT = {
    "sqlite": ["DROP TRIGGER IF EXISTS refuse_audit"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS refuse_audit ON audit_events",
        "DROP FUNCTION IF EXISTS refuse_audit()",
    ],
}


def _refused_everywhere(c: Any, paths: tuple[str, ...], doc: str) -> None:
    for path in paths:
        r = c.get(path)
        assert r.status_code == 503, (path, r.status_code)
        assert r.json()["resourceType"] == "OperationOutcome"
        assert "tracé" in r.text and "traced" in r.text
        assert doc not in r.text and "%PDF" not in r.text


def test_an_access_that_cannot_be_traced_is_not_served(world: World) -> None:
    """The audit trail cannot be written (the database refuses its rows): a write is not kept. A
    read whose trail goes in with it (PostgreSQL) answers an error without the resource, a search
    without the results; on SQLite a read's trail goes to the server's spool first: it is served,
    and its rows reach the database once it takes them again. A spool that cannot take them (a
    full disk: its file's descriptor made /dev/full's) refuses the read."""
    fhir = world.fhir
    alice = world.patient("alice")
    gp = world.professional("gp", "10")
    world.treating(alice, gp)
    doc = world.document(alice)
    binary = binary_id(fhir.get(f"DocumentReference/{doc}").json())
    engine = fhir.backend.engine
    spool = fhir.live.app.state.fhir.audit.spool
    assert (spool is None) == (fhir.backend.name == "postgresql")
    paths = (f"DocumentReference/{doc}", f"Binary/{binary}", f"DocumentReference?patient={alice.id}")

    def traced_reads() -> int:
        fhir.live.flush_audit()
        with engine.connect() as conn:
            return len([c for (c,) in conn.execute(select(audit_events.c.content).where(
                audit_events.c.agent == f"Practitioner/{gp.id}", audit_events.c.action.in_(("R", "E"))))
                if doc in bytes(c).decode() or binary in bytes(c).decode()])

    before = traced_reads()
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        for statement in REFUSE_AUDIT[fhir.backend.name]:
            conn.exec_driver_sql(statement)
    try:
        with world.client(gp) as c:
            if spool is None:
                _refused_everywhere(c, paths, doc)
            else:
                for path in paths:
                    assert c.get(path).status_code == 200, path
            r = c.post(
                "Observation",
                json={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "poids"},
                    "subject": {"reference": f"Patient/{alice.id}"},
                },
            )
            # not kept; on SQLite the failure itself is traced in the spool: a server error
            assert r.status_code == (503 if spool is None else 500), r.text
            assert "changed nothing" in r.text or "traced" in r.text
    finally:
        with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            for statement in ALLOW_AUDIT[fhir.backend.name]:
                conn.exec_driver_sql(statement)
    assert fhir.get("Observation", params={"subject": f"Patient/{alice.id}"}).json()["total"] == 0
    if spool is not None:
        assert traced_reads() == before + 3  # the three reads served meanwhile: none lost
        saved, full = os.dup(spool._fd), os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, spool._fd)
        try:
            with world.client(gp) as c:
                _refused_everywhere(c, paths, doc)
        finally:
            os.dup2(saved, spool._fd)
            os.close(saved)
            os.close(full)
    with world.client(gp) as c:
        assert c.get(f"DocumentReference/{doc}").status_code == 200


def test_a_database_writer_without_the_keys_reads_through_the_running_server_and_is_traced(
    world: World,
) -> None:
    """The limit of encryption at rest: whoever can write the live database needs no key file. A
    row slipped into ``oauth_clients`` by hand (a backend client with the writer's public key) gets
    a system token from the server, which decrypts the content for it. What remains: the reads are
    in the audit trail under that client, and no ``admin:client-add`` trace says who registered it."""
    fhir = world.fhir
    alice = world.patient("alice")
    content = b"%PDF-1.4\n" + secrets.token_bytes(200)
    doc = publish(fhir, alice.id, content)
    key = ec_key()
    client_id = "planted-" + secrets.token_hex(4)
    with fhir.backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(
            insert(oauth_clients).values(
                client_id=client_id,
                name="x",
                client_type="backend",
                secret_hash=None,
                redirect_uris="[]",
                scope="system/*.rs",
                jwks=json.dumps(public_jwks(key)),
                created_at=0,
            )
        )
    base = fhir.live.url
    with httpx.Client(timeout=30) as http:
        r = backend_token(http, base, client_id, key, "system/*.rs")
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert http.get(f"{base}/fhir/Binary/{binary_id(doc)}", headers=auth).content == content
    events = fhir.get("AuditEvent", params={"patient": alice.id, "subtype": "read"}).json().get("entry", [])
    assert any(client_id in json.dumps(e["resource"]["agent"]) for e in events)
    with fhir.backend.engine.connect() as conn:  # what `carnet client add` would have traced
        admin = conn.execute(
            select(audit_events.c.content).where(audit_events.c.subtype == "admin:client-add")
        )
        assert not any(client_id.encode() in bytes(row.content) for row in admin)


def test_a_session_row_written_by_hand_is_a_portal_session_as_anyone(world: World) -> None:
    """The same limit through the portal: a ``signin_sessions`` row with chosen claims, under the
    SHA-256 of a cookie the writer chose, opens the patient's pages and their documents' bytes."""
    fhir = world.fhir
    alice = world.patient("alice")
    content = b"%PDF-1.4\n" + secrets.token_bytes(200)
    doc = publish(fhir, alice.id, content)
    cookie = secrets.token_urlsafe(32)
    now = time.time()
    claims = {
        "sub": alice.matricule,
        "kind": "patient",
        "scope": "patient/*.cruds",
        "access_mode": "normal",
        "fhirUser": alice.ref,
        "patient": alice.id,
    }
    with fhir.backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(
            insert(signin_sessions).values(
                session_id=hashlib.sha256(cookie.encode()).hexdigest(),
                expires_at=int((now + 600) * 1_000_000),
                state=json.dumps({"claims": claims, "signed_in": now, "renewed": now, "emergency": {}}),
            )
        )
    with httpx.Client(base_url=fhir.live.url, cookies={"carnet_portail": cookie}, timeout=30) as browser:
        r = browser.get(f"/portail/documents/{doc['id']}/contenu")
        assert r.status_code == 200 and r.content == content
    # a cookie naming no row opens nothing
    with httpx.Client(
        base_url=fhir.live.url, cookies={"carnet_portail": secrets.token_urlsafe(32)}
    ) as stranger:
        assert stranger.get(f"/portail/documents/{doc['id']}/contenu").status_code != 200
