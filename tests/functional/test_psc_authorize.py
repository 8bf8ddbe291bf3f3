"""Pro Santé Connect refusals through Carnet's own /oauth/authorize: a weak sign-on, a forged
callback and an unreachable provider leave the browser on Carnet's sign-in page with the reason,
and no authorisation code reaches the application. (The successful sign-in through
/oauth/authorize is tests/functional/test_oauth_psc.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from carnet.auth.clients import ClientType
from tests.conftest import Backend, Fhir, LiveServer
from tests.functional.oauth_helpers import Browser, add_practitioner, authorize_params, pkce, register
from tests.support.oidc_provider import OidcProvider, browser_sign_in

PSC_REDIRECT = "http://127.0.0.1:9/oauth/psc/callback"  # the test reads the provider's Location and goes on
DOCTOR = "810002909371"  # an account of the test provider
SCOPE = "openid fhirUser user/*.rs"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    running = OidcProvider.start(redirect_uri=PSC_REDIRECT)
    yield running
    running.stop()


def _server(backend: Backend, issuer: str, client_id: str, secret: str) -> LiveServer:
    return LiveServer(backend.settings.model_copy(update={
        "psc_issuer": issuer, "psc_client_id": client_id, "psc_client_secret": SecretStr(secret),
        "psc_redirect_uri": PSC_REDIRECT}))


@pytest.fixture
def psc_server(fhir: Fhir, provider: OidcProvider) -> Iterator[LiveServer]:
    server = _server(fhir.backend, provider.issuer, provider.client_id, provider.client_secret)
    yield server
    server.stop()


def _to_provider(browser: Browser, fhir: Fhir, base: str) -> httpx.Response:
    """The application asks Carnet to sign a professional in; the professional picks Pro Santé Connect."""
    add_practitioner(fhir, "1000290937", family="LEFEVRE", given="Anne")
    client, _ = register(fhir, ClientType.PUBLIC, SCOPE)
    _, challenge = pkce()
    page = browser.start(base, authorize_params(client.client_id, SCOPE, challenge, base + "/fhir"))
    assert "Pro Santé Connect" in page.text
    return browser.submit(base, "/oauth/signin/psc", page)


def test_a_weak_sign_on_at_the_provider_is_refused(fhir: Fhir, psc_server: LiveServer) -> None:
    with Browser(timeout=30, follow_redirects=False) as browser:
        url = _to_provider(browser, fhir, psc_server.url).headers["location"]
        query = browser_sign_in(url, redirect_uri=PSC_REDIRECT, login=DOCTOR, acr="eidas0")
        refused = browser.get(psc_server.url + "/oauth/psc/callback", params=query)
    assert refused.status_code == 401 and "location" not in refused.headers
    assert "eidas1 attendu" in refused.text and "eidas1 required" in refused.text


def test_a_forged_callback_is_refused(fhir: Fhir, psc_server: LiveServer) -> None:
    with Browser(timeout=30, follow_redirects=False) as browser:
        url = _to_provider(browser, fhir, psc_server.url).headers["location"]
        query = browser_sign_in(url, redirect_uri=PSC_REDIRECT, login=DOCTOR)
        forged = {**query, "state": "not-the-state-carnet-sent"}
        refused = browser.get(psc_server.url + "/oauth/psc/callback", params=forged)
    assert refused.status_code == 401 and "location" not in refused.headers
    assert "state" in refused.text


def test_an_unreachable_provider_is_reported_on_the_sign_in_page(fhir: Fhir) -> None:
    # bound and kept, never listening: connections are refused, and no other test's server can take
    # the port meanwhile (a port closed again could be handed to one)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        server = _server(fhir.backend, f"http://127.0.0.1:{port}", "carnet-test", "secret")
        try:
            with Browser(timeout=30, follow_redirects=False) as browser:
                answer = _to_provider(browser, fhir, server.url)
        finally:
            server.stop()
        assert answer.status_code == 502 and "location" not in answer.headers
        assert "injoignable" in answer.text and "unreachable" in answer.text
