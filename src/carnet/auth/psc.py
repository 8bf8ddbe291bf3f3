"""Professionals' sign-in through Pro Santé Connect, or any OpenID provider that speaks its claims.

Carnet is the relying party; the provider is configured by its issuer URL, a client id and secret
(``CARNET_PSC_*``). The sign-in, as the authorisation server drives it:

1. ``pending = PendingSignIn.new()`` — fresh ``state``, ``nonce`` and PKCE ``code_verifier``, kept
   server-side (or in a signed, short-lived cookie) for this browser;
2. redirect the browser to ``client.authorization_url(redirect_uri=…, state=…, nonce=…,
   code_verifier=…)`` (scope ``openid scope_all``, ``acr_values=eidas1``, PKCE S256);
3. at the redirect URI: ``code = client.callback_code(request.query_params, state=pending.state)``
   (state, provider error and RFC 9207 ``iss`` checked), then ``identity = client.finish(code=…,
   redirect_uri=…, code_verifier=…, nonce=…)``: code exchange (client_secret_basic or _post), ID
   token signature checked against the provider's JWKS, iss / aud / exp / nonce / at_hash checked,
   acr required to be ``eidas1``, then the userinfo endpoint for the Pro Santé Connect claims;
4. ``identity.principal(fhir_user)`` is who signs in.

Every refusal is an :class:`~carnet.errors.Unauthenticated` (a :class:`PscError`) whose message
says what failed, in French and English. The calls block (HTTP to the provider): from async code
run them in a thread (``starlette.concurrency.run_in_threadpool``).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from carnet.auth.principal import Kind, Principal
from carnet.config import Settings
from carnet.errors import Unauthenticated

SCOPE = "openid scope_all"
ACR_EIDAS1 = "eidas1"
#: The OID that qualifies a ``SubjectRole`` value (``10^1.2.250.1.213.1.1.5.5``).
ROLE_OID = "1.2.250.1.213.1.1.5.5"
PRACTITIONER_SCOPES = frozenset({"user/*.cruds"})
# Signature algorithms accepted for ID tokens: asymmetric only (a JWKS holds public keys), never "none".
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                         "EdDSA")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
CLOCK_LEEWAY_SECONDS = 60
JWKS_REFRESH_MIN_SECONDS = 10.0  # an unknown key id refetches the JWKS at most this often


class PscError(Unauthenticated):
    """The sign-in through the professionals' provider failed; nobody is signed in."""

    def __init__(self, reason_fr: str, reason_en: str, detail: str = "") -> None:
        super().__init__(f"Connexion Pro Santé Connect refusée : {reason_fr} / Pro Santé Connect sign-in "
                         f"refused: {reason_en}" + (f" ({detail})" if detail else ""))
        self.reason_fr = reason_fr
        self.reason_en = reason_en


class PscUnreachable(PscError):
    """The provider could not be reached or answered garbage (discovery, keys, token, userinfo)."""

    def __init__(self, what_fr: str, what_en: str, detail: str = "") -> None:
        super().__init__(f"fournisseur d'identité injoignable ({what_fr})",
                         f"identity provider unreachable ({what_en})", detail)


@dataclass(frozen=True)
class Profession:
    """One exercice of ``SubjectRefPro``: profession (TRE_G15), category (TRE_R09), specialty."""

    code: str
    category: str | None = None  # codeCategorieProfessionnelle (C civil, M military, E student...)
    specialty: str | None = None  # codeSavoirFaire (TRE_R38 specialties: SM54...)
    specialty_type: str | None = None  # codeTypeSavoirFaire (S specialty, CEX competence...)


@dataclass(frozen=True)
class ProfessionalIdentity:
    """Who signed in, from the ID token and userinfo claims of a Pro Santé Connect-style provider."""

    national_id: str  # SubjectNameID: the national professional id (8 + RPPS, 0 + ADELI...)
    professions: tuple[Profession, ...] = ()
    roles: tuple[str, ...] = ()  # the code part of each SubjectRole (10 for "10^1.2.250.1.213.1.1.5.5")
    family_name: str = ""
    given_name: str = ""
    acr: str | None = None
    subject: str = ""  # the provider's sub
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def profession(self) -> str | None:
        """The first profession code, or None when the provider sent none."""
        return self.professions[0].code if self.professions else None

    @property
    def display(self) -> str:
        return " ".join(part for part in (self.given_name, self.family_name) if part) or self.national_id

    @property
    def strong_auth(self) -> bool:
        return self.acr == ACR_EIDAS1

    def principal(self, fhir_user: str | None) -> Principal:
        """The caller this sign-in makes: a practitioner identified by the national id."""
        return Principal(Kind.PRACTITIONER, self.national_id, PRACTITIONER_SCOPES, display=self.display,
                         profession=self.profession, roles=frozenset(self.roles), fhir_user=fhir_user,
                         strong_auth=self.strong_auth)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], *, acr: str | None) -> ProfessionalIdentity:
        national_id = claims.get("SubjectNameID")
        if not isinstance(national_id, str) or not national_id.strip():
            raise PscError("identifiant national (SubjectNameID) absent de la réponse du fournisseur",
                           "national id (SubjectNameID) missing from the provider's answer")
        return cls(national_id=national_id.strip(), professions=_professions(claims.get("SubjectRefPro")),
                   roles=_roles(claims.get("SubjectRole")), family_name=_text(claims.get("family_name")),
                   given_name=_text(claims.get("given_name")), acr=acr, subject=_text(claims.get("sub")),
                   claims=dict(claims))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _professions(ref_pro: Any) -> tuple[Profession, ...]:
    if isinstance(ref_pro, str):  # some providers send the structure as a JSON string
        try:
            ref_pro = json.loads(ref_pro)
        except ValueError:
            return ()
    if not isinstance(ref_pro, Mapping):
        return ()
    out: list[Profession] = []
    for exercice in ref_pro.get("exercices") or ():
        if not isinstance(exercice, Mapping) or not _text(exercice.get("codeProfession")):
            continue
        found = Profession(_text(exercice["codeProfession"]),
                           _text(exercice.get("codeCategorieProfessionnelle")) or None,
                           _text(exercice.get("codeSavoirFaire")) or None,
                           _text(exercice.get("codeTypeSavoirFaire")) or None)
        if found not in out:
            out.append(found)
    return tuple(out)


def _roles(subject_role: Any) -> tuple[str, ...]:
    values = [subject_role] if isinstance(subject_role, str) else subject_role
    out: list[str] = []
    for value in values if isinstance(values, list | tuple) else ():
        code = value.split("^", 1)[0].strip() if isinstance(value, str) else ""
        if code and code not in out:
            out.append(code)
    return tuple(out)


@dataclass(frozen=True)
class PendingSignIn:
    """The secrets of one sign-in in progress, kept for the browser between redirect and callback."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> PendingSignIn:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48))


class PscClient:
    """OpenID Connect relying party for Pro Santé Connect (Authlib's client over httpx2).

    The provider's metadata and keys are fetched on first use and kept ``metadata_ttl`` seconds
    (the keys are refetched sooner when a token names an unknown key). Thread-safe; keep one per
    application. ``transport`` lets tests interpose on the HTTP exchanges.
    """

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, redirect_uri: str | None = None,
                 token_endpoint_auth_method: str = "client_secret_basic",  # noqa: S107 (a method name)
                 timeout: float = 10.0, metadata_ttl: float = 3600.0,
                 transport: httpx2.BaseTransport | None = None) -> None:
        if not issuer or not client_id:
            raise ValueError("PscClient needs an issuer and a client id "
                             "(CARNET_PSC_ISSUER, CARNET_PSC_CLIENT_ID)")
        if token_endpoint_auth_method not in TOKEN_AUTH_METHODS:
            raise ValueError(f"token endpoint auth method must be one of {', '.join(TOKEN_AUTH_METHODS)}")
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.token_endpoint_auth_method = token_endpoint_auth_method
        self.timeout = timeout
        self.metadata_ttl = metadata_ttl
        self._transport = transport
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx2.BaseTransport | None = None) -> PscClient:
        if not settings.psc_enabled:
            raise ValueError("Pro Santé Connect is not configured (CARNET_PSC_ISSUER, CARNET_PSC_CLIENT_ID)")
        secret = settings.psc_client_secret.get_secret_value() if settings.psc_client_secret else ""
        return cls(settings.psc_issuer, settings.psc_client_id, secret,
                   redirect_uri=settings.psc_redirect_uri,
                   token_endpoint_auth_method=settings.psc_token_auth_method,
                   timeout=settings.psc_timeout_seconds, metadata_ttl=settings.psc_metadata_ttl_seconds,
                   transport=transport)

    # -- the provider's documents ---------------------------------------------------------------

    def _http(self) -> httpx2.Client:
        return httpx2.Client(timeout=self.timeout, transport=self._transport, follow_redirects=False)

    def _get_json(self, url: str, what_fr: str, what_en: str) -> dict[str, Any]:
        try:
            with self._http() as http:
                response = http.get(url, headers={"Accept": "application/json"})
        except httpx2.HTTPError as exc:
            raise PscUnreachable(what_fr, what_en, f"{url}: {exc.__class__.__name__} {exc}".strip()) from None
        if response.status_code != 200:
            raise PscUnreachable(what_fr, what_en, f"{url}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PscUnreachable(what_fr, what_en, f"{url}: not a JSON object")
        return body

    def metadata(self, *, refresh: bool = False) -> dict[str, Any]:
        """The provider's discovery document (OpenID Connect Discovery 1.0), cached."""
        with self._lock:
            fresh = self._metadata is not None and time.monotonic() - self._metadata_at < self.metadata_ttl
            if fresh and not refresh:
                assert self._metadata is not None
                return self._metadata
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url, "document de découverte", "discovery document")
        if document.get("issuer") != self.issuer:
            raise PscError("le document de découverte nomme un autre émetteur",
                           "the discovery document names another issuer",
                           f"{document.get('issuer')!r} ≠ {self.issuer!r}")
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint")
                   if not isinstance(document.get(k), str)]
        if missing:
            raise PscError("document de découverte incomplet", "incomplete discovery document",
                           ", ".join(missing))
        with self._lock:
            self._metadata, self._metadata_at = document, time.monotonic()
        return document

    def _key_set(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            max_age = JWKS_REFRESH_MIN_SECONDS if refresh else self.metadata_ttl
            if self._keys is not None and time.monotonic() - self._keys_at < max_age:
                return self._keys
        jwks = self._get_json(self.metadata()["jwks_uri"], "clés de signature", "signing keys")
        try:
            key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise PscUnreachable("clés de signature", "signing keys", f"unreadable JWKS: {exc}") from None
        with self._lock:
            self._keys, self._keys_at = key_set, time.monotonic()
        return key_set

    # -- the sign-in ------------------------------------------------------------------------------

    def _oauth(self, redirect_uri: str | None) -> OAuth2Client:
        return OAuth2Client(client_id=self.client_id, client_secret=self._client_secret,
                            token_endpoint_auth_method=self.token_endpoint_auth_method, scope=SCOPE,
                            redirect_uri=redirect_uri or self.redirect_uri, code_challenge_method="S256",
                            timeout=self.timeout, transport=self._transport, follow_redirects=False)

    def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        """Where to send the browser: the provider's authorisation endpoint with this sign-in's request."""
        if not state or not nonce:
            raise ValueError("state and nonce must be unguessable, non-empty values")
        if not 43 <= len(code_verifier) <= 128:
            raise ValueError("the PKCE code verifier must be 43 to 128 characters (RFC 7636)")
        endpoint = self.metadata()["authorization_endpoint"]
        with self._oauth(redirect_uri) as oauth:
            url, _ = oauth.create_authorization_url(endpoint, state=state, code_verifier=code_verifier,
                                                    nonce=nonce, acr_values=ACR_EIDAS1)
        return str(url)

    def callback_code(self, params: Mapping[str, str], *, state: str) -> str:
        """The authorisation code from the redirect URI's query, once its state (and iss) are checked."""
        received = params.get("state") or ""
        if not state or not hmac.compare_digest(received.encode(), state.encode()):
            raise PscError("paramètre state inattendu (requête rejouée ou forgée)",
                           "unexpected state parameter (replayed or forged request)")
        if "iss" in params and params["iss"] != self.issuer:  # RFC 9207: mix-up defence
            raise PscError("réponse d'un autre émetteur", "response from another issuer", params["iss"])
        if params.get("error"):
            raise PscError("le fournisseur a refusé la connexion", "the provider refused the sign-in",
                           " ".join(filter(None, (params.get("error"), params.get("error_description")))))
        code = params.get("code")
        if not code:
            raise PscError("code d'autorisation absent", "authorisation code missing")
        return code

    def finish(self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> ProfessionalIdentity:
        """Exchange the code, check the ID token, read userinfo: the professional who signed in."""
        metadata = self.metadata()
        with self._oauth(redirect_uri) as oauth:
            try:
                token = oauth.fetch_token(metadata["token_endpoint"], grant_type="authorization_code",
                                          code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
            except httpx2.TransportError as exc:
                raise PscUnreachable("échange du code", "code exchange", exc.__class__.__name__) from None
            except httpx2.HTTPStatusError as exc:
                raise PscUnreachable("échange du code", "code exchange",
                                     f"HTTP {exc.response.status_code}") from None
            except AuthlibBaseError as exc:
                raise PscError("échange du code refusé", "code exchange refused",
                               " ".join(filter(None, (exc.error, exc.description)))) from None
            except ValueError as exc:
                raise PscUnreachable("échange du code", "code exchange", str(exc)) from None
            id_token = token.get("id_token")
            access_token = token.get("access_token")
            if not isinstance(id_token, str) or not isinstance(access_token, str):
                raise PscError("jeton d'identité ou d'accès absent de la réponse",
                               "ID token or access token missing from the token response")
            claims = self.verify_id_token(id_token, nonce=nonce, access_token=access_token)
            acr = claims.get("acr")
            if acr != ACR_EIDAS1:
                raise PscError(f"niveau d'authentification insuffisant (acr « {acr} », {ACR_EIDAS1} attendu)",
                               f"authentication level too low (acr {acr!r}, {ACR_EIDAS1} required)")
            userinfo = self._userinfo(oauth, metadata["userinfo_endpoint"])
        if userinfo.get("sub") != claims.get("sub"):
            raise PscError("userinfo ne décrit pas la personne du jeton d'identité",
                           "userinfo describes someone other than the ID token's subject")
        return ProfessionalIdentity.from_claims({**claims, **userinfo}, acr=acr)

    def verify_id_token(self, id_token: str, *, nonce: str,
                        access_token: str | None = None) -> dict[str, Any]:
        """The ID token's claims, once its signature (provider's JWKS) and iss/aud/exp/nonce are checked."""
        token = self._decode(id_token, "jeton d'identité", "ID token")
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": self.client_id},
            "exp": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        }
        params = {"nonce": nonce, "client_id": self.client_id}
        if access_token:
            params["access_token"] = access_token
        id_claims = CodeIDToken(token.claims, token.header, options, params)
        try:
            id_claims.validate(leeway=CLOCK_LEEWAY_SECONDS)
        except ExpiredTokenError:
            raise PscError("jeton d'identité expiré", "ID token expired") from None
        except (InvalidClaimError, MissingClaimError) as exc:
            claim = getattr(exc, "claim", "") or str(exc)
            if claim == "nonce":
                raise PscError("nonce du jeton d'identité différent de celui de la demande",
                               "the ID token's nonce differs from the request's") from None
            raise PscError(f"jeton d'identité invalide (revendication « {claim} »)",
                           f"invalid ID token (claim {claim!r})", exc.description or "") from None
        except ClaimError as exc:
            raise PscError("jeton d'identité invalide", "invalid ID token", str(exc)) from None
        return dict(id_claims)

    def _decode(self, value: str, what_fr: str, what_en: str,
                algorithms_from: str = "id_token_signing_alg_values_supported") -> jwt.Token:
        """A JWS verified with the provider's keys (refetched once when the key is unknown or the
        signature does not check out, for key rotation)."""
        supported = self.metadata().get(algorithms_from) or ["RS256"]
        algorithms = [a for a in supported if a in ASYMMETRIC_ALGORITHMS]
        for refresh in (False, True):
            key_set = self._key_set(refresh=refresh)
            try:
                return jwt.decode(value, key_set, algorithms=algorithms)
            except (InvalidKeyIdError, BadSignatureError):
                if refresh:
                    break
            except JoseError as exc:
                raise PscError(f"signature du {what_fr} invalide", f"{what_en} signature invalid",
                               exc.description or exc.error) from None
            except ValueError as exc:  # not a JWS at all
                raise PscError(f"{what_fr} illisible", f"{what_en} unreadable", str(exc)) from None
        raise PscError(f"signature du {what_fr} invalide", f"{what_en} signature invalid",
                       "no key of the provider's JWKS verifies it")

    def _userinfo(self, oauth: OAuth2Client, endpoint: str) -> dict[str, Any]:
        try:
            response = oauth.get(endpoint, headers={"Accept": "application/json, application/jwt"})
        except httpx2.HTTPError as exc:
            raise PscUnreachable("userinfo", "userinfo", exc.__class__.__name__) from None
        if response.status_code != 200:
            raise PscUnreachable("userinfo", "userinfo", f"HTTP {response.status_code}")
        if response.headers.get("content-type", "").split(";")[0].strip() == "application/jwt":
            token = self._decode(response.text.strip(), "userinfo signé", "signed userinfo",
                                 "userinfo_signing_alg_values_supported")
            info: Any = token.claims
            if info.get("iss", self.issuer) != self.issuer or info.get("aud", self.client_id) not in (
                    self.client_id, [self.client_id]):
                raise PscError("userinfo signé pour un autre émetteur ou client",
                               "signed userinfo for another issuer or client")
        else:
            try:
                info = response.json()
            except ValueError:
                info = None
        if not isinstance(info, dict):
            raise PscUnreachable("userinfo", "userinfo", "not a JSON object")
        return info
