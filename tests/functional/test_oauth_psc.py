"""Professionals sign in at /oauth/authorize through Pro Santé Connect (a real OpenID provider in the
tests), and the authorisation server issues tokens for the Practitioner of the directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from carnet.auth.clients import ClientType
from tests.conftest import Fhir, LiveServer
from tests.functional.oauth_helpers import (
    Browser,
    add_practitioner,
    authorize_params,
    exchange,
    pkce,
    redirect_params,
    register,
    verify_jwt,
)
from tests.support.oidc_provider import OidcProvider, browser_sign_in

PSC_REDIRECT = "http://127.0.0.1:9/oauth/psc/callback"  # the test reads the provider's Location and goes on
DOCTOR = "810002909371"  # an account of the test provider


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    running = OidcProvider.start(redirect_uri=PSC_REDIRECT)
    yield running
    running.stop()


@pytest.fixture
def psc_server(fhir: Fhir, provider: OidcProvider) -> Iterator[LiveServer]:
    settings = fhir.backend.settings.model_copy(update={
        "psc_issuer": provider.issuer, "psc_client_id": provider.client_id,
        "psc_client_secret": SecretStr(provider.client_secret), "psc_redirect_uri": PSC_REDIRECT})
    server = LiveServer(settings)
    yield server
    server.stop()


def test_a_professional_signs_in_with_pro_sante_connect(fhir: Fhir, psc_server: LiveServer) -> None:
    base = psc_server.url
    national_id, practitioner_id = add_practitioner(fhir, "1000290937", family="LEFEVRE", given="Anne")
    assert national_id == DOCTOR
    client, secret = register(fhir, ClientType.CONFIDENTIAL, "openid fhirUser user/*.rs")
    verifier, challenge = pkce()
    with Browser(timeout=30, follow_redirects=False) as browser:
        page = browser.start(base, authorize_params(client.client_id, "openid fhirUser user/*.rs", challenge,
                                                    base + "/fhir"))
        assert "Pro Santé Connect" in page.text
        to_provider = browser.submit(base, "/oauth/signin/psc", page)
        assert to_provider.status_code == 303
        url = to_provider.headers["location"]
        assert url.startswith(psc_server.settings.psc_issuer) and "acr_values=eidas1" in url
        query = browser_sign_in(url, redirect_uri=PSC_REDIRECT, login=DOCTOR)
        back = browser.get(base + "/oauth/psc/callback", params=query)
        got = redirect_params(back)
        r = exchange(browser, base, client.client_id, got["code"], verifier, secret)
        assert r.status_code == 200, r.text
        claims = verify_jwt(browser, base, r.json()["access_token"])
        assert claims["sub"] == DOCTOR and claims["fhirUser"] == f"Practitioner/{practitioner_id}"
        assert claims["acr"] == "eidas1" and claims["profession"] == "10" and claims["roles"] == ["10"]
        # the callback serves once
        again = browser.get(base + "/oauth/psc/callback", params=query)
        assert again.status_code == 400


def test_a_professional_unknown_to_the_directory_is_refused(fhir: Fhir, psc_server: LiveServer) -> None:
    base = psc_server.url
    client, _ = register(fhir, ClientType.PUBLIC, "user/*.rs")
    _, challenge = pkce()
    with Browser(timeout=30, follow_redirects=False) as browser:
        page = browser.start(base, authorize_params(client.client_id, "user/*.rs", challenge, base + "/fhir"))
        url = browser.submit(base, "/oauth/signin/psc", page).headers["location"]
        query = browser_sign_in(url, redirect_uri=PSC_REDIRECT, login=DOCTOR)
        refused = browser.get(base + "/oauth/psc/callback", params=query)
        assert refused.status_code == 401 and "location" not in refused.headers
        assert DOCTOR in refused.text and "annuaire" in refused.text
