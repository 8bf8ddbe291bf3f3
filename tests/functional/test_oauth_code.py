"""Authorization code + PKCE end to end with the development identity provider: the sign-in page, the
code, the tokens (access, ID, refresh) and their rotation, and the requests that must fail."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from carnet.auth.clients import ClientType
from tests.conftest import Fhir
from tests.functional.oauth_helpers import (
    REDIRECT,
    Browser,
    add_patient,
    add_practitioner,
    authorize_params,
    exchange,
    pkce,
    redirect_params,
    register,
    verify_jwt,
)


@pytest.fixture
def browser(fhir: Fhir) -> Iterator[Browser]:
    with Browser(timeout=30, follow_redirects=False) as b:
        yield b


def sign_in_as_professional(
    fhir: Fhir, browser: Browser, client_id: str, scope: str, national_id: str, **extra: str
) -> tuple[dict[str, str], str, dict[str, str]]:
    """Through the sign-in page as a demo professional: (redirect parameters, verifier, request)."""
    base = fhir.live.url
    verifier, challenge = pkce()
    params = authorize_params(client_id, scope, challenge, base + "/fhir", **extra)
    page = browser.start(base, params)
    assert 'lang="fr"' in page.text and "Connexion" in page.text
    assert national_id in page.text  # the development provider lists the directory's professionals
    done = browser.submit(base, "/oauth/signin/development", page, national_id=national_id)
    got = redirect_params(done)
    assert got["state"] == params["state"]
    return got, verifier, params


def test_code_flow_with_the_development_provider(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    national_id, practitioner_id = add_practitioner(fhir)
    client, secret = register(
        fhir,
        ClientType.CONFIDENTIAL,
        "openid fhirUser profile offline_access user/*.cruds patient/*.rs launch/patient",
    )
    assert secret
    got, verifier, _ = sign_in_as_professional(
        fhir,
        browser,
        client.client_id,
        "openid fhirUser profile offline_access user/Patient.rs user/*.cruds",
        national_id,
        nonce="n-0S6_WzA2Mj",
    )
    assert "patient" not in got and "code" in got
    r = exchange(browser, base, client.client_id, got["code"], verifier, secret)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert set(tokens["scope"].split()) == {
        "openid",
        "fhirUser",
        "profile",
        "offline_access",
        "user/Patient.rs",
        "user/*.cruds",
    }
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and "patient" not in tokens
    access = verify_jwt(browser, base, tokens["access_token"])
    assert access["kind"] == "practitioner" and access["sub"] == national_id
    assert access["fhirUser"] == f"Practitioner/{practitioner_id}" and access["acr"] == "eidas1"
    assert access["profession"] == "10" and access["client_id"] == client.client_id
    id_token = verify_jwt(browser, base, tokens["id_token"])
    assert id_token["aud"] == [client.client_id] and id_token["iss"] == base
    assert id_token["nonce"] == "n-0S6_WzA2Mj" and id_token["acr"] == "eidas1"
    assert id_token["fhirUser"] == f"{base}/fhir/Practitioner/{practitioner_id}"
    assert id_token["sub"] == national_id and "Claire" in id_token["name"] and "at_hash" in id_token
    # the token works on the FHIR API
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert browser.get(f"{base}/fhir/Practitioner/{practitioner_id}", headers=auth).status_code == 200
    info = browser.get(base + "/oauth/userinfo", headers=auth).json()
    assert info["sub"] == national_id and info["fhirUser"].endswith(f"Practitioner/{practitioner_id}")

    # the code serves once; a second use is refused and revokes what the first one got
    again = exchange(browser, base, client.client_id, got["code"], verifier, secret)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    refreshed = browser.post(
        base + "/oauth/token",
        auth=(client.client_id, secret),
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    national_id, _ = add_practitioner(fhir)
    client, secret = register(fhir, ClientType.CONFIDENTIAL, "openid offline_access user/*.rs")
    got, verifier, _ = sign_in_as_professional(
        fhir, browser, client.client_id, "offline_access user/*.rs", national_id
    )
    first = exchange(browser, base, client.client_id, got["code"], verifier, secret).json()

    def refresh(token: str, **extra: str) -> httpx.Response:
        return browser.post(
            base + "/oauth/token",
            auth=(client.client_id, secret or ""),
            data={"grant_type": "refresh_token", "refresh_token": token} | extra,
        )

    r = refresh(first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert verify_jwt(browser, base, second["access_token"])["sub"] == national_id
    # narrowing on refresh is allowed, widening is not
    assert refresh(second["refresh_token"], scope="user/*.cruds").json()["error"] == "invalid_scope"
    third = refresh(second["refresh_token"], scope="offline_access user/Patient.rs")
    assert third.status_code == 200 and third.json()["scope"] == "offline_access user/Patient.rs"
    latest = third.json()["refresh_token"]
    # another client cannot use it
    other, other_secret = register(fhir, ClientType.CONFIDENTIAL, "offline_access user/*.rs", name="Autre")
    stolen = browser.post(
        base + "/oauth/token",
        auth=(other.client_id, other_secret or ""),
        data={"grant_type": "refresh_token", "refresh_token": latest},
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    # presenting a rotated token again: refused, and the newest one dies with it
    assert refresh(first["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(latest).json()["error"] == "invalid_grant"
    # a wrong secret
    bad = browser.post(
        base + "/oauth/token",
        auth=(client.client_id, "wrong"),
        data={"grant_type": "refresh_token", "refresh_token": latest},
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


def test_public_client_pkce_is_required_and_checked(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    national_id, _ = add_practitioner(fhir)
    client, secret = register(fhir, ClientType.PUBLIC, "openid user/*.rs")
    assert secret is None
    # a wrong verifier: refused
    got, _, _ = sign_in_as_professional(fhir, browser, client.client_id, "user/*.rs", national_id)
    wrong = exchange(browser, base, client.client_id, got["code"], "x" * 50)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # the right one, without a secret (a public client)
    got, verifier, _ = sign_in_as_professional(fhir, browser, client.client_id, "user/*.rs", national_id)
    r = exchange(browser, base, client.client_id, got["code"], verifier)
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()  # offline_access was not asked
    # no verifier at all
    got, _, _ = sign_in_as_professional(fhir, browser, client.client_id, "user/*.rs", national_id)
    r = browser.post(
        base + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": got["code"],
            "redirect_uri": REDIRECT,
            "client_id": client.client_id,
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_authorization_requests_that_must_fail(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    client, _ = register(fhir, ClientType.PUBLIC, "openid user/*.rs")
    _, challenge = pkce()
    good = authorize_params(client.client_id, "user/*.rs", challenge, base + "/fhir")

    def authorize(**changes: str | None) -> httpx.Response:
        params = {k: v for k, v in (good | changes).items() if v is not None}
        return browser.get(base + "/oauth/authorize", params=params)

    # unknown client or unregistered redirect URI: an error page, never a redirect
    for changes in ({"client_id": "nobody"}, {"redirect_uri": "https://attacker.example/cb"}):
        r = authorize(**changes)
        assert r.status_code == 400 and "location" not in r.headers
        assert "Connexion impossible" in r.text
    # the rest goes back to the client, RFC 6749 style
    for changes, error in (
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
        ({"scope": "system/*.rs"}, "invalid_scope"),
        ({"scope": "bogus"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ):
        got = redirect_params(authorize(**changes))
        assert got["error"] == error, (changes, got)
        assert got["state"] == good["state"]
    # a backend client cannot use the browser flow
    from tests.functional.oauth_helpers import ec_key, public_jwks

    backend, _ = register(fhir, ClientType.BACKEND, "system/*.rs", jwks=public_jwks(ec_key()))
    r = browser.get(base + "/oauth/authorize", params=good | {"client_id": backend.client_id})
    assert r.status_code == 400


def test_the_sign_in_page_guards_its_forms(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    national_id, _ = add_practitioner(fhir)
    add_patient(fhir)
    client, _ = register(fhir, ClientType.PUBLIC, "openid patient/*.rs user/*.rs")
    _, challenge = pkce()
    params = authorize_params(client.client_id, "patient/*.rs user/*.rs", challenge, base + "/fhir")
    page = browser.start(base, params)
    assert "Appli de test" in page.text  # who asks
    assert "Patient ou représentant légal" in page.text and "Professionnel (développement)" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # English on request
    english = browser.get(base + "/oauth/signin?lang=en")
    assert 'lang="en"' in english.text and "Sign in" in english.text
    # a form without its CSRF token is refused, and signs no one in
    forged = browser.post(base + "/oauth/signin/development", data={"national_id": national_id})
    assert forged.status_code == 403 and "location" not in forged.headers
    # another browser (no session cookie) gets nowhere
    with httpx.Client(timeout=30) as stranger:
        r = stranger.post(base + "/oauth/signin/development", data={"csrf": "x", "national_id": national_id})
        assert r.status_code == 400 and "expiré" in r.text
    # an unknown professional (the page stays in the language chosen)
    r = browser.submit(base, "/oauth/signin/development", page, national_id="899999999999")
    assert r.status_code == 400 and "unknown to the directory" in r.text
    assert browser.get(base + "/oauth/signin?lang=fr").status_code == 200
    # cancel: access_denied back to the client, and the session is over
    page = browser.get(base + "/oauth/signin")
    denied = redirect_params(browser.submit(base, "/oauth/signin/cancel", page))
    assert denied["error"] == "access_denied" and denied["state"] == params["state"]
    assert browser.get(base + "/oauth/signin").status_code == 400


def test_revoking_a_refresh_token_ends_the_sign_in(fhir: Fhir, browser: Browser) -> None:
    base = fhir.live.url
    national_id, _ = add_practitioner(fhir)
    client, secret = register(fhir, ClientType.CONFIDENTIAL, "offline_access user/*.rs")
    got, verifier, _ = sign_in_as_professional(fhir, browser, client.client_id, "offline_access user/*.rs",
                                               national_id)
    tokens = exchange(browser, base, client.client_id, got["code"], verifier, secret).json()
    auth = (client.client_id, secret or "")
    info = browser.post(base + "/oauth/introspect", auth=auth, data={"token": tokens["refresh_token"]}).json()
    assert info["active"] is True and info["token_type"] == "refresh_token" and info["sub"] == national_id
    r = browser.post(base + "/oauth/revoke", auth=auth,
                     data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"})
    assert r.status_code == 200
    info = browser.post(base + "/oauth/introspect", auth=auth, data={"token": tokens["refresh_token"]}).json()
    assert info == {"active": False}
    r = browser.post(base + "/oauth/token", auth=auth,
                     data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
