"""Patients sign in at /oauth/authorize with a password and a one-time code (an authenticator's TOTP,
or a code sent through the notifier), get a token bound to their own record, and are locked out
after repeated failures."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from carnet.auth.accounts import AccountStore, Outcome
from carnet.auth.clients import ClientType
from carnet.db.tables import patient_accounts
from tests.conftest import Fhir
from tests.functional.oauth_helpers import (
    Browser,
    add_patient,
    authorize_params,
    exchange,
    pkce,
    redirect_params,
    register,
    verify_jwt,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def browser(fhir: Fhir) -> Iterator[Browser]:
    with Browser(timeout=30, follow_redirects=False) as b:
        yield b


def accounts(fhir: Fhir) -> AccountStore:
    return AccountStore(fhir.live.settings, fhir.backend.engine)


def start(fhir: Fhir, browser: Browser, client_id: str, scope: str) -> tuple[httpx.Response, str]:
    verifier, challenge = pkce()
    page = browser.start(fhir.live.url, authorize_params(client_id, scope, challenge, fhir.live.url + "/fhir"))
    return page, verifier


def fresh_totp(secret: str) -> str:
    """The current TOTP code, waiting for the next step when this one is about to end."""
    totp = pyotp.TOTP(secret)
    if 30 - time.time() % 30 < 3:
        time.sleep(3)
    return totp.now()


def test_patient_signs_in_with_password_and_totp(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    _, pid = add_patient(fhir)
    _, other = add_patient(fhir, "1700575056045", "BERNARD", "PAUL")
    secret = accounts(fhir).add("Lucie.Durand", PASSWORD, pid)
    assert secret
    client, _ = register(fhir, ClientType.PUBLIC, "openid fhirUser launch/patient offline_access patient/*.rs")
    page, verifier = start(fhir, browser, client.client_id, "openid fhirUser launch/patient patient/*.rs")
    step = browser.submit(base, "/oauth/signin/patient", page, username="lucie.durand", password=PASSWORD)
    assert step.status_code == 303 and step.headers["location"] == "/oauth/signin"
    code_page = browser.get(base + "/oauth/signin")
    assert "Code à usage unique" in code_page.text and "authentification" in code_page.text
    assert PASSWORD not in code_page.text
    done = browser.submit(base, "/oauth/signin/patient/code", code_page, code=fresh_totp(secret))
    got = redirect_params(done)
    r = exchange(browser, base, client.client_id, got["code"], verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["patient"] == pid  # the launch context: their own record
    assert set(tokens["scope"].split()) == {"openid", "fhirUser", "launch/patient", "patient/*.rs"}
    claims = verify_jwt(browser, base, tokens["access_token"])
    assert claims["kind"] == "patient" and claims["fhirUser"] == f"Patient/{pid}" and claims["patient"] == pid
    assert "acr" not in claims  # a password and a code are not an eIDAS substantial sign-on
    id_token = verify_jwt(browser, base, tokens["id_token"])
    assert id_token["sub"] == pid and id_token["fhirUser"] == f"{base}/fhir/Patient/{pid}"
    assert "amr" in id_token and "otp" in id_token["amr"]
    # the sign-in is in the patient's history (their own token reads it)
    logins = [e["resource"] for e in browser.get(
        f"{base}/fhir/AuditEvent", params={"subtype": "login"},
        headers={"Authorization": f"Bearer {tokens['access_token']}"}).json().get("entry", [])]
    assert len(logins) == 1 and logins[0]["outcome"] == "0"
    assert logins[0]["agent"][0]["who"]["reference"] == f"Patient/{pid}"
    # their record, not someone else's; and read-only
    auth = {"Authorization": f"Bearer {tokens['access_token']}", "Content-Type": "application/fhir+json"}
    assert browser.get(f"{base}/fhir/Patient/{pid}", headers=auth).status_code == 200
    assert browser.get(f"{base}/fhir/Patient/{other}", headers=auth).status_code == 404
    r = browser.put(f"{base}/fhir/Patient/{pid}", headers=auth,
                    json=fhir.get(f"Patient/{pid}").json() | {"gender": "male"})
    assert r.status_code == 403
    # the same TOTP code cannot serve twice
    page, _ = start(fhir, browser, client.client_id, "patient/*.rs")
    browser.submit(base, "/oauth/signin/patient", page, username="lucie.durand", password=PASSWORD)
    code_page = browser.get(base + "/oauth/signin")
    reused = browser.submit(base, "/oauth/signin/patient/code", code_page, code=pyotp.TOTP(secret).now())
    if reused.status_code == 303:  # the step turned meanwhile: that was a new code
        return
    assert reused.status_code == 401 and "incorrect" in reused.text


def test_wrong_passwords_lock_the_account(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    _, pid = add_patient(fhir)
    secret = accounts(fhir).add("lucie", PASSWORD, pid)
    assert secret
    client, _ = register(fhir, ClientType.PUBLIC, "patient/*.rs")
    page, _ = start(fhir, browser, client.client_id, "patient/*.rs")
    limit = fhir.live.settings.signin_max_failures
    for _ in range(limit - 1):
        r = browser.submit(base, "/oauth/signin/patient", page, username="lucie", password="wrong password!")
        assert r.status_code == 401 and "incorrect" in r.text
    # an unknown username answers exactly like a wrong password
    unknown = browser.submit(base, "/oauth/signin/patient", page, username="nobody", password="whatever12")
    assert unknown.status_code == 401 and "incorrect" in unknown.text
    r = browser.submit(base, "/oauth/signin/patient", page, username="lucie", password="wrong again!!")
    assert r.status_code == 429 and "bloquée" in r.text
    # locked: even the right password and code are refused now, from any browser
    with Browser(timeout=30, follow_redirects=False) as other:
        page2, _ = start(fhir, other, client.client_id, "patient/*.rs")
        r = other.submit(base, "/oauth/signin/patient", page2, username="lucie", password=PASSWORD)
        assert r.status_code == 429 and "bloquée" in r.text
    account = accounts(fhir).get("lucie")
    assert account is not None and account.locked_until is not None and account.locked_until > time.time()
    # wrong one-time codes count too: another account, right password, wrong codes
    _, pid2 = add_patient(fhir, "1700575056045", "BERNARD", "PAUL")
    secret2 = accounts(fhir).add("paul", PASSWORD, pid2)
    assert secret2
    with Browser(timeout=30, follow_redirects=False) as third:
        page3, _ = start(fhir, third, client.client_id, "patient/*.rs")
        third.submit(base, "/oauth/signin/patient", page3, username="paul", password=PASSWORD)
        code_page = third.get(base + "/oauth/signin")
        assert "Code à usage unique" in code_page.text
        for _ in range(limit - 1):
            r = third.submit(base, "/oauth/signin/patient/code", code_page, code="000000")
            assert r.status_code == 401 and "incorrect" in r.text
        r = third.submit(base, "/oauth/signin/patient/code", code_page, code="000000")
        assert r.status_code == 429 and "bloquée" in r.text
    account2 = accounts(fhir).get("paul")
    assert account2 is not None and account2.locked_until is not None
    # every failed attempt is traced for the record whose account it was, never the password
    failed = [e["resource"] for e in fhir.get("AuditEvent", params={
        "subtype": "login", "outcome": "8", "patient": pid, "_count": "100"}).json().get("entry", [])]
    assert len(failed) == limit + 1  # limit on this browser, then the right password while locked
    assert all("wrong password!" not in json.dumps(e) for e in failed)
    assert len(fhir.get("AuditEvent", params={"subtype": "login", "outcome": "8", "patient": pid2}).json()
               .get("entry", [])) == limit


def test_a_code_sent_through_the_notifier(fhir: Fhir, browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    base = fhir.live.url
    _, pid = add_patient(fhir)
    assert accounts(fhir).add("sms-user", PASSWORD, pid, totp=False, channel="sms:+33600000000") is None
    client, _ = register(fhir, ClientType.PUBLIC, "patient/*.rs")
    page, verifier = start(fhir, browser, client.client_id, "patient/*.rs")
    with caplog.at_level(logging.INFO):
        browser.submit(base, "/oauth/signin/patient", page, username="sms-user", password=PASSWORD)
    sent = [r.getMessage() for r in caplog.records if r.name == "carnet.notify"]
    assert len(sent) == 1 and "sms:+33600000000" in sent[0]
    assert PASSWORD not in caplog.text  # the password never reaches the log
    code = re.search(r"(\d{6})$", sent[0])
    assert code
    code_page = browser.get(base + "/oauth/signin")
    assert "envoyé" in code_page.text
    wrong = "000000" if code.group(1) != "000000" else "111111"
    r = browser.submit(base, "/oauth/signin/patient/code", code_page, code=wrong)
    assert r.status_code == 401
    done = browser.submit(base, "/oauth/signin/patient/code", code_page, code=code.group(1))
    got = redirect_params(done)
    r = exchange(browser, base, client.client_id, got["code"], verifier)
    assert r.status_code == 200 and r.json()["patient"] == pid


def test_account_command(fhir: Fhir, tmp_path: object) -> None:
    """``carnet account add-patient`` against the test database, as an operator runs it."""
    from tests.support.cli import run_carnet

    matricule, pid = add_patient(fhir)
    env = {"CARNET_DATABASE_URL": fhir.backend.url, "CARNET_DATA_DIR": str(fhir.backend.tmp)}
    r = run_carnet("account", "add-patient", "--matricule", matricule, "--username", "Lucie",
                   input=PASSWORD + "\n", env=env)
    assert r.exit_code == 0, r.stderr
    assert f"Patient/{pid}" in r.stdout and "otpauth://totp/" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    secret = re.search(r"totp secret: (\w+)", r.stdout)
    assert secret
    stored = accounts(fhir).get("lucie")
    assert stored is not None and stored.patient_id == pid and accounts(fhir).totp_secret(stored) == secret.group(1)
    assert stored.totp_sealed and secret.group(1) not in stored.totp_sealed
    # the operator's command is traced on the record it touched, without the secret
    traced = [e["resource"] for e in fhir.get("AuditEvent", params={
        "patient": pid, "subtype": "admin:account-add"}).json().get("entry", [])]
    assert len(traced) == 1 and traced[0]["agent"][0]["who"]["identifier"]["value"].startswith("cli:")
    assert secret.group(1) not in json.dumps(traced) and PASSWORD not in json.dumps(traced)
    r = run_carnet("account", "add-patient", "--matricule", "180037505600012", "--username", "x",
                   "--password", PASSWORD, env=env)
    assert r.exit_code != 0 and "180037505600012" in r.stderr


def test_an_address_that_fails_too_often_is_refused_whatever_account_it_tries(fhir: Fhir) -> None:
    """Password spraying: a few wrong passwords on many accounts lock none of them, but the
    address runs out of failures and is refused, even with a right password."""
    from tests.conftest import LiveServer

    _, pid = add_patient(fhir)
    for name in ("alice", "bruno", "chloe"):
        accounts(fhir).add(name, PASSWORD, pid)
    client, _ = register(fhir, ClientType.PUBLIC, "patient/*.rs")
    server = LiveServer(fhir.live.settings.model_copy(update={"signin_address_max_failures": 3}))
    try:
        with Browser(timeout=30, follow_redirects=False) as browser:
            verifier, challenge = pkce()
            page = browser.start(server.url, authorize_params(client.client_id, "patient/*.rs", challenge,
                                                             server.url + "/fhir"))
            for name in ("alice", "bruno", "chloe"):  # one wrong password each: no account locks
                r = browser.submit(server.url, "/oauth/signin/patient", page, username=name, password="nope nope")
                assert r.status_code == 401
            r = browser.submit(server.url, "/oauth/signin/patient", page, username="alice", password=PASSWORD)
            assert r.status_code == 429 and "depuis votre réseau" in r.text
            assert all(not (a := accounts(fhir).get(n)) or a.locked_until is None for n in ("alice", "bruno"))
        # the refusal is traced
        events = fhir.get("AuditEvent", params={"subtype": "login", "outcome": "8", "_count": "50"}).json()
        assert any("throttled" in (e["resource"].get("outcomeDesc") or "") for e in events.get("entry") or [])
    finally:
        server.stop()
    assert verifier


def stored_secret(fhir: Fhir, username: str) -> str:
    with fhir.backend.engine.connect() as conn:
        return str(conn.execute(select(patient_accounts.c.totp_secret)
                                .where(patient_accounts.c.username == username)).scalar_one())


def store_secret(fhir: Fhir, username: str, value: str) -> None:
    """Write a TOTP secret into the row by hand, as a new enrolment (no step used yet)."""
    with fhir.backend.engine.begin() as conn:
        conn.execute(update(patient_accounts).where(patient_accounts.c.username == username)
                     .values(totp_secret=value, totp_last_step=None))


def test_the_totp_secret_is_stored_sealed_and_opens_for_its_own_account_only(fhir: Fhir) -> None:
    """A copy of the database gives no second factor, and a sealed secret moved to another
    account (by someone who can write the table) makes no code that account accepts."""
    _, pid = add_patient(fhir)
    _, other = add_patient(fhir, "1700575056045", "BERNARD", "PAUL")
    store = accounts(fhir)
    secret = store.add("lucie", PASSWORD, pid)
    assert secret and store.add("paul", PASSWORD, other)
    sealed = stored_secret(fhir, "lucie")
    assert sealed.startswith("v1.") and secret not in sealed
    store_secret(fhir, "paul", sealed)
    assert store.check_password("paul", PASSWORD).outcome is Outcome.OK
    assert store.check_totp("paul", fresh_totp(secret)).outcome is Outcome.WRONG
    assert store.check_totp("lucie", fresh_totp(secret)).outcome is Outcome.OK


def test_a_secret_stored_in_clear_by_an_earlier_version_is_sealed_and_keeps_working(fhir: Fhir) -> None:
    """``carnet migrate`` seals the secrets an earlier version stored in clear; a sign-in with one
    that is still in clear works and seals it. Either way the patient's authenticator still fits."""
    from tests.support.cli import run_carnet

    _, pid = add_patient(fhir)
    store = accounts(fhir)
    store.add("lucie", PASSWORD, pid)
    clear = pyotp.random_base32()
    store_secret(fhir, "lucie", clear)
    env = {"CARNET_DATABASE_URL": fhir.backend.url, "CARNET_DATA_DIR": str(fhir.backend.tmp)}
    r = run_carnet("migrate", env=env)
    assert r.exit_code == 0 and "sealed 1 TOTP secrets stored in clear" in r.stderr, r.stderr
    sealed = stored_secret(fhir, "lucie")
    assert sealed.startswith("v1.") and clear not in sealed
    assert store.check_totp("lucie", fresh_totp(clear)).outcome is Outcome.OK
    assert "sealed" not in run_carnet("migrate", env=env).stderr  # nothing left to seal

    again = pyotp.random_base32()
    store_secret(fhir, "lucie", again)
    assert store.check_totp("lucie", fresh_totp(again)).outcome is Outcome.OK
    assert stored_secret(fhir, "lucie").startswith("v1.") and again not in stored_secret(fhir, "lucie")


def test_a_destroyed_data_key_leaves_the_account_no_second_factor(fhir: Fhir) -> None:
    """Shredding a patient's data key (erasure) also makes their TOTP secret unreadable, and a
    sign-in attempt does not make a new key for them."""
    from carnet.crypto.keyfiles import load_keyring
    from carnet.crypto.sqlstore import SqlDataKeyStore

    _, pid = add_patient(fhir)
    store = accounts(fhir)
    secret = store.add("lucie", PASSWORD, pid)
    assert secret
    keys = SqlDataKeyStore(fhir.backend.engine)
    assert load_keyring(fhir.live.settings.keys_path).shred(pid, keys)
    assert store.check_totp("lucie", fresh_totp(secret)).outcome is Outcome.WRONG
    assert keys.get(pid) is None
