"""Who is calling: the bearer token, or (development mode only) the open development principal."""

from __future__ import annotations

from starlette.requests import Request

from carnet.auth import tokens
from carnet.auth.principal import Principal
from carnet.config import Mode
from carnet.errors import Unauthenticated


def principal_from(request: Request) -> Principal:
    settings = request.app.state.settings
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        try:
            return tokens.verify(request.app.state.signing_key, token.strip())
        except tokens.InvalidToken as exc:
            raise Unauthenticated(exc.message) from None
    if settings.mode == Mode.DEVELOPMENT:
        return Principal.development()
    raise Unauthenticated("a bearer token is required")
