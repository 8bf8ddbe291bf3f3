"""Tokens typed or forged with non-ASCII characters (a CSRF token, a one-time code, an OAuth state)
are refused like any wrong token, never with a 500: ``compare_digest`` raises TypeError on ``str``
holding non-ASCII characters, so the comparisons are made on bytes.

The first two inputs are the exact forms schemathesis posted (tests/functional/test_schemathesis.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from carnet.auth.accounts import AccountStore
from carnet.auth.clients import ClientType
from tests.conftest import Fhir
from tests.functional.oauth_helpers import Browser, add_patient, authorize_params, pkce, register

BOUNDARY = "a4f81009dcb078e17fc19fb632326c8b"


def _multipart(fields: list[tuple[str, str]]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


@pytest.fixture
def browser(fhir: Fhir) -> Iterator[Browser]:
    with Browser(timeout=30, follow_redirects=False) as b:
        yield b


@pytest.mark.parametrize("action", ["/portail/connexion", "/portail/langue"])
def test_a_portal_form_with_a_non_ascii_csrf_token_is_refused_with_403(fhir: Fhir, browser: Browser,
                                                                      action: str) -> None:
    body = _multipart([("óµT𰯆ñ;ÓOÆ±Ê«ú'", "null"), ("j", "ëã+Yª"), ("csrf", "OJò")])
    r = browser.post(fhir.live.url + action, content=body,
                     headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert r.status_code == 403, r.text
    assert "text/html" in r.headers["content-type"]
    landing = browser.get(fhir.live.url + "/")  # an anonymous form token in its cookie: still refused
    assert landing.status_code == 200
    r = browser.post(fhir.live.url + action, data={"csrf": "jeton-forgé-é"})
    assert r.status_code == 403, r.text


def _signin_page(fhir: Fhir, browser: Browser) -> None:
    client, _ = register(fhir, ClientType.PUBLIC, "openid fhirUser launch/patient patient/*.rs")
    _, challenge = pkce()
    browser.start(fhir.live.url, authorize_params(client.client_id, "openid launch/patient patient/*.rs",
                                                  challenge, fhir.live.url + "/fhir"))


def test_a_sign_in_form_with_a_non_ascii_csrf_token_is_refused_with_403(fhir: Fhir, browser: Browser) -> None:
    _signin_page(fhir, browser)
    r = browser.post(fhir.live.url + "/oauth/signin/cancel", data={"csrf": "é" * 64})
    assert r.status_code == 403, r.text
    assert "Formulaire expiré ou invalide" in r.text


def test_a_non_ascii_one_time_code_is_a_wrong_code(fhir: Fhir, browser: Browser) -> None:
    _, pid = add_patient(fhir)
    AccountStore(fhir.live.settings, fhir.backend.engine).add("Lucie.Durand", "correct horse battery", pid)
    _signin_page(fhir, browser)
    page = browser.get(fhir.live.url + "/oauth/signin")
    step = browser.submit(fhir.live.url, "/oauth/signin/patient", page, username="lucie.durand",
                          password="correct horse battery")
    assert step.status_code == 303, step.text
    code_page = browser.get(fhir.live.url + "/oauth/signin")
    r = browser.submit(fhir.live.url, "/oauth/signin/patient/code", code_page, code="١٢٣٤٥٦")
    assert r.status_code == 401, r.text
    assert "Identifiant, mot de passe ou code incorrect" in r.text


def test_a_portal_sign_in_answer_with_a_non_ascii_state_fails_cleanly(fhir: Fhir, browser: Browser) -> None:
    landing = browser.get(fhir.live.url + "/")
    match = re.search(r'name="csrf" value="([^"]+)"', landing.text)
    assert match, landing.text
    started = browser.post(fhir.live.url + "/portail/connexion", data={"csrf": match.group(1)})
    assert started.status_code == 303 and "/oauth/authorize" in started.headers["location"]
    r = browser.get(fhir.live.url + "/portail/retour", params={"code": "x", "state": "état-é"})
    assert r.status_code == 303 and r.headers["location"].endswith("message=signin_failed"), r.text
