"""Professionals' sign-in through a real OpenID provider speaking Pro Santé Connect's claims.

The provider is the certified ``oidc-provider`` package on Node.js (tests/support/oidc_provider),
reached over real HTTP on 127.0.0.1; the test plays the browser (cookies, redirects, the sign-in
form) and reads the authorisation code from the ``Location`` header sent to the redirect URI.
Tampering cases interpose on the relying party's own HTTP exchanges, as a man in the middle would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Callable, Iterator

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from carnet.auth.principal import Kind
from carnet.auth.psc import (
    PendingSignIn,
    Profession,
    ProfessionalIdentity,
    PscClient,
    PscError,
    PscUnreachable,
)
from carnet.config import Settings, describe
from carnet.errors import Unauthenticated
from tests.support.oidc_provider import OidcProvider, browser_sign_in

REDIRECT = "http://127.0.0.1:9/oauth/psc/callback"  # nothing listens: the code is read from Location
POST_CLIENT = {"client_id": "carnet-test-post", "client_secret": "carnet-test-post-secret-0123456789",
               "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post",
               "grant_types": ["authorization_code"], "response_types": ["code"]}
JWT_CLIENT = {**POST_CLIENT, "client_id": "carnet-test-jwt", "userinfo_signed_response_alg": "RS256",
              "token_endpoint_auth_method": "client_secret_basic"}
DOCTOR, NURSE, PHARMACIST, NO_NATIONAL_ID = "810002909371", "810003141592", "810002718281", "sans-identifiant"


@pytest.fixture(scope="session")
def provider() -> Iterator[OidcProvider]:
    running = OidcProvider.start(redirect_uri=REDIRECT, extra_clients=[POST_CLIENT, JWT_CLIENT])
    yield running
    running.stop()


Rewrite = Callable[[httpx2.Request, httpx2.Response], httpx2.Response | None]


class Interpose(httpx2.BaseTransport):
    """Real HTTP, with a hook that may replace a response; records every URL asked."""

    def __init__(self, rewrite: Rewrite | None = None) -> None:
        self.inner = httpx2.HTTPTransport()
        self.rewrite = rewrite
        self.urls: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.urls.append(str(request.url.copy_with(query=None)))
        response = self.inner.handle_request(request)
        if self.rewrite is None:
            return response
        response.read()
        return self.rewrite(request, response) or response

    def close(self) -> None:  # the relying party closes its clients after each exchange; keep the pool
        pass


Make = Callable[..., Interpose]


@pytest.fixture
def interpose() -> Iterator[Make]:
    """Make interposing transports; their connections are closed after the test."""
    made: list[Interpose] = []

    def make(rewrite: Rewrite | None = None) -> Interpose:
        made.append(Interpose(rewrite))
        return made[-1]

    yield make
    for transport in made:
        transport.inner.close()


def replace_json(response: httpx2.Response, body: dict[str, object]) -> httpx2.Response:
    return httpx2.Response(response.status_code, json=body)


def client(provider: OidcProvider, transport: httpx2.BaseTransport | None = None, *,
           post: bool = False, secret: str | None = None) -> PscClient:
    if post:
        return PscClient(provider.issuer, str(POST_CLIENT["client_id"]),
                         secret or str(POST_CLIENT["client_secret"]),
                         token_endpoint_auth_method="client_secret_post", transport=transport)
    return PscClient(provider.issuer, provider.client_id, secret or provider.client_secret,
                     transport=transport)


def sign_in(rp: PscClient, login: str, *, acr: str = "eidas1") -> tuple[PendingSignIn, str]:
    """Up to the callback: the pending sign-in and the authorisation code its state checked."""
    pending = PendingSignIn.new()
    url = rp.authorization_url(redirect_uri=REDIRECT, state=pending.state, nonce=pending.nonce,
                               code_verifier=pending.code_verifier)
    query = browser_sign_in(url, redirect_uri=REDIRECT, login=login, acr=acr)
    return pending, rp.callback_code(query, state=pending.state)


def finish(rp: PscClient, pending: PendingSignIn, code: str, *,
           nonce: str | None = None) -> ProfessionalIdentity:
    return rp.finish(code=code, redirect_uri=REDIRECT, code_verifier=pending.code_verifier,
                     nonce=pending.nonce if nonce is None else nonce)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rewrite_id_token(change: Callable[[str], str]) -> Rewrite:
    def rewrite(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response | None:
        if request.method == "POST" and request.url.path == "/token" and response.status_code == 200:
            body = response.json()
            body["id_token"] = change(body["id_token"])
            return replace_json(response, body)
        return None
    return rewrite


# -- the whole sign-in, over real HTTP --------------------------------------------------------------


def test_a_doctor_signs_in_end_to_end(provider: OidcProvider) -> None:
    rp = client(provider)
    pending = PendingSignIn.new()
    url = httpx2.URL(rp.authorization_url(redirect_uri=REDIRECT, state=pending.state, nonce=pending.nonce,
                                          code_verifier=pending.code_verifier))
    params = dict(url.params)
    assert str(url).startswith(provider.issuer + "/auth?")
    assert params["scope"] == "openid scope_all" and params["acr_values"] == "eidas1"
    assert params["response_type"] == "code" and params["client_id"] == provider.client_id
    assert params["code_challenge_method"] == "S256" and params["redirect_uri"] == REDIRECT
    assert params["code_challenge"] == b64(hashlib.sha256(pending.code_verifier.encode()).digest())
    assert params["state"] == pending.state and params["nonce"] == pending.nonce

    query = browser_sign_in(str(url), redirect_uri=REDIRECT, login=DOCTOR)
    assert query["iss"] == provider.issuer and query["state"] == pending.state
    identity = finish(rp, pending, rp.callback_code(query, state=pending.state))

    assert identity.national_id == DOCTOR
    assert identity.profession == "10"
    assert identity.professions == (Profession("10", category="C", specialty="SM54", specialty_type="S"),)
    assert identity.roles == ("10",)
    assert (identity.family_name, identity.given_name) == ("LEFEVRE", "Anne")
    assert identity.acr == "eidas1" and identity.strong_auth
    assert identity.claims["SubjectRole"] == ["10^1.2.250.1.213.1.1.5.5"]

    principal = identity.principal("Practitioner/4b1c")
    assert principal.kind == Kind.PRACTITIONER and principal.subject == DOCTOR
    assert principal.profession == "10" and principal.roles == frozenset({"10"})
    assert principal.strong_auth and principal.scopes == frozenset({"user/*.cruds"})
    assert principal.fhir_user == "Practitioner/4b1c" and principal.resource_id == "4b1c"
    assert principal.display == "Anne LEFEVRE"
    assert identity.principal(None).fhir_user is None


@pytest.mark.parametrize(("login", "profession", "role", "family"),
                         [(NURSE, "60", "60", "MARTIN"), (PHARMACIST, "21", "21", "GARNIER")])
def test_other_professions_sign_in(provider: OidcProvider, login: str, profession: str, role: str,
                                   family: str) -> None:
    rp = client(provider)
    identity = finish(rp, *sign_in(rp, login))
    assert identity.national_id == login and identity.profession == profession
    assert identity.professions[0].category == "C" and identity.professions[0].specialty is None
    assert identity.roles == (role,) and identity.family_name == family
    assert identity.principal(None).profession == profession


def test_client_secret_post(provider: OidcProvider, interpose: Make) -> None:
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request, response: httpx2.Response) -> None:
        if request.url.path == "/token":
            seen.append(request)

    rp = client(provider, interpose(record), post=True)
    identity = finish(rp, *sign_in(rp, NURSE))
    assert identity.national_id == NURSE
    (token_request,) = seen
    assert "authorization" not in token_request.headers
    assert b"client_secret=" in token_request.content


def test_client_secret_basic_sends_no_secret_in_the_body(provider: OidcProvider, interpose: Make) -> None:
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request, response: httpx2.Response) -> None:
        if request.url.path == "/token":
            seen.append(request)

    rp = client(provider, interpose(record))
    finish(rp, *sign_in(rp, DOCTOR))
    (token_request,) = seen
    assert token_request.headers["authorization"].startswith("Basic ")
    assert b"client_secret" not in token_request.content and b"code_verifier=" in token_request.content


def test_a_signed_userinfo_is_verified(provider: OidcProvider, interpose: Make) -> None:
    seen: list[str] = []

    def record(request: httpx2.Request, response: httpx2.Response) -> None:
        if request.url.path == "/me":
            seen.append(response.headers["content-type"])

    rp = PscClient(provider.issuer, str(JWT_CLIENT["client_id"]), str(JWT_CLIENT["client_secret"]),
                   transport=interpose(record))
    identity = finish(rp, *sign_in(rp, PHARMACIST))
    assert seen and seen[0].startswith("application/jwt")
    assert identity.national_id == PHARMACIST and identity.roles == ("21",)

    def forge(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response | None:
        if request.url.path == "/me":
            header, payload, signature = response.text.split(".")
            claims = {**json.loads(unb64(payload)), "SubjectNameID": "810000000000"}
            return httpx2.Response(200, headers={"content-type": "application/jwt"},
                                   content=f"{header}.{b64(json.dumps(claims).encode())}.{signature}")
        return None

    rp = PscClient(provider.issuer, str(JWT_CLIENT["client_id"]), str(JWT_CLIENT["client_secret"]),
                   transport=interpose(forge))
    with pytest.raises(PscError, match="signed userinfo signature invalid"):
        finish(rp, *sign_in(rp, PHARMACIST))


def test_discovery_and_keys_are_cached(provider: OidcProvider, interpose: Make) -> None:
    transport = interpose()
    rp = client(provider, transport)
    finish(rp, *sign_in(rp, DOCTOR))
    finish(rp, *sign_in(rp, NURSE))
    assert transport.urls.count(provider.issuer + "/.well-known/openid-configuration") == 1
    assert transport.urls.count(provider.issuer + "/jwks") == 1
    assert transport.urls.count(provider.issuer + "/token") == 2


# -- refusals ---------------------------------------------------------------------------------------


def test_a_wrong_nonce_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    pending, code = sign_in(rp, DOCTOR)
    with pytest.raises(PscError, match="nonce") as caught:
        finish(rp, pending, code, nonce=PendingSignIn.new().nonce)
    assert isinstance(caught.value, Unauthenticated)
    assert "refusée" in caught.value.message and "refused" in caught.value.message


def test_a_state_mismatch_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    pending = PendingSignIn.new()
    url = rp.authorization_url(redirect_uri=REDIRECT, state=pending.state, nonce=pending.nonce,
                               code_verifier=pending.code_verifier)
    query = browser_sign_in(url, redirect_uri=REDIRECT, login=DOCTOR)
    with pytest.raises(PscError, match="state"):
        rp.callback_code(query, state=PendingSignIn.new().state)
    with pytest.raises(PscError, match="state"):
        rp.callback_code({k: v for k, v in query.items() if k != "state"}, state=pending.state)
    with pytest.raises(PscError, match="another issuer"):
        rp.callback_code({**query, "iss": "http://127.0.0.1:1"}, state=pending.state)
    assert rp.callback_code(query, state=pending.state) == query["code"]


def test_a_cancelled_sign_in_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    pending = PendingSignIn.new()
    url = rp.authorization_url(redirect_uri=REDIRECT, state=pending.state, nonce=pending.nonce,
                               code_verifier=pending.code_verifier)
    query = browser_sign_in(url, redirect_uri=REDIRECT, login=DOCTOR, cancel=True)
    assert query["error"] == "access_denied"
    with pytest.raises(PscError, match="access_denied"):
        rp.callback_code(query, state=pending.state)


def test_an_acr_other_than_eidas1_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    pending, code = sign_in(rp, DOCTOR, acr="eidas0")
    with pytest.raises(PscError, match=r"acr « eidas0 », eidas1 attendu.*acr 'eidas0', eidas1 required"):
        finish(rp, pending, code)


def test_an_answer_without_subject_name_id_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    with pytest.raises(PscError, match="SubjectNameID"):
        finish(rp, *sign_in(rp, NO_NATIONAL_ID))


def test_an_altered_id_token_is_refused(provider: OidcProvider, interpose: Make) -> None:
    """A weak sign-in whose ID token is rewritten in transit to claim eidas1: the signature fails."""

    def upgrade_acr(token: str) -> str:
        header, payload, signature = token.split(".")
        claims = json.loads(unb64(payload))
        assert claims["acr"] == "eidas0"
        claims["acr"] = "eidas1"
        return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"

    rp = client(provider, interpose(rewrite_id_token(upgrade_acr)))
    pending, code = sign_in(rp, DOCTOR, acr="eidas0")
    with pytest.raises(PscError, match="ID token signature invalid"):
        finish(rp, pending, code)


def test_an_unsigned_id_token_is_refused(provider: OidcProvider, interpose: Make) -> None:
    def strip_signature(token: str) -> str:
        _, payload, _ = token.split(".")
        return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."

    rp = client(provider, interpose(rewrite_id_token(strip_signature)))
    with pytest.raises(PscError, match="ID token"):
        finish(rp, *sign_in(rp, DOCTOR))


def test_an_id_token_signed_by_another_key_is_refused(provider: OidcProvider, interpose: Make) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "forger"})

    def resign(token: str) -> str:
        claims = json.loads(unb64(token.split(".")[1]))
        return jwt.encode({"alg": "RS256", "kid": "forger"}, claims, forger)

    transport = interpose(rewrite_id_token(resign))
    rp = client(provider, transport)
    with pytest.raises(PscError, match="ID token signature invalid"):
        finish(rp, *sign_in(rp, DOCTOR))
    assert transport.urls.count(provider.issuer + "/jwks") == 1  # an unknown key refetches at most so often


def test_a_swapped_jwks_is_refused(provider: OidcProvider, interpose: Make) -> None:
    """The provider's key set replaced in transit by another key under the same kid."""

    def swap(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response | None:
        if request.url.path == "/jwks":
            keys = response.json()["keys"]
            other = RSAKey.generate_key(2048, parameters={"kid": keys[0]["kid"], "use": "sig",
                                                          "alg": "RS256"})
            return replace_json(response, {"keys": [other.as_dict(private=False)]})
        return None

    rp = client(provider, interpose(swap))
    with pytest.raises(PscError, match="ID token signature invalid"):
        finish(rp, *sign_in(rp, DOCTOR))


def test_userinfo_about_someone_else_is_refused(provider: OidcProvider, interpose: Make) -> None:
    def other_person(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response | None:
        if request.url.path == "/me":
            return replace_json(response, {**response.json(), "sub": "f:someone-else"})
        return None

    rp = client(provider, interpose(other_person))
    with pytest.raises(PscError, match="userinfo"):
        finish(rp, *sign_in(rp, DOCTOR))


def test_a_code_is_used_once(provider: OidcProvider) -> None:
    rp = client(provider)
    pending, code = sign_in(rp, DOCTOR)
    assert finish(rp, pending, code).national_id == DOCTOR
    with pytest.raises(PscError, match=r"code exchange refused.*invalid_grant"):
        finish(rp, pending, code)


def test_a_wrong_code_verifier_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    pending, code = sign_in(rp, DOCTOR)
    with pytest.raises(PscError, match="invalid_grant"):
        rp.finish(code=code, redirect_uri=REDIRECT, code_verifier=PendingSignIn.new().code_verifier,
                  nonce=pending.nonce)


def test_a_wrong_client_secret_is_refused(provider: OidcProvider) -> None:
    rp = client(provider)
    pending, code = sign_in(rp, DOCTOR)
    with pytest.raises(PscError, match="invalid_client"):
        finish(client(provider, secret="not-the-secret-0123456789"), pending, code)


def test_an_unreachable_issuer_gives_a_clear_error() -> None:
    # bound and kept, never listening: connections are refused, and no other test's server can take
    # the port meanwhile (a port closed again could be handed to one)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        rp = PscClient(f"http://127.0.0.1:{port}", "carnet-test", "secret", timeout=2)
        pending = PendingSignIn.new()
        with pytest.raises(PscUnreachable) as caught:
            rp.authorization_url(redirect_uri=REDIRECT, state=pending.state, nonce=pending.nonce,
                                 code_verifier=pending.code_verifier)
        message = caught.value.message
        assert isinstance(caught.value, Unauthenticated)
        assert "fournisseur d'identité injoignable" in message and "identity provider unreachable" in message
        assert f"127.0.0.1:{port}" in message
        with pytest.raises(PscUnreachable):
            rp.finish(code="x", redirect_uri=REDIRECT, code_verifier=pending.code_verifier, nonce=pending.nonce)


def test_a_discovery_document_naming_another_issuer_is_refused(provider: OidcProvider) -> None:
    rp = PscClient(provider.issuer + "/", provider.client_id, provider.client_secret)
    pending = PendingSignIn.new()
    with pytest.raises(PscError, match="another issuer"):
        rp.authorization_url(redirect_uri=REDIRECT, state=pending.state, nonce=pending.nonce,
                             code_verifier=pending.code_verifier)


# -- claims and settings, without a provider ---------------------------------------------------------


def test_claims_are_read_defensively() -> None:
    identity = ProfessionalIdentity.from_claims({
        "sub": "s", "SubjectNameID": " 810002909371 ", "family_name": "LEFEVRE", "given_name": "Anne",
        "SubjectRole": "10^1.2.250.1.213.1.1.5.5",
        "SubjectRefPro": json.dumps({"exercices": [
            {"codeProfession": "10", "codeCategorieProfessionnelle": "C"},
            {"codeProfession": "10", "codeCategorieProfessionnelle": "C"},
            {"codeProfession": "40", "codeSavoirFaire": "SCD01", "codeTypeSavoirFaire": "S"},
            {"codeProfession": ""}, "garbage"]}),
    }, acr="eidas1")
    assert identity.national_id == "810002909371"
    assert identity.professions == (Profession("10", "C"), Profession("40", None, "SCD01", "S"))
    assert identity.roles == ("10",)
    weak = ProfessionalIdentity.from_claims(
        {"SubjectNameID": "810002909371", "SubjectRole": [1, "^x", "60^oid"]}, acr=None)
    assert weak.profession is None and weak.roles == ("60",) and not weak.principal(None).strong_auth
    assert weak.display == "810002909371"
    for missing in ({}, {"SubjectNameID": ""}, {"SubjectNameID": 810002909371}):
        with pytest.raises(PscError, match="SubjectNameID"):
            ProfessionalIdentity.from_claims(missing, acr="eidas1")


def test_settings_configure_the_client() -> None:
    settings = Settings(psc_issuer="http://127.0.0.1:1", psc_client_id="carnet",
                        psc_client_secret="s3cret-value", psc_token_auth_method="client_secret_post",
                        psc_timeout_seconds=3)
    rp = PscClient.from_settings(settings)
    assert (rp.issuer, rp.client_id, rp.token_endpoint_auth_method, rp.timeout) == (
        "http://127.0.0.1:1", "carnet", "client_secret_post", 3)
    assert settings.psc_enabled and settings.psc_callback_url == "http://127.0.0.1:8000/oauth/psc/callback"
    shown = {row["name"]: row["value"] for row in describe(settings)}
    assert shown["psc_client_secret"] == "********" and "s3cret-value" not in repr(settings)
    with pytest.raises(ValueError, match="not configured"):
        PscClient.from_settings(Settings())
    with pytest.raises(ValueError, match="43 to 128"):
        rp.authorization_url(redirect_uri=REDIRECT, state="s", nonce="n", code_verifier="short")
