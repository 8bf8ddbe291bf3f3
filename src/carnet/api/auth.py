"""Who is calling: the bearer token, or (development mode only) the open development principal."""

from __future__ import annotations

from starlette.requests import Request

from carnet.auth.issuer import TokenIssuer
from carnet.auth.principal import Principal
from carnet.config import Mode
from carnet.errors import Unauthenticated


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without the header."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("L'en-tête Authorization doit être « Bearer <jeton> » / "
                              "the Authorization header must be 'Bearer <token>'")
    return token.strip()


def principal_from(request: Request) -> Principal:
    settings = request.app.state.settings
    token = bearer_token(request)
    if token is not None:
        issuer: TokenIssuer = request.app.state.issuer
        return issuer.verify(token)
    if settings.mode == Mode.DEVELOPMENT:
        return Principal.development()
    raise Unauthenticated("Un jeton d'accès (Bearer) est requis / a bearer token is required")
