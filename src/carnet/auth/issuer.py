"""Access tokens: JWTs in the RFC 9068 profile, signed by this server, checked on every request.

A token is signed with ES256 by the server's signing key, a JSON Web Key kept in the keys folder
(``<keys>/token-signing.jwk``, mode 0600, created on first use; older keys left there as
``token-signing-<kid>.jwk`` are still accepted and published) and published at the JWKS endpoint.
Its claims carry the whole :class:`Principal`:

=============== =============================================================================
``iss``         the server (its public base URL)
``aud``         the FHIR base URL the token is good for
``sub``         the caller: a national professional id, a patient's INS matricule, a client id
``client_id``   the OAuth client the token was issued to
``scope``       granted SMART scopes, space-separated
``jti``         the token's id (revocation, audit)
``iat``/``exp`` issued at / expires at (short-lived: ``CARNET_ACCESS_TOKEN_TTL_SECONDS``)
``kind``        practitioner, patient, system, operator
``fhirUser``    ``Practitioner/<id>`` or ``Patient/<id>``
``patient``     the patient the token is bound to (SMART launch context)
``acr``         ``eidas1`` for a strong sign-on (Pro Santé Connect, the development provider)
``profession``  the TRE_G15 profession code
``roles``       roles (regulation...)
``access_mode`` normal, emergency or regulation
``reason``      the written reason of an emergency or regulation access
``name``        what to show for the caller
=============== =============================================================================

Verifying costs one signature check and one primary-key lookup (the revocation table).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.config import Settings
from carnet.crypto.keyfiles import create_once
from carnet.db.tables import oauth_revoked_tokens
from carnet.errors import Unauthenticated

log = logging.getLogger("carnet.auth")

ALGORITHM = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT type, not a secret
KEY_FILE = "token-signing.jwk"
STRONG_ACR = "eidas1"
_US = 1_000_000


def _both(fr: str, en: str) -> str:
    return f"{fr} / {en}"


class TokenError(Unauthenticated):
    """A bearer token that does not check out; ``reason`` is one of malformed, signature, expired,
    audience, issuer, type, revoked."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _write_new_key(path: Path) -> None:
    """Create the signing key file once, atomically: concurrent workers all end up with the same key."""
    key = ECKey.generate_key("P-256", auto_kid=True)
    create_once(path, orjson.dumps(key.as_dict(private=True) | {"alg": ALGORITHM, "use": "sig"}))


def _read_key(path: Path) -> ECKey:
    try:
        key = ECKey.import_key(orjson.loads(path.read_bytes()))
    except (ValueError, JoseError) as exc:
        raise RuntimeError(f"the token signing key {path.name} is unreadable: {exc}") from None
    if not key.is_private:
        raise RuntimeError(f"the token signing key {path.name} holds no private key")
    return key


class SigningKeys:
    """The current signing key and the older ones still accepted, from the keys folder."""

    def __init__(self, keys_dir: Path) -> None:
        current = keys_dir / KEY_FILE
        if not current.exists():
            _write_new_key(current)
        self.current = _read_key(current)
        older = [_read_key(p) for p in sorted(keys_dir.glob("token-signing-*.jwk"))]
        self.all = KeySet([self.current, *older])

    @property
    def kid(self) -> str:
        return str(self.current.kid)

    def public_jwks(self) -> dict[str, Any]:
        keys = []
        for key in self.all.keys:
            keys.append(dict(key.as_dict(private=False)) | {"alg": ALGORITHM, "use": "sig"})
        return {"keys": keys}


def claims_of(principal: Principal) -> dict[str, Any]:
    """The Principal's own claims (without iss, aud, jti, iat, exp)."""
    claims: dict[str, Any] = {"sub": principal.subject, "kind": principal.kind.value,
                              "scope": " ".join(sorted(principal.scopes)),
                              "access_mode": principal.access_mode.value}
    optional = {"client_id": principal.client_id, "fhirUser": principal.fhir_user,
                "patient": principal.patient, "profession": principal.profession,
                "reason": principal.reason, "name": principal.display or None}
    claims.update({k: v for k, v in optional.items() if v is not None})
    if principal.roles:
        claims["roles"] = sorted(principal.roles)
    if principal.strong_auth:
        claims["acr"] = STRONG_ACR
    return claims


def principal_of(claims: Mapping[str, Any]) -> Principal:
    """The Principal a verified token's claims describe."""
    def text(name: str) -> str | None:
        value = claims.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise TokenError("malformed", _both(f"jeton d'accès mal formé : « {name} » n'est pas du texte",
                                                f"malformed access token: '{name}' is not a string"))
        return value

    try:
        kind = Kind(claims["kind"])
        mode = AccessMode(claims.get("access_mode", AccessMode.NORMAL.value))
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError("roles")
        scope = text("scope") or ""
        return Principal(kind, text("sub") or "", frozenset(scope.split()), display=text("name") or "",
                         profession=text("profession"), roles=frozenset(roles), access_mode=mode,
                         fhir_user=text("fhirUser"), patient=text("patient"),
                         strong_auth=claims.get("acr") == STRONG_ACR, client_id=text("client_id"),
                         token_id=text("jti"), reason=text("reason"))
    except (KeyError, ValueError):
        raise TokenError("malformed", _both(
            "jeton d'accès mal formé : type d'appelant ou mode d'accès invalide",
            "malformed access token: invalid caller kind or access mode")) from None


class TokenIssuer:
    """Issues and verifies this server's access tokens (and signs its other JWTs: ID tokens)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.keys = SigningKeys(settings.keys_path)
        self.issuer = settings.public_base_url
        self.audience = settings.public_base_url + "/fhir"
        self.default_ttl = settings.access_token_ttl_seconds
        # Tokens whose signature and claims were checked, by their exact text, with their claims:
        # a client presents the same token for minutes, and an ES256 check costs ~0.4 ms. Expiry
        # and revocation are still checked on every use.
        self._checked: dict[str, dict[str, Any]] = {}

    # -- signing -------------------------------------------------------------------------------

    def sign(self, claims: Mapping[str, Any], typ: str = "JWT") -> str:
        """A JWT over ``claims`` signed with the current key (``typ`` in the header)."""
        header = {"alg": ALGORITHM, "typ": typ, "kid": self.keys.kid}
        return jwt.encode(header, dict(claims), self.keys.current, algorithms=[ALGORITHM])

    def jwks(self) -> dict[str, Any]:
        return self.keys.public_jwks()

    def issue(self, principal: Principal, ttl_seconds: int | None = None, *, client_id: str | None = None,
              extra: Mapping[str, Any] | None = None) -> str:
        """An access token for ``principal``, valid ``ttl_seconds`` (default the configured lifetime).
        Each token gets a fresh ``jti``: verifying it answers the same Principal with ``token_id`` set
        to that jti (and ``client_id`` to the keyword's value when one is given)."""
        now = int(time.time())
        ttl = self.default_ttl if ttl_seconds is None else ttl_seconds
        claims = claims_of(principal)
        if client_id is not None:
            claims["client_id"] = client_id
        claims.update(extra or {})
        claims.update({"iss": self.issuer, "aud": self.audience, "jti": secrets.token_urlsafe(18),
                       "iat": now, "exp": now + ttl})
        return self.sign(claims, ACCESS_TOKEN_TYPE)

    # -- verifying -----------------------------------------------------------------------------

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of one of our access tokens, checked (signature, type, issuer, audience,
        expiry, revocation). Raises :class:`TokenError`."""
        known = self._checked.get(token) if isinstance(token, str) else None
        if known is not None:
            if known["exp"] <= time.time():
                self._checked.pop(token, None)
                raise TokenError("expired", _both("le jeton d'accès a expiré",
                                                  "the access token has expired"))
            if self.is_revoked(known["jti"]):
                raise TokenError("revoked", _both("le jeton d'accès a été révoqué",
                                                  "the access token has been revoked"))
            return dict(known)
        if not isinstance(token, str) or token.count(".") != 2:
            raise TokenError("malformed", _both("jeton d'accès mal formé (un JWT signé est attendu)",
                                                "malformed access token (a signed JWT is expected)"))
        try:
            decoded = jwt.decode(token, self.keys.all, algorithms=[ALGORITHM])
        except BadSignatureError:
            raise TokenError("signature", _both("la signature du jeton d'accès ne correspond pas",
                                                "the access token's signature does not match")) from None
        except JoseError as exc:
            if "kid" in str(exc).lower() or "key" in str(exc).lower():
                raise TokenError("signature", _both(
                    "le jeton d'accès est signé par une clé inconnue de ce serveur",
                    "the access token is signed by a key this server does not know")) from None
            raise TokenError("malformed", _both(f"jeton d'accès mal formé ({exc.error})",
                                                f"malformed access token ({exc.error})")) from None
        except (ValueError, TypeError):
            raise TokenError("malformed", _both("jeton d'accès mal formé",
                                                "malformed access token")) from None
        if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenError("type", _both("ce jeton n'est pas un jeton d'accès (typ at+jwt attendu)",
                                           "this token is not an access token (typ at+jwt expected)"))
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer}, aud={"essential": True, "value": self.audience},
            exp={"essential": True}, jti={"essential": True}, sub={"essential": True})
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenError("expired", _both("le jeton d'accès a expiré",
                                              "the access token has expired")) from None
        except (InvalidClaimError, MissingClaimError) as exc:
            claim = getattr(exc, "claim", "")
            if claim == "aud":
                raise TokenError("audience", _both(
                    f"le jeton d'accès n'est pas destiné à ce serveur (audience attendue {self.audience})",
                    f"the access token is for another audience (expected {self.audience})")) from None
            if claim == "iss":
                raise TokenError("issuer", _both("le jeton d'accès a été émis par un autre serveur",
                                                 "the access token was issued by another server")) from None
            raise TokenError("malformed", _both(f"jeton d'accès mal formé (revendication « {claim} »)",
                                                f"malformed access token (claim '{claim}')")) from None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("exp"), int):
            raise TokenError("malformed", _both("jeton d'accès mal formé (jti, exp)",
                                                "malformed access token (jti, exp)"))
        if self.is_revoked(claims["jti"]):
            raise TokenError("revoked", _both("le jeton d'accès a été révoqué",
                                              "the access token has been revoked"))
        if len(self._checked) >= 10_000:
            self._checked.clear()
        self._checked[token] = dict(claims)
        return dict(claims)

    def verify(self, token: str) -> Principal:
        """The Principal of a valid access token; :class:`TokenError` (Unauthenticated) otherwise."""
        return principal_of(self.decode(token))

    # -- revocation ----------------------------------------------------------------------------

    def is_revoked(self, jti: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(oauth_revoked_tokens.c.jti)
                                .where(oauth_revoked_tokens.c.jti == jti)).first() is not None

    def revoke(self, jti: str, expires_at: int) -> None:
        """Refuse the access token ``jti`` from now on (``expires_at``: its exp, in seconds)."""
        try:
            with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
                conn.execute(insert(oauth_revoked_tokens).values(
                    jti=jti, expires_at=expires_at * _US, revoked_at=int(time.time() * _US)))
        except IntegrityError:
            pass  # already revoked
        log.info("access token %s revoked", jti)
