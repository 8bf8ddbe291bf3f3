"""OAuth clients, registered by the operator (``carnet client add``).

Three types:

* ``confidential`` — a server-side application: authorization code + PKCE, authenticated at the
  token endpoint by its secret (``client_secret_basic`` or ``client_secret_post``). The secret is
  generated here, shown once, and kept only as an argon2id hash.
* ``public`` — a browser or mobile application: authorization code + PKCE, no secret.
* ``backend`` — SMART Backend Services: client credentials, authenticated by a JWT it signs with
  its private key (``private_key_jwt``), checked against the public keys it registered (a JWKS).

A client's scopes are the most it can be granted; each request gets the intersection of what it
asks and those (:func:`carnet.auth.scopes.grant`).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from carnet.auth import scopes as smart
from carnet.db.tables import oauth_assertion_jtis, oauth_clients, oauth_refresh_tokens
from carnet.errors import Conflict, Invalid, NotFound

_US = 1_000_000
_HASHER = PasswordHasher()


class ClientType(StrEnum):
    CONFIDENTIAL = "confidential"
    PUBLIC = "public"
    BACKEND = "backend"


GRANT_TYPES = {
    ClientType.CONFIDENTIAL: ("authorization_code", "refresh_token"),
    ClientType.PUBLIC: ("authorization_code", "refresh_token"),
    ClientType.BACKEND: ("client_credentials",),
}
AUTH_METHODS = {
    ClientType.CONFIDENTIAL: ("client_secret_basic", "client_secret_post"),
    ClientType.PUBLIC: ("none",),
    ClientType.BACKEND: ("private_key_jwt",),
}


@dataclass(frozen=True)
class OAuthClient:
    """A registered client, with the methods Authlib's ``ClientMixin`` asks for."""

    client_id: str
    name: str
    client_type: ClientType
    redirect_uris: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    jwks: dict[str, Any] | None = None
    secret_hash: str | None = field(default=None, repr=False)
    created_at: int = 0

    # -- Authlib ClientMixin -------------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """What was asked ∩ what the client is registered for (all of it when nothing was asked);
        None when nothing asked can be granted (invalid_scope)."""
        if not smart.split(scope):
            return " ".join(self.scope)
        return " ".join(smart.grant(smart.split(scope), self.scope)) or None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match only

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.secret_hash:
            return False
        try:
            return _HASHER.verify(self.secret_hash, client_secret)
        except (VerificationError, InvalidHashError):
            return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if method == "client_assertion_jwt":
            method = "private_key_jwt"
        return method in AUTH_METHODS[self.client_type]

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.client_type is not ClientType.BACKEND

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES[self.client_type]

    # -- ours ----------------------------------------------------------------------------------
    @property
    def key_set(self) -> KeySet:
        return KeySet.import_key_set(self.jwks or {"keys": []})  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        """What ``carnet client list`` shows (never the secret or its hash)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "type": self.client_type.value,
            "redirect_uris": list(self.redirect_uris),
            "scope": " ".join(self.scope),
            "keys": [k.get("kid") or k.get("kty") for k in (self.jwks or {}).get("keys", [])],
        }


def _row_client(row: Any) -> OAuthClient:
    return OAuthClient(
        row.client_id,
        row.name,
        ClientType(row.client_type),
        tuple(json.loads(row.redirect_uris)),
        tuple(row.scope.split()),
        json.loads(row.jwks) if row.jwks else None,
        row.secret_hash,
        row.created_at,
    )


def _check_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.fragment or (not parts.netloc and parts.scheme in ("http", "https")):
        raise Invalid(f"URI de redirection invalide : {uri} / invalid redirect URI: {uri}")
    if parts.scheme == "http" and not loopback:
        raise Invalid(
            f"URI de redirection en http hors boucle locale refusée : {uri} / "
            f"an http redirect URI must be a loopback address: {uri}"
        )
    if not parts.scheme or parts.scheme in ("javascript", "data", "file"):
        raise Invalid(f"URI de redirection invalide : {uri} / invalid redirect URI: {uri}")
    return uri


def load_jwks(text: str) -> dict[str, Any]:
    """A JWKS (or one JWK, or a PEM public key) as the public key set of a backend client."""
    from joserfc.jwk import import_key

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            if "PRIVATE" in text:
                raise Invalid(
                    "Une clé publique est attendue, pas une clé privée / "
                    "a public key is expected, not a private key"
                )
            key = import_key(text.encode(), parameters={"use": "sig"})
            if not key.kid:
                key.ensure_kid()
            data: dict[str, Any] = {"keys": [dict(key.as_dict(private=False))]}
        else:
            parsed = json.loads(text)
            data = parsed if "keys" in parsed else {"keys": [parsed]}
        keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
    except (ValueError, JoseError, TypeError) as exc:
        raise Invalid(f"Clés publiques illisibles : {exc} / unreadable public keys: {exc}") from None
    if not keys.keys:
        raise Invalid("Le JWKS ne contient aucune clé / the JWKS holds no key")
    public = []
    for key in keys.keys:
        if key.is_private:
            raise Invalid(
                "Le JWKS contient une clé privée : n'enregistrez que les clés publiques / "
                "the JWKS holds a private key: register public keys only"
            )
        public.append(dict(key.as_dict(private=False)))
    return {"keys": public}


class ClientStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, client_id: str) -> OAuthClient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_clients).where(oauth_clients.c.client_id == client_id)).first()
        return _row_client(row) if row is not None else None

    def all(self) -> list[OAuthClient]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(oauth_clients).order_by(oauth_clients.c.name, oauth_clients.c.client_id)
            )
            return [_row_client(r) for r in rows]

    def add(
        self,
        name: str,
        client_type: ClientType,
        *,
        redirect_uris: list[str] | tuple[str, ...] = (),
        scope: list[str] | tuple[str, ...] = (),
        jwks: dict[str, Any] | None = None,
        client_id: str | None = None,
    ) -> tuple[OAuthClient, str | None]:
        """Register a client; answers it and its secret (confidential clients only: shown once)."""
        if not name.strip():
            raise Invalid("Un nom de client est requis / a client name is required")
        unknown = [s for s in scope if not smart.is_known(s)]
        if unknown:
            raise Invalid(f"Portées inconnues : {' '.join(unknown)} / unknown scopes: {' '.join(unknown)}")
        if not scope:
            raise Invalid(
                "Au moins une portée est requise (--scope) / at least one scope is required (--scope)"
            )
        contexts = {c.context for c in (smart.parse_clinical(s) for s in scope) if c}
        if client_type is ClientType.BACKEND:
            if redirect_uris:
                raise Invalid(
                    "Un client backend n'a pas d'URI de redirection / a backend client has no redirect URI"
                )
            if jwks is None:
                raise Invalid(
                    "Un client backend doit enregistrer ses clés publiques (--jwks-file) / a backend "
                    "client must register its public keys (--jwks-file)"
                )
            if contexts - {"system"}:
                raise Invalid(
                    "Un client backend ne reçoit que des portées system/… / a backend client gets "
                    "system/… scopes only"
                )
        else:
            if not redirect_uris:
                raise Invalid(
                    "Au moins une URI de redirection est requise (--redirect-uri) / at least one "
                    "redirect URI is required (--redirect-uri)"
                )
            if "system" in contexts:
                raise Invalid(
                    "Les portées system/… sont réservées aux clients backend / system/… scopes are "
                    "for backend clients"
                )
            if jwks is not None:
                raise Invalid(
                    "Seul un client backend enregistre des clés / only a backend client registers keys"
                )
        uris = tuple(_check_redirect_uri(u) for u in redirect_uris)
        client_id = client_id or secrets.token_urlsafe(16)
        secret = secrets.token_urlsafe(32) if client_type is ClientType.CONFIDENTIAL else None
        client = OAuthClient(
            client_id,
            name.strip(),
            client_type,
            uris,
            tuple(dict.fromkeys(scope)),
            jwks,
            _HASHER.hash(secret) if secret else None,
            int(time.time() * _US),
        )
        try:
            with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
                conn.execute(
                    insert(oauth_clients).values(
                        client_id=client.client_id,
                        name=client.name,
                        client_type=client.client_type.value,
                        secret_hash=client.secret_hash,
                        redirect_uris=json.dumps(list(client.redirect_uris)),
                        scope=" ".join(client.scope),
                        jwks=json.dumps(jwks) if jwks else None,
                        created_at=client.created_at,
                    )
                )
        except IntegrityError:
            raise Conflict(f"Le client {client_id} existe déjà / client {client_id} already exists") from None
        return client, secret

    def remove(self, client_id: str) -> None:
        """Remove a client and its refresh tokens (its access tokens expire within their short life)."""
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            gone = conn.execute(delete(oauth_clients).where(oauth_clients.c.client_id == client_id)).rowcount
            conn.execute(delete(oauth_refresh_tokens).where(oauth_refresh_tokens.c.client_id == client_id))
            conn.execute(delete(oauth_assertion_jtis).where(oauth_assertion_jtis.c.client_id == client_id))
        if not gone:
            raise NotFound(f"Aucun client {client_id} / no client {client_id}")
