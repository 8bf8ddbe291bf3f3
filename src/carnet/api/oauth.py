"""HTTP adapter of the authorisation server (:mod:`carnet.auth.server`): endpoints and discovery.

=================================== ===========================================================
``GET|POST /oauth/authorize``       authorisation request (code + PKCE S256): on to the sign-in page
``POST /oauth/token``               authorization_code, refresh_token, client_credentials
``POST /oauth/revoke``              RFC 7009
``POST /oauth/introspect``          RFC 7662 (a client introspects its own tokens)
``GET /oauth/jwks``                 the public keys that sign access and ID tokens
``GET /oauth/userinfo``             OpenID Connect userinfo (bearer token with ``openid``)
``GET /.well-known/smart-configuration``  SMART App Launch v2 discovery
``GET /.well-known/openid-configuration`` OpenID Connect discovery
=================================== ===========================================================

Errors are RFC 6749 JSON (``{"error": …, "error_description": …}``); an authorisation request
whose client or redirect URI cannot be trusted gets an error page instead of a redirect.
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from carnet.api import signin
from carnet.api.auth import bearer_token
from carnet.auth import scopes as smart
from carnet.auth.server import ASSERTION_ALGORITHMS, CLIENT_AUTH_METHODS, CarnetAuthorizationServer
from carnet.errors import CarnetError

log = logging.getLogger("carnet.auth")

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
MAX_FORM_BYTES = 64 * 1024


def _server(request: Request) -> CarnetAuthorizationServer:
    server: CarnetAuthorizationServer = request.app.state.oauth
    return server


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=NO_STORE
    )


async def _params(request: Request) -> list[tuple[str, str]] | Response:
    if request.method == "GET":
        return list(request.query_params.multi_items())
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return oauth_error(413, "invalid_request", "request too large")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return oauth_error(400, "invalid_request", "expected Content-Type application/x-www-form-urlencoded")
    form = await request.form()
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


# -- authorisation endpoint ------------------------------------------------------------------------


async def authorize(request: Request) -> Response:
    params = await _params(request)
    if isinstance(params, Response):
        return params
    server = _server(request)
    lang = signin._lang(request)
    oauth_request = server.request("GET", "/oauth/authorize", request.headers, params)

    def check() -> Any:
        return server.check_authorization(oauth_request)

    try:
        grant = await run_in_threadpool(check)
    except ValueError:
        return signin.error_page(request, lang, "invalid_request")
    except OAuth2Error as error:
        if error.redirect_uri:  # a known client and redirect URI: tell the client
            return signin.to_response(server.handle_error_response(oauth_request, error))
        return signin.error_page(request, lang, f"{error.error} — {error.description or ''}")
    client = grant.request.client
    state = {"params": params, "lang": lang, "client_name": client.name}
    token = await run_in_threadpool(request.app.state.signin.sessions.create, state)
    response = RedirectResponse("/oauth/signin", status_code=303)
    signin.set_cookie(response, server.settings, token)
    return response


# -- token, revocation, introspection --------------------------------------------------------------


async def _call(request: Request, action: str) -> Response:
    params = await _params(request)
    if isinstance(params, Response):
        return params
    server = _server(request)
    path = request.url.path

    def work() -> Any:
        oauth_request = server.request(request.method, path, request.headers, params)
        return getattr(server, action)(oauth_request)

    try:
        result = await run_in_threadpool(work)
    except OAuth2Error as error:
        status, body, _ = error()
        return JSONResponse(body, status_code=status, headers=NO_STORE)
    except ValueError:  # Authlib refuses to echo characters RFC 6749 forbids in an error description
        return oauth_error(400, "invalid_request", "malformed request")
    response = signin.to_response(result)
    for key, value in NO_STORE.items():
        response.headers[key] = value
    return response


async def token(request: Request) -> Response:
    return await _call(request, "token")


async def revoke(request: Request) -> Response:
    return await _call(request, "revoke")


async def introspect(request: Request) -> Response:
    return await _call(request, "introspect")


# -- keys, userinfo, discovery ---------------------------------------------------------------------


async def jwks(request: Request) -> Response:
    return JSONResponse(_server(request).issuer.jwks(), headers={"cache-control": "public, max-age=300"})


async def userinfo(request: Request) -> Response:
    server = _server(request)
    try:
        raw = bearer_token(request)
        if raw is None:
            return JSONResponse(
                {"error": "invalid_token", "error_description": "bearer token required"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="carnet"'},
            )
        principal = await run_in_threadpool(server.issuer.verify, raw)
    except CarnetError as exc:
        return JSONResponse(
            {"error": "invalid_token", "error_description": exc.message},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="carnet", error="invalid_token"'},
        )
    if "openid" not in principal.scopes:
        return JSONResponse(
            {"error": "insufficient_scope", "error_description": "openid scope required"},
            status_code=403,
            headers={"www-authenticate": 'Bearer error="insufficient_scope"'},
        )
    return JSONResponse(server.user_info(principal, sorted(principal.scopes)), headers=NO_STORE)


def _endpoints(base: str) -> dict[str, Any]:
    return {
        "issuer": base,
        "jwks_uri": f"{base}/oauth/jwks",
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "scopes_supported": smart.supported(),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
    }


async def smart_configuration(request: Request) -> Response:
    server = _server(request)
    doc = _endpoints(server.base) | {
        "capabilities": [
            "launch-standalone",
            "authorize-post",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "sso-openid-connect",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
        ],
    }
    return JSONResponse(doc, headers={"cache-control": "public, max-age=300"})


async def openid_configuration(request: Request) -> Response:
    server = _server(request)
    doc = _endpoints(server.base) | {
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "at_hash",
            "fhirUser",
            "name",
            "profession",
        ],
        "acr_values_supported": ["eidas1"],
        "ui_locales_supported": ["fr", "en"],
    }
    return JSONResponse(doc, headers={"cache-control": "public, max-age=300"})


def routes(methods: dict[str, signin.SignInMethod]) -> list[BaseRoute]:
    return [
        Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/revoke", revoke, methods=["POST"]),
        Route("/oauth/introspect", introspect, methods=["POST"]),
        Route("/oauth/jwks", jwks, methods=["GET"]),
        Route("/oauth/userinfo", userinfo, methods=["GET", "POST"]),
        Route("/.well-known/smart-configuration", smart_configuration, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        # SMART discovery relative to the FHIR base as well
        Route("/fhir/.well-known/smart-configuration", smart_configuration, methods=["GET"]),
        *signin.routes(methods),
    ]
