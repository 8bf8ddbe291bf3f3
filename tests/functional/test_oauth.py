"""The authorisation server over HTTP: discovery, SMART Backend Services (client credentials with a
signed client assertion), introspection, revocation, and what the FHIR API does with bad tokens."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from joserfc import jwt
from joserfc.jwk import ECKey

from carnet.auth.clients import ClientType
from carnet.auth.principal import Kind, Principal
from tests.conftest import Fhir
from tests.functional.oauth_helpers import (
    ASSERTION_TYPE,
    add_patient,
    assertion,
    backend_token,
    ec_key,
    public_jwks,
    register,
    rsa_key,
    verify_jwt,
)
from tests.support.cli import run_carnet


@pytest.fixture
def http(fhir: Fhir) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def base(fhir: Fhir) -> str:
    return fhir.live.url


def test_discovery_documents(http: httpx.Client, base: str) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        r = http.get(base + path)
        assert r.status_code == 200
        smart = r.json()
        assert smart["issuer"] == base
        assert smart["authorization_endpoint"] == base + "/oauth/authorize"
        assert smart["token_endpoint"] == base + "/oauth/token"
        assert smart["code_challenge_methods_supported"] == ["S256"]
        assert {"authorization_code", "client_credentials", "refresh_token"} <= set(
            smart["grant_types_supported"]
        )
        assert {
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "sso-openid-connect",
            "permission-v2",
            "context-standalone-patient",
            "permission-offline",
        } <= set(smart["capabilities"])
        assert {
            "openid",
            "fhirUser",
            "offline_access",
            "launch/patient",
            "patient/*.rs",
            "user/*.cruds",
            "system/*.rs",
        } <= set(smart["scopes_supported"])
        assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
        assert {"RS384", "ES384"} <= set(smart["token_endpoint_auth_signing_alg_values_supported"])
    oidc = http.get(base + "/.well-known/openid-configuration").json()
    assert oidc["issuer"] == base and oidc["jwks_uri"] == base + "/oauth/jwks"
    assert oidc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert oidc["response_types_supported"] == ["code"]
    jwks = http.get(oidc["jwks_uri"]).json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])  # public keys only


def test_backend_service_gets_a_token_and_reads(fhir: Fhir, http: httpx.Client, base: str) -> None:
    _, pid = add_patient(fhir)
    key = ec_key()
    client, secret = register(
        fhir, ClientType.BACKEND, "system/*.rs system/Observation.cruds", jwks=public_jwks(key)
    )
    assert secret is None
    r = backend_token(http, base, client.client_id, key, "system/Patient.rs system/Observation.c system/*.d")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    # asked ∩ registered: delete was never registered, so it is not granted
    assert set(body["scope"].split()) == {"system/Patient.rs", "system/Observation.c"}
    assert "refresh_token" not in body and "id_token" not in body
    assert r.headers["cache-control"] == "no-store"
    claims = verify_jwt(http, base, body["access_token"])
    assert claims["sub"] == client.client_id and claims["client_id"] == client.client_id
    assert claims["aud"] == base + "/fhir" and claims["iss"] == base and claims["kind"] == "system"
    assert claims["exp"] - claims["iat"] == 300
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert http.get(f"{base}/fhir/Patient/{pid}", headers=auth).status_code == 200
    # an RSA key (RS384) works as well
    rsa = rsa_key()
    rclient, _ = register(fhir, ClientType.BACKEND, "system/*.rs", jwks=public_jwks(rsa), name="Labo")
    assert backend_token(http, base, rclient.client_id, rsa, "system/*.rs").status_code == 200


def test_backend_assertions_that_must_fail(fhir: Fhir, http: httpx.Client, base: str) -> None:
    key = ec_key()
    client, _ = register(fhir, ClientType.BACKEND, "system/*.rs", jwks=public_jwks(key))
    cid = client.client_id

    def refused(response: httpx.Response, error: str = "invalid_client") -> str:
        assert response.status_code in (400, 401), response.text
        body = response.json()
        assert body["error"] == error, body
        return str(body.get("error_description", ""))

    # a key the client did not register (same kid, other key)
    stranger = ec_key(kid=key.kid)
    refused(backend_token(http, base, cid, stranger, "system/*.rs"))
    # a replayed assertion (same jti)
    jti = "once-only"
    assert backend_token(http, base, cid, key, "system/*.rs", jti=jti).status_code == 200
    assert "used" in refused(backend_token(http, base, cid, key, "system/*.rs", jti=jti))
    # an expired assertion
    refused(backend_token(http, base, cid, key, "system/*.rs", iat=int(time.time()) - 900, lifetime=300))
    # an assertion that lives too long (SMART: at most five minutes)
    assert "long" in refused(backend_token(http, base, cid, key, "system/*.rs", lifetime=3600))
    # the wrong audience
    wrong_aud = assertion(key, cid, base + "/somewhere-else")
    refused(
        http.post(
            base + "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "system/*.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": wrong_aud,
            },
        )
    )
    # an unsigned assertion
    now = int(time.time())

    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = (
        b64({"alg": "none", "typ": "JWT"})
        + "."
        + b64({"iss": cid, "sub": cid, "aud": base + "/oauth/token", "jti": "x", "exp": now + 60})
        + "."
    )
    refused(
        http.post(
            base + "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "system/*.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": unsigned,
            },
        )
    )
    # no assertion at all
    refused(
        http.post(
            base + "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "system/*.rs", "client_id": cid},
        )
    )
    # scopes it is not registered for
    narrowed = backend_token(http, base, cid, key, "system/*.cruds user/*.rs")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "system/*.rs"
    r = backend_token(http, base, cid, key, "user/*.rs")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = backend_token(http, base, cid, key, "nonsense/scope")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    # an unknown grant type, RFC 6749 error shape
    r = http.post(base + "/oauth/token", data={"grant_type": "password", "username": "u", "password": "p"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_introspection_and_revocation(fhir: Fhir, http: httpx.Client, base: str) -> None:
    _, pid = add_patient(fhir)
    key = ec_key()
    client, _ = register(fhir, ClientType.BACKEND, "system/*.rs", jwks=public_jwks(key))
    other_key = ec_key()
    other, _ = register(fhir, ClientType.BACKEND, "system/*.rs", jwks=public_jwks(other_key), name="Autre")
    access = backend_token(http, base, client.client_id, key, "system/*.rs").json()["access_token"]

    def call(path: str, token: str, as_client: str = client.client_id, as_key: ECKey = key) -> httpx.Response:
        return http.post(
            base + path,
            data={
                "token": token,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion(as_key, as_client, base + "/oauth/token"),
            },
        )

    r = call("/oauth/introspect", access)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["active"] is True and info["client_id"] == client.client_id and info["scope"] == "system/*.rs"
    assert info["sub"] == client.client_id and info["exp"] > time.time()
    assert call("/oauth/introspect", "not-a-token").json() == {"active": False}
    # another client learns nothing about this client's token
    assert call("/oauth/introspect", access, other.client_id, other_key).json() == {"active": False}
    # introspection needs client authentication
    assert http.post(base + "/oauth/introspect", data={"token": access}).status_code in (400, 401)

    auth = {"Authorization": f"Bearer {access}"}
    assert http.get(f"{base}/fhir/Patient/{pid}", headers=auth).status_code == 200
    assert call("/oauth/revoke", access).status_code == 200
    assert call("/oauth/introspect", access).json() == {"active": False}
    r = http.get(f"{base}/fhir/Patient/{pid}", headers=auth)
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "révoqué" in r.text and "revoked" in r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # revoking twice, or an unknown token, still answers 200 (RFC 7009)
    assert call("/oauth/revoke", access).status_code == 200
    assert call("/oauth/revoke", "whatever").status_code == 200


def test_the_fhir_api_refuses_misused_tokens(fhir: Fhir, http: httpx.Client, base: str) -> None:
    _, pid = add_patient(fhir)
    issuer = fhir.live.app.state.issuer
    reader = Principal(Kind.SYSTEM, "lab", frozenset({"system/*.rs"}), client_id="lab")
    good = issuer.issue(reader)

    def status(token: str, method: str = "GET", path: str = f"Patient/{pid}", **kw: object) -> httpx.Response:
        return http.request(
            method,
            f"{base}/fhir/{path}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
            **kw,
        )  # type: ignore[arg-type]

    assert status(good).status_code == 200
    expired = issuer.issue(reader, 1)
    time.sleep(2.1)
    r = status(expired)
    assert r.status_code == 401 and "expired" in r.text and "expiré" in r.text
    wrong_aud = issuer.sign(issuer.decode(good) | {"aud": "https://another.example/fhir"}, "at+jwt")
    r = status(wrong_aud)
    assert r.status_code == 401 and "audience" in r.text
    forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    r = status(forged)
    assert r.status_code == 401 and "signature" in r.text
    foreign = ECKey.generate_key("P-256", auto_kid=True)
    r = status(
        jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": foreign.kid}, issuer.decode(good), foreign)
    )
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    r = status("not.a.token")
    assert r.status_code == 401
    # an ID token is not an access token
    r = status(issuer.sign(issuer.decode(good)))
    assert r.status_code == 401 and "at+jwt" in r.text
    revoked = issuer.issue(reader)
    claims = issuer.decode(revoked)
    issuer.revoke(claims["jti"], claims["exp"])
    r = status(revoked)
    assert r.status_code == 401 and "revoked" in r.text
    # a read-only token may not write: 403, and nothing is created
    r = status(
        good,
        "POST",
        "Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "poids"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert fhir.get("Observation").json()["total"] == 0
    # a scheme other than Bearer
    r = http.get(f"{base}/fhir/Patient/{pid}", headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"


def test_client_commands(fhir: Fhir, http: httpx.Client, base: str, tmp_path: Path) -> None:
    """``carnet client add / list / remove``, as the operator runs them, then the client at work."""
    env = {"CARNET_DATABASE_URL": fhir.backend.url, "CARNET_DATA_DIR": str(fhir.backend.tmp)}

    def carnet(*args: str) -> Result:
        return run_carnet(*args, env=env)

    key = ec_key()
    jwks_file = tmp_path / "lab.jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(key)))
    r = carnet("client", "add", "Laboratoire", "--type", "backend", "--scope", "system/*.rs",
               "--jwks-file", str(jwks_file), "--client-id", "labo-1")
    assert r.exit_code == 0, r.stderr
    assert "client_id: labo-1" in r.stdout and "secret" not in r.stdout
    r = carnet("client", "add", "Logiciel", "--type", "confidential", "--redirect-uri", "https://lgc.example/cb",
               "--scope", "openid offline_access", "--scope", "user/*.rs")
    assert r.exit_code == 0, r.stderr
    secret = next(line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("client_secret"))
    assert len(secret) >= 40
    # refused: a private key, an http redirect off loopback, system scopes for a user-facing app
    private = tmp_path / "private.jwk"
    private.write_text(json.dumps(key.as_dict(private=True)))
    for args in (["Bad", "--type", "backend", "--scope", "system/*.rs", "--jwks-file", str(private)],
                 ["Bad", "--type", "public", "--redirect-uri", "http://app.example/cb", "--scope", "user/*.rs"],
                 ["Bad", "--type", "public", "--redirect-uri", "https://app.example/cb", "--scope", "system/*.rs"],
                 ["Bad", "--type", "backend", "--scope", "system/*.rs"]):
        refused = carnet("client", "add", *args)
        assert refused.exit_code != 0 and refused.stderr.strip(), args
    listed = carnet("client", "list", "--json")
    assert listed.exit_code == 0
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {row["name"] for row in rows} == {"Laboratoire", "Logiciel"}
    assert secret not in listed.stdout + carnet("client", "list").stdout
    # the registered backend client at work, until it is removed
    assert backend_token(http, base, "labo-1", key, "system/*.rs").status_code == 200
    assert carnet("client", "remove", "labo-1").exit_code == 0
    assert backend_token(http, base, "labo-1", key, "system/*.rs").status_code in (400, 401)
    assert carnet("client", "remove", "labo-1").exit_code != 0


def test_token_command_for_a_professional_and_a_patient(fhir: Fhir, http: httpx.Client, base: str) -> None:
    """``carnet token --as practitioner:…|patient:…`` (development mode), used on the live server."""
    from tests.functional.oauth_helpers import add_practitioner

    national_id, practitioner_id = add_practitioner(fhir)
    matricule, pid = add_patient(fhir)
    env = {"CARNET_DATABASE_URL": fhir.backend.url, "CARNET_DATA_DIR": str(fhir.backend.tmp),
           "CARNET_PORT": str(fhir.live.port)}

    def token(who: str) -> str:
        r = run_carnet("token", "--as", who, "--ttl", "120", env=env)
        assert r.exit_code == 0, r.stderr
        return r.stdout.strip()

    pro = verify_jwt(http, base, token(f"practitioner:{national_id}"))
    assert pro["kind"] == "practitioner" and pro["sub"] == national_id and pro["acr"] == "eidas1"
    assert pro["fhirUser"] == f"Practitioner/{practitioner_id}" and pro["profession"] == "10"
    assert pro["scope"] == "user/*.cruds" and pro["exp"] - pro["iat"] == 120
    patient_token = token(f"patient:{matricule}")
    claims = verify_jwt(http, base, patient_token)
    assert claims["kind"] == "patient" and claims["sub"] == matricule and claims["patient"] == pid
    assert claims["fhirUser"] == f"Patient/{pid}" and claims["scope"] == "patient/*.cruds"
    r = http.get(f"{base}/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {patient_token}"})
    assert r.status_code == 200
    unknown = run_carnet("token", "--as", "patient:180037505600012", env=env)
    assert unknown.exit_code != 0 and "180037505600012" in unknown.stderr
