"""The grants, extensions and endpoints of the authorisation server (:mod:`carnet.auth.server`) on
Authlib's classes, with their storage: authorisation codes (one use; a replay revokes what the first
use got), refresh tokens (rotated; a reused one revokes its family), client assertions
(``private_key_jwt``, a ``jti`` accepted once), ID tokens, revocation and introspection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant as _AuthorizationCodeGrant,
)
from authlib.oauth2.rfc6749.grants import (
    ClientCredentialsGrant as _ClientCredentialsGrant,
)
from authlib.oauth2.rfc6749.grants import (
    RefreshTokenGrant as _RefreshTokenGrant,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from authlib.oidc.core import OpenIDCode as _OpenIDCode
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from carnet.auth import scopes as smart
from carnet.auth.clients import ClientType, OAuthClient
from carnet.auth.issuer import ALGORITHM, STRONG_ACR, claims_of, principal_of
from carnet.auth.principal import Kind, Principal
from carnet.db.tables import oauth_assertion_jtis, oauth_codes, oauth_refresh_tokens

if TYPE_CHECKING:
    from carnet.auth.server import CarnetAuthorizationServer, FormRequest

log = logging.getLogger("carnet.auth")

_US = 1_000_000
# Algorithms accepted for client assertions: asymmetric only (SMART: RS384 and ES384 at least).
ASSERTION_ALGORITHMS = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
]
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]
USER_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


def _ascii(text: str) -> str:
    """An error_description as RFC 6749 allows it (printable ASCII, no quote or backslash)."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)[:300]


def _now() -> int:
    return int(time.time())


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- who signed in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    """The resource owner of a code or refresh token: who signed in, when and how."""

    principal: Principal
    auth_time: int
    amr: tuple[str, ...] = ()

    @property
    def acr(self) -> str | None:
        return STRONG_ACR if self.principal.strong_auth else None

    def contexts(self) -> tuple[str, ...]:
        """The clinical scope contexts this sign-in may be granted."""
        if self.principal.kind is Kind.PATIENT:
            return ("patient", "user")
        return ("user",)  # a professional: patient/ scopes need a patient picker (not offered)

    def narrow(self, scope: str) -> list[str]:
        granted = smart.grant(smart.split(scope), smart.split(scope), contexts=self.contexts())
        if self.principal.kind is not Kind.PATIENT or not self.principal.patient:
            granted = [s for s in granted if s not in ("launch/patient", "launch")]
        return granted

    def to_json(self) -> str:
        return json.dumps(
            {
                "principal": claims_of(replace(self.principal, scopes=frozenset())),
                "auth_time": self.auth_time,
                "amr": list(self.amr),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SignedIn:
        data = json.loads(text)
        return cls(principal_of(data["principal"]), int(data["auth_time"]), tuple(data.get("amr") or ()))


# -- stored credentials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCode:
    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    nonce: str | None
    signed_in: SignedIn

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri or None

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.signed_in.auth_time

    def get_acr(self) -> str | None:
        return self.signed_in.acr

    def get_amr(self) -> list[str]:
        return list(self.signed_in.amr)


@dataclass(frozen=True)
class StoredRefreshToken:
    token_hash: str
    family_id: str
    client_id: str
    scope: str
    signed_in: SignedIn
    issued_at: int
    expires_at: int
    revoked: bool = False

    @classmethod
    def from_row(cls, row: Any, *, revoked: bool = False) -> StoredRefreshToken:
        """The token as ``oauth_refresh_tokens`` stores it (instants in microseconds there)."""
        return cls(row.token_hash, row.family_id, row.client_id, row.scope, SignedIn.from_json(row.claims),
                   row.issued_at // _US, row.expires_at // _US, revoked=revoked)

    def check_client(self, client: OAuthClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, self.expires_at - _now())

    def is_expired(self) -> bool:
        return self.expires_at <= _now()

    def is_revoked(self) -> bool:
        return self.revoked


@dataclass(frozen=True)
class AccessTokenClaims:
    """One of our access tokens, as revocation and introspection see it."""

    claims: dict[str, Any]

    def check_client(self, client: OAuthClient) -> bool:
        return self.claims.get("client_id") == client.client_id

    def get_scope(self) -> str:
        return str(self.claims.get("scope") or "")

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"]) - _now())

    def is_expired(self) -> bool:
        return int(self.claims["exp"]) <= _now()

    def is_revoked(self) -> bool:
        return False  # decoded with the revocation check: a revoked token is not found at all


# -- grants and extensions -------------------------------------------------------------------------


class S256Challenge(CodeChallenge):
    """PKCE with S256 only, required of every client at the authorisation endpoint."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE required: missing code_challenge")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE: only the S256 code_challenge_method is accepted")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("missing code_verifier")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: StoredCode) -> str:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: StoredCode) -> str:
        return "S256"


class AuthorizationCodeGrant(_AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = USER_AUTH_METHODS
    server: CarnetAuthorizationServer

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        aud = self.request.payload.data.get("aud")
        if aud is not None and aud.rstrip("/") != self.server.issuer.audience:
            raise InvalidRequestError(
                f"aud must be this server's FHIR base ({self.server.issuer.audience})",
                redirect_uri=redirect_uri,
            )
        return redirect_uri

    def save_authorization_code(self, code: str, request: FormRequest) -> None:
        signed_in: SignedIn = request.user
        scope = " ".join(signed_in.narrow(request.scope or ""))
        now = _now()
        with self.server.write() as conn:
            conn.execute(
                insert(oauth_codes).values(
                    code_hash=_hash(code),
                    client_id=request.client.client_id,
                    redirect_uri=request.payload.redirect_uri or "",
                    scope=scope,
                    code_challenge=request.payload.data["code_challenge"],
                    nonce=request.payload.data.get("nonce"),
                    claims=signed_in.to_json(),
                    auth_time=signed_in.auth_time * _US,
                    expires_at=(now + self.server.settings.authorization_code_ttl_seconds) * _US,
                )
            )
            # codes are kept a day after they expire (to recognise a replay), then go
            conn.execute(delete(oauth_codes).where(oauth_codes.c.expires_at < (now - 86400) * _US))

    def query_authorization_code(self, code: str, client: OAuthClient) -> StoredCode | None:
        """The code, claimed for this use (a code serves once: a second use is a replay)."""
        code_hash, now = _hash(code), _now() * _US
        with self.server.write() as conn:
            row = conn.execute(select(oauth_codes).where(oauth_codes.c.code_hash == code_hash)).first()
            if row is None or row.client_id != client.client_id:
                return None
            if row.used_at is not None:
                # RFC 6749 §4.1.2: revoke what the first use obtained
                conn.execute(
                    update(oauth_refresh_tokens)
                    .where(oauth_refresh_tokens.c.family_id == code_hash)
                    .values(revoked=True)
                )
                log.warning(
                    "authorization code replayed by client %s: its refresh tokens are revoked",
                    client.client_id,
                )
                return None
            if row.expires_at <= now:
                return None
            claimed = conn.execute(
                update(oauth_codes)
                .where(oauth_codes.c.code_hash == code_hash, oauth_codes.c.used_at.is_(None))
                .values(used_at=now)
            ).rowcount
        if claimed != 1:
            return None
        return StoredCode(
            row.code_hash,
            row.client_id,
            row.redirect_uri,
            row.scope,
            row.code_challenge,
            row.nonce,
            SignedIn.from_json(row.claims),
        )

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        pass  # claimed in query_authorization_code; kept until a day after expiry to recognise replays

    def authenticate_user(self, authorization_code: StoredCode) -> SignedIn:
        return authorization_code.signed_in


class RefreshTokenGrant(_RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = USER_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: CarnetAuthorizationServer

    def authenticate_refresh_token(self, refresh_token: str) -> StoredRefreshToken | None:
        token_hash = _hash(refresh_token)
        with self.server.engine.connect() as conn:
            row = conn.execute(
                select(oauth_refresh_tokens).where(oauth_refresh_tokens.c.token_hash == token_hash)
            ).first()
        if row is None or row.revoked:
            return None
        if row.rotated_at is not None:  # a used refresh token again: stolen, or a client bug
            self.server.revoke_family(row.family_id)
            log.warning(
                "a rotated refresh token of client %s was presented again: its family is revoked",
                row.client_id,
            )
            return None
        if row.expires_at <= _now() * _US:
            return None
        return StoredRefreshToken.from_row(row)

    def _validate_token_scope(self, token: StoredRefreshToken) -> None:
        """A refresh may narrow the scopes (``user/Patient.rs`` out of ``user/*.rs``), never widen them."""
        asked = smart.split(self.request.payload.scope)
        if asked and set(smart.grant(asked, smart.split(token.get_scope()))) != set(asked):
            raise InvalidScopeError("a refresh cannot widen the scopes first granted")

    def authenticate_user(self, refresh_token: StoredRefreshToken) -> SignedIn:
        return refresh_token.signed_in

    def revoke_old_credential(self, refresh_token: StoredRefreshToken) -> None:
        pass  # rotated in save_token, in the transaction that stores its successor


class ClientCredentialsGrant(_ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["private_key_jwt"]

    def create_token_response(self) -> tuple[int, Any, list[tuple[str, str]]]:
        client: OAuthClient = self.client
        asked = smart.split(self.request.payload.scope)
        if not asked:
            raise InvalidScopeError("a scope is required (system/...)")
        granted = smart.grant(asked, client.scope, contexts=("system",))
        if not granted:
            raise InvalidScopeError("none of the requested scopes is granted to this client")
        token = self.generate_token(scope=" ".join(granted), include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class OpenIDCode(_OpenIDCode):
    """ID tokens for the ``openid`` scope, signed like access tokens (ES256, our JWKS)."""

    def __init__(self, server: CarnetAuthorizationServer) -> None:
        super().__init__(require_nonce=False)
        self.server = server

    def exists_nonce(self, nonce: str, request: FormRequest) -> bool:
        with self.server.engine.connect() as conn:
            return (
                conn.execute(
                    select(oauth_codes.c.code_hash).where(
                        oauth_codes.c.client_id == request.payload.client_id, oauth_codes.c.nonce == nonce
                    )
                ).first()
                is not None
            )

    def resolve_client_private_key(self, client: OAuthClient) -> Any:
        return self.server.issuer.keys.current

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return ALGORITHM

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        return {"alg": ALGORITHM, "typ": "JWT", "kid": self.server.issuer.keys.kid}

    def get_client_claims(self, client: OAuthClient) -> dict[str, Any]:
        now = _now()
        return {
            "iss": self.server.issuer.issuer,
            "aud": [client.client_id],
            "iat": now,
            "exp": now + self.server.settings.id_token_ttl_seconds,
        }

    def generate_user_info(self, user: SignedIn, scope: str) -> dict[str, Any]:
        return self.server.user_info(user.principal, smart.split(scope))


class PrivateKeyJwt(JWTBearerClientAssertion):
    """``private_key_jwt`` client authentication (RFC 7523, SMART Backend Services)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: CarnetAuthorizationServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def get_audiences(self) -> list[str]:
        return [self.server.token_endpoint, self.server.issuer.issuer]

    def resolve_client_public_key(self, client: OAuthClient) -> Any:
        if client.client_type is not ClientType.BACKEND or not client.jwks:
            raise InvalidClientError(description="this client has no registered keys")
        return client.key_set

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(
                description=f"invalid client assertion (signature or key: {exc.error})"
            ) from None
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        super().verify_claims(claims)
        exp = claims.get("exp")
        if (
            not isinstance(exp, int)
            or exp - _now() > self.server.settings.client_assertion_max_seconds + self.leeway
        ):
            limit = self.server.settings.client_assertion_max_seconds
            raise InvalidClientError(description=f"the client assertion lives too long (at most {limit} s)")

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            return False
        now = _now()
        try:
            with self.server.write() as conn:
                conn.execute(
                    delete(oauth_assertion_jtis).where(oauth_assertion_jtis.c.expires_at < now * _US)
                )
                conn.execute(
                    insert(oauth_assertion_jtis).values(
                        client_id=str(claims["sub"]), jti=jti, expires_at=(int(claims["exp"]) + 60) * _US
                    )
                )
        except IntegrityError:
            return False
        return True


class RevocationEndpoint(_RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: CarnetAuthorizationServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return self.server.find_token(token_string, token_type_hint)

    def revoke_token(self, token: Any, request: FormRequest) -> None:
        if isinstance(token, AccessTokenClaims):
            self.server.issuer.revoke(str(token.claims["jti"]), int(token.claims["exp"]))
        else:  # a refresh token: the whole family (every token of that sign-in) goes
            self.server.revoke_family(token.family_id)


class IntrospectionEndpoint(_IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: CarnetAuthorizationServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return self.server.find_token(token_string, token_type_hint)

    def check_permission(self, token: Any, client: OAuthClient, request: FormRequest) -> bool:
        return bool(token.check_client(client))  # a client introspects its own tokens

    def introspect_token(self, token: Any) -> dict[str, Any]:
        if isinstance(token, AccessTokenClaims):
            claims = token.claims
            out: dict[str, Any] = {
                k: claims[k]
                for k in (
                    "scope",
                    "client_id",
                    "sub",
                    "exp",
                    "iat",
                    "iss",
                    "aud",
                    "jti",
                    "fhirUser",
                    "patient",
                    "acr",
                )
                if k in claims
            }
            return out | {"active": True, "token_type": "Bearer"}
        principal = token.signed_in.principal
        out = {
            "active": True,
            "token_type": "refresh_token",
            "scope": token.scope,
            "client_id": token.client_id,
            "sub": principal.subject,
            "exp": token.expires_at,
            "iat": token.issued_at,
            "iss": self.server.issuer.issuer,
        }
        if principal.fhir_user:
            out["fhirUser"] = principal.fhir_user
        return out
