"""The OpenAPI 3 description of the HTTP endpoints outside ``/fhir`` (``GET /openapi.json``).

The FHIR API describes itself (``GET /fhir/metadata``, a CapabilityStatement); everything else —
health, the transparency log, the authorisation server, its sign-in pages and the portal's pages —
is described here. The document is built from the application's route table: a path appears when
its route is mounted (the Pro Santé Connect routes only when that sign-in method is in force), and
each of its methods takes the operation declared below. ``tests/unit/test_openapi.py`` checks that
every route outside ``/fhir`` has its operation here, and that nothing here lacks its route.

The statuses and media types are those the handlers really answer (the functional tests run
schemathesis against this document on both databases): a route's 405 for a method it does not
take is Starlette's and left out.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from carnet import __version__

JSON = "application/json"
HTML = "text/html"
TEXT = "text/plain"
FORM = "application/x-www-form-urlencoded"

Op = dict[str, Any]

# -- reusable pieces -------------------------------------------------------------------------------

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description,
            "headers": {"location": {"schema": {"type": "string"}, "description": "where to go"}}}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}


def _form(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {FORM: {"schema": schema}}}


_STRING = {"type": "string"}
# the ledger's whole numbers: ASCII digits, below 2^63 (carnet.api.ledger.MAX_WHOLE), else 400
_WHOLE = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_LEDGER_ERROR = _json(_ref("LedgerError"), "refused: the message says why (French / English)")
_LEDGER_UNAVAILABLE = _json(_ref("LedgerError"), "the database did not answer in time; try again")
_OAUTH_ERROR = _json(_ref("OAuthError"), "RFC 6749 error")
_OAUTH_TOO_LARGE = _json(_ref("OAuthError"), "the form is larger than 64 KiB")


def _ledger(summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]] | None = None,
            extra: dict[str, Any] | None = None) -> Op:
    responses = {"200": ok, "400": _LEDGER_ERROR, "404": _LEDGER_ERROR, "503": _LEDGER_UNAVAILABLE}
    return {"tags": ["ledger"], "summary": summary, "parameters": parameters or [],
            "responses": responses | (extra or {})}


_TOKEN_FORM = _form({
    "grant_type": {"type": "string", "enum": ["authorization_code", "refresh_token", "client_credentials"]},
    "code": _STRING, "redirect_uri": _STRING, "code_verifier": _STRING,
    "refresh_token": _STRING, "scope": _STRING,
    "client_id": _STRING, "client_secret": _STRING,
    "client_assertion_type": _STRING, "client_assertion": _STRING,
}, ("grant_type",))
_TOKEN_OF_FORM = _form({
    "token": _STRING, "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
    "client_id": _STRING, "client_secret": _STRING,
    "client_assertion_type": _STRING, "client_assertion": _STRING,
}, ("token",))
_AUTHORIZE_FIELDS: dict[str, Any] = {
    "response_type": {"type": "string", "enum": ["code"]},
    "client_id": _STRING, "redirect_uri": _STRING, "scope": _STRING, "state": _STRING,
    "aud": _STRING, "code_challenge": _STRING, "code_challenge_method": {"type": "string", "enum": ["S256"]},
    "nonce": _STRING, "launch": _STRING, "lang": {"type": "string", "enum": ["fr", "en"]},
}
_AUTHORIZE_RESPONSES = {
    "303": _redirect("on to the sign-in page (with its cookie), or back to the client's redirect URI "
                     "with an RFC 6749 error"),
    "400": {"description": "a client or redirect URI that cannot be trusted: an error page (never a "
                           "redirect); a POST that is not a form: an OAuth error",
            "content": {HTML: {"schema": _STRING}, JSON: {"schema": _ref("OAuthError")}}},
}
_SIGNIN_LANG = _query("lang", {"type": "string", "enum": ["fr", "en"]}, "the page's language")
_SIGNIN_POST = {
    "200": _html("the sign-in page again, with a message"),
    "303": _redirect("the next step, or back to the client with a code or access_denied"),
    "400": _html("no sign-in session (expired), or a value refused"),
    "401": _html("wrong username, password or code"),
    "403": _html("the form's CSRF token is missing or wrong"),
    "429": _html("too many failures (this account, or this network address)"),
}


def _portal(summary: str, *, form: bool = False, content: bool = False,
            parameters: list[dict[str, Any]] | None = None) -> Op:
    responses: dict[str, Any] = {
        "200": ({"description": "the document's bytes, in the type it was published with",
                 "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
                if content else _html("the page")),
        "303": _redirect("to the landing page (no portal session) or to the next page"),
        "400": _html("a value refused"),
        "403": _html("the form's CSRF token is missing or wrong, or access refused"),
        "404": _html("nothing there (or nothing this visitor may see)"),
    }
    if form:
        responses["413"] = _html("the form is too large")
    op: Op = {"tags": ["portal"], "summary": summary, "parameters": parameters or [],
              "responses": responses}
    if form:
        op["requestBody"] = {"required": False, "content": {FORM: {"schema": {
            "type": "object", "properties": {"csrf": _STRING}}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {"csrf": _STRING}}}}}
    return op


_DOC = [_path("doc", "the DocumentReference id")]
_PID = [_path("pid", "the Patient id")]

# -- the operations, by path and method ------------------------------------------------------------

OPERATIONS: dict[str, dict[str, Op]] = {
    "/healthz": {"get": {
        "tags": ["service"], "summary": "liveness: the server answers, and its version",
        "responses": {"200": _json(_ref("Health"), "up")}}},
    "/openapi.json": {"get": {
        "tags": ["service"], "summary": "this document",
        "responses": {"200": _json({"type": "object"}, "the OpenAPI 3 document")}}},
    # -- the transparency log (carnet.api.ledger, docs/ledger.md) ----------------------------------
    "/ledger/checkpoint": {"get": _ledger(
        "the latest signed checkpoint (a signed note: origin, size, root hash, signature)",
        _text("the signed note"))},
    "/ledger/checkpoints": {"get": _ledger(
        "past checkpoints, oldest first, 1000 at most",
        _json(_ref("Checkpoints"), "the checkpoints"),
        [_query("after", _WHOLE, "only checkpoints of a larger size")])},
    "/ledger/key": {"get": {
        "tags": ["ledger"], "summary": "the verifier key of the checkpoints' signatures (note format)",
        "responses": {"200": _text("the verifier key, one line")}}},
    "/ledger/proof/inclusion": {"get": _ledger(
        "proof that a leaf is in the tree of a checkpoint's size (by index, or by the leaf's hash)",
        _json(_ref("InclusionProof"), "the proof's hashes, base64"),
        [_query("size", _WHOLE, "a tree size no larger than the latest checkpoint's", required=True),
         _query("index", _WHOLE, "the leaf's index (when no hash is given)"),
         _query("hash", {"type": "string", "format": "byte"}, "the leaf's hash, base64")])},
    "/ledger/proof/consistency": {"get": _ledger(
        "proof that the tree of size old is a prefix of the tree of size new",
        _json(_ref("ConsistencyProof"), "the proof's hashes, base64"),
        [_query("old", _WHOLE, "the smaller size", required=True),
         _query("new", _WHOLE, "the larger size, no larger than the latest checkpoint's", required=True)])},
    "/ledger/entries": {"get": _ledger(
        "the log's entries (AuditEvents) for operators and auditors, 1000 at most a call",
        _json(_ref("Entries"), "the entries, base64 of each leaf's bytes"),
        [_query("start", _WHOLE, "first index", required=True),
         _query("end", _WHOLE, "index after the last one (greater than start)", required=True)],
        {"401": _LEDGER_ERROR, "403": _LEDGER_ERROR}) | {"security": [{"bearer": []}, {}]}},
    # -- the authorisation server (carnet.api.oauth, docs/auth.md) ---------------------------------
    "/.well-known/smart-configuration": {"get": {
        "tags": ["oauth"], "summary": "SMART App Launch v2 discovery",
        "responses": {"200": _json(_ref("SmartConfiguration"), "the configuration")}}},
    "/fhir/.well-known/smart-configuration": {"get": {
        "tags": ["oauth"], "summary": "SMART discovery relative to the FHIR base (the same document)",
        "responses": {"200": _json(_ref("SmartConfiguration"), "the configuration")}}},
    "/.well-known/openid-configuration": {"get": {
        "tags": ["oauth"], "summary": "OpenID Connect discovery",
        "responses": {"200": _json(_ref("OpenIdConfiguration"), "the configuration")}}},
    "/oauth/jwks": {"get": {
        "tags": ["oauth"], "summary": "the public keys that sign access and ID tokens",
        "responses": {"200": _json(_ref("Jwks"), "a JWK set")}}},
    "/oauth/authorize": {
        "get": {"tags": ["oauth"], "summary": "authorisation request (code flow, PKCE S256)",
                "parameters": [_query(k, v, k) for k, v in _AUTHORIZE_FIELDS.items()],
                "responses": _AUTHORIZE_RESPONSES},
        "post": {"tags": ["oauth"], "summary": "authorisation request, posted as a form",
                 "requestBody": _form(_AUTHORIZE_FIELDS),
                 "responses": _AUTHORIZE_RESPONSES | {"413": _OAUTH_TOO_LARGE}}},
    "/oauth/token": {"post": {
        "tags": ["oauth"], "summary": "tokens: authorization_code, refresh_token, client_credentials",
        "requestBody": _TOKEN_FORM,
        "responses": {"200": _json(_ref("TokenResponse"), "the tokens"), "400": _OAUTH_ERROR,
                      "401": _OAUTH_ERROR, "413": _OAUTH_TOO_LARGE}}},
    "/oauth/revoke": {"post": {
        "tags": ["oauth"], "summary": "RFC 7009 revocation (an access or a refresh token)",
        "requestBody": _TOKEN_OF_FORM,
        "responses": {"200": _json({"type": "object"}, "revoked, or never known"), "400": _OAUTH_ERROR,
                      "401": _OAUTH_ERROR, "413": _OAUTH_TOO_LARGE}}},
    "/oauth/introspect": {"post": {
        "tags": ["oauth"], "summary": "RFC 7662 introspection (a client introspects its own tokens)",
        "requestBody": _TOKEN_OF_FORM,
        "responses": {"200": _json(_ref("Introspection"), "the token's state"), "400": _OAUTH_ERROR,
                      "401": _OAUTH_ERROR, "413": _OAUTH_TOO_LARGE}}},
    "/oauth/userinfo": {
        method: {"tags": ["oauth"], "summary": "OpenID Connect userinfo (a bearer token with openid)",
                 "security": [{"bearer": []}],
                 "responses": {"200": _json(_ref("UserInfo"), "the claims"),
                               "401": _json(_ref("OAuthError"), "no token, or a token refused"),
                               "403": _json(_ref("OAuthError"), "the token lacks the openid scope")}}
        for method in ("get", "post")},
    # -- the sign-in pages (carnet.api.signin, carnet.api.signin_methods) --------------------------
    "/oauth/signin": {"get": {
        "tags": ["signin"], "summary": "the sign-in page of an authorisation request (cookie carnet_signin)",
        "parameters": [_SIGNIN_LANG],
        "responses": {"200": _html("the page: the client, the scopes asked, the sign-in methods"),
                      "400": _html("no sign-in session (expired)")}}},
    "/oauth/signin/cancel": {"post": {
        "tags": ["signin"], "summary": "refuse: back to the client with access_denied",
        "requestBody": _form({"csrf": _STRING}), "responses": _SIGNIN_POST}},
    "/oauth/signin.css": {"get": {
        "tags": ["signin"], "summary": "the sign-in pages' stylesheet",
        "responses": {"200": {"description": "CSS", "content": {"text/css": {"schema": _STRING}}}}}},
    "/oauth/signin/development": {"post": {
        "tags": ["signin"], "summary": "development mode only: sign in as a professional of the directory",
        "requestBody": _form({"csrf": _STRING, "national_id": _STRING}), "responses": _SIGNIN_POST}},
    "/oauth/signin/patient": {"post": {
        "tags": ["signin"], "summary": "a patient's username and password (then a one-time code)",
        "requestBody": _form({"csrf": _STRING, "username": _STRING, "password": _STRING}),
        "responses": _SIGNIN_POST}},
    "/oauth/signin/patient/code": {"post": {
        "tags": ["signin"], "summary": "a patient's one-time code",
        "requestBody": _form({"csrf": _STRING, "code": _STRING}), "responses": _SIGNIN_POST}},
    "/oauth/signin/psc": {"post": {
        "tags": ["signin"], "summary": "sign in with Pro Santé Connect: on to its authorisation endpoint",
        "requestBody": _form({"csrf": _STRING}),
        "responses": _SIGNIN_POST | {"502": _html("Pro Santé Connect could not be reached")}}},
    "/oauth/psc/callback": {"get": {
        "tags": ["signin"], "summary": "Pro Santé Connect's answer",
        "parameters": [_query("code", _STRING, "its code"), _query("state", _STRING, "the state sent")],
        "responses": _SIGNIN_POST | {"502": _html("Pro Santé Connect could not be reached")}}},
    # -- the portal's pages (carnet.web, docs/portal.md): for browsers, HTML -----------------------
    "/": {"get": _portal("the landing page", parameters=[_query("message", _STRING, "a notice to show")])},
    "/portail": {"get": _portal("home: a patient's record, or a professional's search")},
    "/portail/connexion": {"post": _portal("start signing in (through /oauth/authorize)", form=True)},
    "/portail/retour": {"get": _portal("the authorisation server's answer", parameters=[
        _query("code", _STRING, "the code"), _query("state", _STRING, "the state sent"),
        _query("error", _STRING, "an RFC 6749 error")])},
    "/portail/deconnexion": {"post": _portal("sign out", form=True)},
    "/portail/langue": {"post": _portal("French or English (a cookie)", form=True)},
    "/portail/dossier": {"post": _portal("choose the record (one's own, or a child's)", form=True)},
    "/portail/documents": {"get": _portal("the record's documents"),
                           "post": _portal("the record's documents, filtered", form=True)},
    "/portail/documents/ajouter": {"get": _portal("the upload form"),
                                   "post": _portal("upload a PDF", form=True)},
    "/portail/documents/{doc}": {"get": _portal("one document", parameters=_DOC)},
    "/portail/documents/{doc}/contenu": {"get": _portal("a document's content", content=True,
                                                        parameters=_DOC)},
    "/portail/documents/{doc}/{action}": {"post": _portal("mask or unmask a document", form=True,
                                                          parameters=[*_DOC, _path("action", "masquer, "
                                                                                   "demasquer")])},
    "/portail/mesures": {"get": _portal("the record's measurements")},
    "/portail/historique": {"get": _portal("who accessed the record (the audit trail)")},
    "/portail/historique/{event}/verifier": {"post": _portal(
        "check an access against the signed log", form=True, parameters=[_path("event", "AuditEvent id")])},
    "/portail/acces": {"get": _portal("who may access the record"),
                       "post": _portal("who may access the record", form=True)},
    "/portail/acces/{action}": {"post": _portal("grant or withdraw an access", form=True,
                                                parameters=[_path("action", "the decision")])},
    "/portail/identite": {"get": _portal("the record's identity (INS)")},
    "/portail/patients": {"get": _portal("a professional's patient search"),
                          "post": _portal("a professional's patient search", form=True)},
    "/portail/urgence": {"post": _portal("emergency access (break the glass)", form=True)},
    "/portail/patients/{pid}": {"get": _portal("a patient's record, for a professional", parameters=_PID)},
    "/portail/patients/{pid}/urgence": {"post": _portal("emergency access to this record", form=True,
                                                        parameters=_PID)},
    "/portail/patients/{pid}/urgence/fin": {"post": _portal("end an emergency access", form=True,
                                                            parameters=_PID)},
    "/portail/patients/{pid}/publier": {"get": _portal("the publication form", parameters=_PID),
                                        "post": _portal("publish a PDF into the record", form=True,
                                                        parameters=_PID)},
    "/portail/patients/{pid}/documents/{doc}": {"get": _portal("one document of the record",
                                                               parameters=[*_PID, *_DOC])},
    "/portail/patients/{pid}/documents/{doc}/contenu": {"get": _portal(
        "a document's content", content=True, parameters=[*_PID, *_DOC])},
    "/portail/static/{path}": {"get": {
        "tags": ["portal"], "summary": "the portal's stylesheet and images",
        "parameters": [_path("path", "file name")],
        "responses": {"200": {"description": "the file", "content": {"*/*": {"schema": {
            "type": "string", "format": "binary"}}}},
            "404": _text("no such file")}}},
}

# -- schemas ---------------------------------------------------------------------------------------

_B64_LIST = {"type": "array", "items": {"type": "string", "format": "byte"}}
_ENDPOINTS = {
    "issuer": _STRING, "jwks_uri": _STRING, "authorization_endpoint": _STRING, "token_endpoint": _STRING,
    "introspection_endpoint": _STRING, "revocation_endpoint": _STRING, "userinfo_endpoint": _STRING,
    "grant_types_supported": {"type": "array", "items": _STRING},
    "response_types_supported": {"type": "array", "items": _STRING},
    "scopes_supported": {"type": "array", "items": _STRING},
    "code_challenge_methods_supported": {"type": "array", "items": _STRING},
    "token_endpoint_auth_methods_supported": {"type": "array", "items": _STRING},
    "token_endpoint_auth_signing_alg_values_supported": {"type": "array", "items": _STRING},
}
_ENDPOINTS_REQUIRED = ["issuer", "jwks_uri", "authorization_endpoint", "token_endpoint",
                       "grant_types_supported", "response_types_supported",
                       "code_challenge_methods_supported"]

SCHEMAS: dict[str, Any] = {
    "Health": {"type": "object", "required": ["status", "version"],
               "properties": {"status": {"type": "string", "enum": ["ok"]}, "version": _STRING}},
    "LedgerError": {"type": "object", "required": ["error"], "properties": {"error": _STRING}},
    "Checkpoints": {"type": "object", "required": ["checkpoints"], "properties": {"checkpoints": {
        "type": "array", "items": {"type": "object", "required": ["size", "note"], "properties": {
            "size": {"type": "integer", "minimum": 1}, "note": _STRING}}}}},
    "InclusionProof": {"type": "object", "required": ["index", "size", "hashes"], "properties": {
        "index": {"type": "integer", "minimum": 0}, "size": {"type": "integer", "minimum": 1},
        "hashes": _B64_LIST}},
    "ConsistencyProof": {"type": "object", "required": ["old", "new", "hashes"], "properties": {
        "old": {"type": "integer", "minimum": 0}, "new": {"type": "integer", "minimum": 1},
        "hashes": _B64_LIST}},
    "Entries": {"type": "object", "required": ["entries"], "properties": {"entries": {
        "type": "array", "items": {"type": "object", "required": ["index", "data"], "properties": {
            "index": {"type": "integer", "minimum": 0}, "data": {"type": "string", "format": "byte"}}}}}},
    "OAuthError": {"type": "object", "required": ["error"], "properties": {
        "error": _STRING, "error_description": _STRING, "error_uri": _STRING, "state": _STRING}},
    "SmartConfiguration": {"type": "object", "required": [*_ENDPOINTS_REQUIRED, "capabilities"],
                           "properties": _ENDPOINTS | {"capabilities": {"type": "array", "items": _STRING}}},
    "OpenIdConfiguration": {"type": "object", "required": [*_ENDPOINTS_REQUIRED, "subject_types_supported",
                                                           "id_token_signing_alg_values_supported"],
                            "properties": _ENDPOINTS | {
                                "subject_types_supported": {"type": "array", "items": _STRING},
                                "id_token_signing_alg_values_supported": {"type": "array", "items": _STRING},
                                "claims_supported": {"type": "array", "items": _STRING},
                                "acr_values_supported": {"type": "array", "items": _STRING},
                                "ui_locales_supported": {"type": "array", "items": _STRING}}},
    "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
        "type": "object", "required": ["kty"], "properties": {
            "kty": _STRING, "kid": _STRING, "crv": _STRING, "x": _STRING, "y": _STRING,
            "use": _STRING, "alg": _STRING}}}}},
    "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in"],
                      "properties": {"access_token": _STRING, "token_type": _STRING,
                                     "expires_in": {"type": "integer"}, "scope": _STRING,
                                     "refresh_token": _STRING, "id_token": _STRING, "patient": _STRING}},
    "Introspection": {"type": "object", "required": ["active"], "properties": {
        "active": {"type": "boolean"}, "scope": _STRING, "client_id": _STRING, "sub": _STRING,
        "token_type": _STRING, "exp": {"type": "integer"}, "iat": {"type": "integer"}}},
    "UserInfo": {"type": "object", "required": ["sub"], "properties": {
        "sub": _STRING, "fhirUser": _STRING, "name": _STRING}},
}


def _openapi_path(route: BaseRoute) -> str | None:
    if isinstance(route, Route):
        return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
    if isinstance(route, Mount):
        return route.path + "/{path}"
    return None


def route_operations(routes: list[BaseRoute]) -> dict[str, set[str]]:
    """The (OpenAPI) paths outside /fhir and their methods (lower case, HEAD left implicit)."""
    found: dict[str, set[str]] = {}
    for route in routes:
        path = _openapi_path(route)
        if path is None or path == "/fhir" or (path.startswith("/fhir/") and "/.well-known/" not in path):
            continue
        methods = (route.methods or {"GET"}) if isinstance(route, Route) else {"GET"}
        found.setdefault(path, set()).update(m.lower() for m in methods if m != "HEAD")
    return found


def document(routes: list[BaseRoute], base_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes mounted (see the module)."""
    paths: dict[str, Any] = {}
    for path, methods in sorted(route_operations(routes).items()):
        declared = OPERATIONS.get(path, {})
        ops = {m: declared[m] for m in sorted(methods) if m in declared}
        if ops:
            paths[path] = ops
    return {
        "openapi": "3.1.0",
        "info": {"title": "Carnet (outside the FHIR API)", "version": __version__,
                 "description": "Health, the transparency log, the authorisation server and its sign-in "
                                "pages, the portal. The FHIR API describes itself at /fhir/metadata."},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


async def openapi(request: Request) -> Response:
    app = request.app
    cached = getattr(app.state, "openapi", None)
    if cached is None:
        cached = app.state.openapi = document(app.routes, app.state.settings.public_base_url)
    return JSONResponse(cached, headers={"cache-control": "public, max-age=300"})


def routes() -> list[BaseRoute]:
    return [Route("/openapi.json", openapi, methods=["GET"])]
