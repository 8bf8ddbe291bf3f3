"""What the OAuth tests share: people in the directory and the record, registered clients, PKCE, client
assertions signed with real keys, and a browser that follows the sign-in page's forms."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from carnet.auth.clients import ClientStore, ClientType, OAuthClient
from carnet.directory import fhir as directory_fhir
from carnet.directory import keys
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import Traits
from tests.conftest import Fhir

REDIRECT = "http://127.0.0.1:9/callback"  # a loopback redirect URI: the browser never goes there
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# -- people ----------------------------------------------------------------------------------------


def add_practitioner(
    fhir: Fhir,
    first10: str = "1000345678",
    profession: str = "10",
    family: str = "MARTIN",
    given: str = "Claire",
) -> tuple[str, str]:
    """A professional in the directory: (national id, Practitioner id)."""
    ps = keys.PsIdNat(keys.IdNatKind.RPPS, keys.make_rpps(first10))
    resource = directory_fhir.practitioner(
        ps, family=family, given=given, suffix="DR", professions=[profession]
    )
    r = fhir.put(f"Practitioner/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return ps.value, resource["id"]


def add_patient(
    fhir: Fhir, first13: str = "2850575056123", family: str = "DURAND", given: str = "LUCIE"
) -> tuple[str, str]:
    """A patient with a (test) INS: (matricule, Patient id)."""
    matricule = nir.make_matricule(first13)
    traits = Traits(family, (given,), date(1985, 5, 1), "female", "75056")
    pid = "p-" + uuid.uuid4().hex[:12]
    patient = insfhir.build_patient(traits, matricule=matricule, oid=nir.OID_INS_NIR_TEST, resource_id=pid)
    r = fhir.put(f"Patient/{pid}", json=patient)
    assert r.status_code in (200, 201), r.text
    return matricule, pid


# -- clients ---------------------------------------------------------------------------------------


def register(
    fhir: Fhir,
    client_type: ClientType,
    scope: str,
    *,
    jwks: dict[str, Any] | None = None,
    name: str = "Appli de test",
) -> tuple[OAuthClient, str | None]:
    redirect = [] if client_type is ClientType.BACKEND else [REDIRECT]
    return ClientStore(fhir.backend.engine).add(
        name, client_type, redirect_uris=redirect, scope=scope.split(), jwks=jwks
    )


def ec_key(kid: str | None = None) -> ECKey:
    """A fresh P-384 key made with cryptography (a backend client's own key pair)."""
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ECKey.import_key(pem, {"kid": kid or secrets.token_hex(8), "alg": "ES384", "use": "sig"})


def rsa_key(kid: str | None = None) -> RSAKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return RSAKey.import_key(pem, {"kid": kid or secrets.token_hex(8), "alg": "RS384", "use": "sig"})


def public_jwks(*keys_: ECKey | RSAKey) -> dict[str, Any]:
    return {"keys": [dict(k.as_dict(private=False)) for k in keys_]}


def assertion(
    key: ECKey | RSAKey,
    client_id: str,
    audience: str,
    *,
    lifetime: int = 120,
    jti: str | None = None,
    iat: int | None = None,
) -> str:
    now = int(time.time()) if iat is None else iat
    alg = "ES384" if isinstance(key, ECKey) else "RS384"
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti or secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_token(
    http: httpx.Client, base: str, client_id: str, key: ECKey | RSAKey, scope: str, **assertion_options: Any
) -> httpx.Response:
    return http.post(
        base + "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, client_id, base + "/oauth/token", **assertion_options),
        },
    )


def verify_jwt(http: httpx.Client, base: str, token: str) -> dict[str, Any]:
    """The claims of a token signed by the server, checked against its published JWKS."""
    jwks = http.get(base + "/oauth/jwks").json()
    return dict(jwt.decode(token, KeySet.import_key_set(jwks)).claims)


# -- PKCE and the browser --------------------------------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(client_id: str, scope: str, challenge: str, aud: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": aud,
    } | extra


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), (response.status_code, response.text)
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class Browser(httpx.Client):
    """A browser: keeps cookies, follows nothing by itself (the tests look at each redirect)."""

    def start(self, base: str, params: dict[str, str]) -> httpx.Response:
        r = self.get(base + "/oauth/authorize", params=params)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/oauth/signin"
        page = self.get(base + "/oauth/signin")
        assert page.status_code == 200, page.text
        return page

    def submit(self, base: str, action: str, page: httpx.Response, **fields: str) -> httpx.Response:
        return self.post(base + action, data={"csrf": csrf_of(page.text)} | fields)


def exchange(
    http: httpx.Client, base: str, client_id: str, code: str, verifier: str, secret: str | None = None
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": client_id,
    }
    auth = (client_id, secret) if secret else None
    return http.post(base + "/oauth/token", data=data, auth=auth)
