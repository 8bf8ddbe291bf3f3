"""The OAuth 2.0 / OpenID Connect authorisation server (SMART App Launch v2), on Authlib.

Authlib does the protocol: request parsing and validation, client authentication, PKCE, the
grants, RFC 6749 error responses, revocation (RFC 7009) and introspection (RFC 7662). This module
supplies what Authlib leaves to the application — storage (codes, refresh tokens, assertion ids, in
the database), the clients (:mod:`carnet.auth.clients`), the tokens (:class:`TokenIssuer`) — and
the SMART rules:

* authorization code: PKCE with S256 only, for every client; the ``aud`` parameter must name our
  FHIR base; granted scopes are what the client asked ∩ what it is registered for, narrowed to the
  contexts of who signed in (a patient: ``patient/`` and ``user/``, bound to their own record; a
  professional: ``user/``); ``openid`` adds an ID token, ``offline_access`` a refresh token;
* refresh tokens rotate on every use; presenting a used one again revokes its whole family;
* client credentials for backend clients, authenticated with ``private_key_jwt`` only (RFC 7523:
  iss = sub = client id, aud = the token endpoint, a short ``exp``, a ``jti`` used once);
* a code used twice revokes the refresh tokens the first use obtained.

Framework-free: the HTTP adapter (:mod:`carnet.api.oauth`) builds a :class:`FormRequest` and turns
the :class:`OAuthResponse` back into HTTP. Calls block on the database: run them in a thread.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidScopeError,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from sqlalchemy import Engine, insert, select, update

from carnet.auth import scopes as smart
from carnet.auth.clients import ClientStore, OAuthClient
from carnet.auth.grants import (
    ASSERTION_ALGORITHMS,
    CLIENT_AUTH_METHODS,
    USER_AUTH_METHODS,
    AccessTokenClaims,
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    IntrospectionEndpoint,
    OpenIDCode,
    PrivateKeyJwt,
    RefreshTokenGrant,
    RevocationEndpoint,
    S256Challenge,
    SignedIn,
    StoredRefreshToken,
    _ascii,
    _hash,
    _now,
)
from carnet.auth.issuer import TokenError, TokenIssuer
from carnet.auth.principal import Kind, Principal
from carnet.config import Mode, Settings
from carnet.db.tables import oauth_refresh_tokens

log = logging.getLogger("carnet.auth")
# Authlib logs whole token responses (access and refresh tokens) at debug level: never below info.
logging.getLogger("authlib").setLevel(logging.INFO)
_US = 1_000_000

__all__ = ["ASSERTION_ALGORITHMS", "CLIENT_AUTH_METHODS", "USER_AUTH_METHODS", "SignedIn"]


# -- requests and responses ------------------------------------------------------------------------


class _Payload(OAuth2Payload):
    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._datalist[key].append(value)
        self._data = {k: v[0] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class _Headers(dict[str, str]):
    """HTTP headers, looked up whatever the case of the name."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class FormRequest(OAuth2Request):
    """An OAuth request as Authlib reads it: method, URL, headers, and its parameters (the query
    of a GET, the form of a POST)."""

    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str], params: Iterable[tuple[str, str]]
    ) -> None:
        super().__init__(method, uri, headers=_Headers(headers))
        self.payload = _Payload(params)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    def params(self) -> list[tuple[str, str]]:
        return [(k, v) for k, values in self.payload.datalist.items() for v in values]


@dataclass
class OAuthResponse:
    status: int
    body: Any = None  # a dict (JSON) or a string
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    def json(self) -> dict[str, Any]:
        return dict(self.body) if isinstance(self.body, dict) else {}


# -- the server ------------------------------------------------------------------------------------


class CarnetAuthorizationServer(AuthorizationServer):
    def __init__(self, settings: Settings, engine: Engine, issuer: TokenIssuer) -> None:
        super().__init__(scopes_supported=None)
        self.settings = settings
        self.engine = engine
        self.issuer = issuer
        self.clients = ClientStore(engine)
        self.base = settings.public_base_url
        self.token_endpoint = self.base + "/oauth/token"
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        self.register_grant(AuthorizationCodeGrant, [S256Challenge(required=True), OpenIDCode(self)])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)
        self.register_endpoint(RevocationEndpoint)
        self.register_endpoint(IntrospectionEndpoint)

    def write(self) -> Any:
        """A write transaction (a context manager yielding the connection)."""
        return _WriteTransaction(self.engine)

    def request(
        self, method: str, path: str, headers: Mapping[str, str], params: Iterable[tuple[str, str]]
    ) -> FormRequest:
        uri = self.base + path
        if self.settings.mode is Mode.DEVELOPMENT and uri.startswith("http://"):
            uri = "https://" + uri.removeprefix("http://")  # Authlib's https check: development serves http
        return FormRequest(method, uri, headers, params)

    # -- Authlib's framework hooks ---------------------------------------------------------------

    def query_client(self, client_id: str) -> OAuthClient | None:
        if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
            return None
        return self.clients.get(client_id)

    def create_oauth2_request(self, request: Any) -> FormRequest:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            log.info("token revoked by client %s", getattr(kwargs.get("client"), "client_id", "?"))

    def validate_requested_scope(self, scope: str | None) -> None:
        unknown = [s for s in smart.split(scope) if not smart.is_known(s)]
        if unknown:
            raise InvalidScopeError(_ascii(f"unknown scopes: {' '.join(unknown)}"))

    # -- tokens ----------------------------------------------------------------------------------

    def _generate_token(
        self,
        grant_type: str,
        client: OAuthClient,
        user: SignedIn | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        granted = smart.split(scope)
        if user is None:  # client credentials: the backend client itself
            principal = Principal(
                Kind.SYSTEM,
                client.client_id,
                frozenset(granted),
                display=client.name,
                client_id=client.client_id,
            )
        else:
            principal = replace(user.principal, scopes=frozenset(granted), client_id=client.client_id)
        ttl = self.settings.access_token_ttl_seconds
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": self.issuer.issue(principal, ttl),
            "expires_in": ttl,
            "scope": " ".join(granted),
        }
        if include_refresh_token and user is not None and "offline_access" in granted:
            token["refresh_token"] = secrets.token_urlsafe(32)
        if principal.patient and any(s.startswith("patient/") or s == "launch/patient" for s in granted):
            token["patient"] = principal.patient
        return token

    def save_token(self, token: dict[str, Any], request: FormRequest) -> None:
        grant_type = request.payload.grant_type
        old: StoredRefreshToken | None = request.refresh_token if grant_type == "refresh_token" else None
        if "refresh_token" not in token and old is None:
            return
        now = _now()
        with self.write() as conn:
            if old is not None:  # rotation: the old token is used once, and only once
                rotated = conn.execute(
                    update(oauth_refresh_tokens)
                    .where(
                        oauth_refresh_tokens.c.token_hash == old.token_hash,
                        oauth_refresh_tokens.c.rotated_at.is_(None),
                        oauth_refresh_tokens.c.revoked.is_(False),
                    )
                    .values(rotated_at=now * _US)
                ).rowcount
                if rotated != 1:
                    raise InvalidGrantError("refresh token already used")
            if "refresh_token" in token:
                signed_in: SignedIn = request.user
                family = old.family_id if old else request.authorization_code.code_hash
                scope = old.scope if old else token["scope"]
                conn.execute(
                    insert(oauth_refresh_tokens).values(
                        token_hash=_hash(token["refresh_token"]),
                        family_id=family,
                        client_id=request.client.client_id,
                        scope=scope,
                        claims=signed_in.to_json(),
                        auth_time=signed_in.auth_time * _US,
                        issued_at=now * _US,
                        expires_at=(now + self.settings.refresh_token_ttl_seconds) * _US,
                        revoked=False,
                    )
                )

    def revoke_family(self, family_id: str) -> None:
        with self.write() as conn:
            conn.execute(
                update(oauth_refresh_tokens)
                .where(oauth_refresh_tokens.c.family_id == family_id)
                .values(revoked=True)
            )

    def find_token(
        self, token_string: str, hint: str | None
    ) -> AccessTokenClaims | StoredRefreshToken | None:
        """An access token of ours (valid, not revoked) or a refresh token (any state), for
        revocation and introspection."""
        if token_string.count(".") == 2:
            try:
                return AccessTokenClaims(self.issuer.decode(token_string))
            except TokenError:
                return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_refresh_tokens).where(oauth_refresh_tokens.c.token_hash == _hash(token_string))
            ).first()
        if row is None:
            return None
        return StoredRefreshToken.from_row(row, revoked=bool(row.revoked) or row.rotated_at is not None)

    def user_info(self, principal: Principal, granted: list[str]) -> dict[str, Any]:
        """The OpenID claims about who signed in (ID token, userinfo). ``sub``: the national id of a
        professional; the opaque Patient id of a patient (never their INS matricule)."""
        sub = principal.patient if principal.kind is Kind.PATIENT and principal.patient else principal.subject
        info: dict[str, Any] = {"sub": sub}
        if "fhirUser" in granted and principal.fhir_user:
            info["fhirUser"] = f"{self.issuer.audience}/{principal.fhir_user}"
        if "profile" in granted and principal.display:
            info["name"] = principal.display
        if "profile" in granted and principal.profession:
            info["profession"] = principal.profession
        return info

    # -- the authorisation endpoint --------------------------------------------------------------

    def check_authorization(self, request: FormRequest) -> Any:
        """Validate an authorisation request (client, redirect URI, scopes, PKCE, aud): the grant
        to finish once the user has signed in. Raises OAuth2Error (with ``redirect_uri`` set when
        the error may go back to the client)."""
        return self.get_consent_grant(request, end_user=None)

    def authorize(self, request: FormRequest, signed_in: SignedIn | None) -> OAuthResponse:
        """Finish an authorisation request: the redirect to the client with a code (or with
        ``access_denied`` when ``signed_in`` is None)."""
        try:
            grant = self.get_consent_grant(request, end_user=signed_in)
        except OAuth2Error as error:
            if error.redirect_uri:
                return self.handle_error_response(request, error)
            raise
        return self.create_authorization_response(request, grant_user=signed_in, grant=grant)

    def token(self, request: FormRequest) -> OAuthResponse:
        return self.create_token_response(request)

    def revoke(self, request: FormRequest) -> OAuthResponse:
        return self.create_endpoint_response("revocation", request)

    def introspect(self, request: FormRequest) -> OAuthResponse:
        return self.create_endpoint_response("introspection", request)


class _WriteTransaction:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> Any:
        self._conn = self.engine.connect().execution_options(carnet_write=True)
        self._tx = self._conn.begin()
        return self._conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._tx.commit()
            else:
                self._tx.rollback()
        finally:
            self._conn.close()
