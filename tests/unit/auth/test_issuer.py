"""TokenIssuer: a Principal survives issue/verify, and every kind of bad token is refused with its reason."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from carnet.auth.issuer import TokenError, TokenIssuer
from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    upgrade(engine)
    yield TokenIssuer(settings, engine)
    engine.dispose()


PRINCIPALS = [
    Principal(Kind.PRACTITIONER, "810101234567", frozenset({"user/*.cruds", "openid", "fhirUser"}),
              display="Dr Marie Martin", profession="10", roles=frozenset({"regulation", "x"}),
              access_mode=AccessMode.EMERGENCY, fhir_user="Practitioner/abc", patient="p-1", strong_auth=True,
              client_id="app", reason="patient inconscient"),
    Principal(Kind.PATIENT, "180037505612345", frozenset({"patient/*.rs"}), fhir_user="Patient/p-1",
              patient="p-1"),
    Principal.system(),
    Principal(Kind.OPERATOR, "operator", frozenset()),
]


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_principal_round_trips(issuer: TokenIssuer, principal: Principal) -> None:
    back = issuer.verify(issuer.issue(principal))
    assert back.token_id
    assert back == dataclasses.replace(principal, token_id=back.token_id)
    other = issuer.verify(issuer.issue(principal, client_id="other-app"))
    assert other.client_id == "other-app" and other.token_id != back.token_id


def test_claims_are_rfc9068(issuer: TokenIssuer) -> None:
    token = issuer.issue(PRINCIPALS[0], 60)
    claims = issuer.decode(token)
    assert claims["iss"] == issuer.issuer and claims["aud"] == issuer.audience
    assert claims["exp"] - claims["iat"] == 60
    assert claims["acr"] == "eidas1" and claims["fhirUser"] == "Practitioner/abc"
    assert claims["scope"] == "fhirUser openid user/*.cruds"
    assert issuer.decode(issuer.issue(PRINCIPALS[1]))["exp"] - int(time.time()) <= 300


def _reason(issuer: TokenIssuer, token: str) -> str:
    with pytest.raises(TokenError) as info:
        issuer.verify(token)
    assert " / " in info.value.message  # French / English
    return info.value.reason


def test_bad_tokens_are_refused_with_their_reason(issuer: TokenIssuer, tmp_path: Path) -> None:
    good = issuer.issue(PRINCIPALS[0])
    assert _reason(issuer, good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")) == "signature"
    assert _reason(issuer, "not-a-jwt") == "malformed"
    assert _reason(issuer, "e30.e30.e30") == "malformed"
    assert _reason(issuer, issuer.issue(PRINCIPALS[0], -1)) == "expired"
    claims = issuer.decode(good) | {"aud": "https://elsewhere.example/fhir"}
    assert _reason(issuer, issuer.sign(claims, "at+jwt")) == "audience"
    assert _reason(issuer, issuer.sign(issuer.decode(good))) == "type"  # an ID token is not an access token
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    forged = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": stranger.kid}, issuer.decode(good), stranger)
    assert _reason(issuer, forged) == "signature"
    same_kid = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": issuer.keys.kid}, issuer.decode(good), stranger)
    assert _reason(issuer, same_kid) == "signature"
    principal = issuer.verify(good)
    assert principal.token_id
    issuer.revoke(principal.token_id, issuer.decode(good)["exp"])
    assert _reason(issuer, good) == "revoked"


def test_the_signing_key_is_kept_and_published(issuer: TokenIssuer) -> None:
    again = TokenIssuer(issuer.settings, issuer.engine)
    assert again.keys.kid == issuer.keys.kid
    assert again.verify(issuer.issue(Principal.system())).kind is Kind.SYSTEM
    [key] = issuer.jwks()["keys"]
    assert key["kid"] == issuer.keys.kid and "d" not in key and key["alg"] == "ES256"
    path = issuer.settings.keys_path / "token-signing.jwk"
    assert path.stat().st_mode & 0o077 == 0


def test_a_token_checked_once_still_expires_and_can_still_be_revoked(issuer: TokenIssuer) -> None:
    # ``exp`` is in whole seconds: a lifetime of 1 s can end a few milliseconds after issue
    short = issuer.issue(Principal.system(), ttl_seconds=2)
    assert issuer.verify(short).kind == Kind.SYSTEM  # checked, then remembered
    assert issuer.verify(short).kind == Kind.SYSTEM
    time.sleep(max(0.0, issuer.decode(short)["exp"] - time.time()) + 0.05)
    with pytest.raises(TokenError) as exc:
        issuer.verify(short)
    assert exc.value.reason == "expired"
    kept = issuer.issue(Principal.system())
    claims = issuer.decode(kept)
    issuer.revoke(claims["jti"], claims["exp"])
    with pytest.raises(TokenError) as exc:
        issuer.verify(kept)
    assert exc.value.reason == "revoked"
    forged = kept[:-4] + ("AAAA" if not kept.endswith("AAAA") else "BBBB")
    with pytest.raises(TokenError):
        issuer.verify(forged)  # another text: checked from scratch
