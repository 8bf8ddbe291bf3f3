"""Development bearer tokens (HMAC-SHA256 over a JSON claim set).

A stop-gap until the OAuth 2.0 server: tokens are issued by ``carnet token`` in development
mode only, and checked with the key from :meth:`Settings.signing_key`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson

from carnet.auth.principal import Kind, Principal
from carnet.errors import Unauthenticated


class InvalidToken(Unauthenticated):
    """The bearer token is malformed, forged or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, principal: Principal, ttl_seconds: int = 3600) -> str:
    claims = {"kind": principal.kind.value, "sub": principal.subject,
              "scope": " ".join(sorted(principal.scopes)), "exp": int(time.time()) + ttl_seconds}
    body = _b64(orjson.dumps(claims))
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"carnet-dev.{body}.{sig}"


def verify(key: bytes, token: str) -> Principal:
    try:
        prefix, body, sig = token.split(".")
    except ValueError:
        raise InvalidToken("malformed bearer token") from None
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if prefix != "carnet-dev" or not hmac.compare_digest(sig, expected):
        raise InvalidToken("bearer token signature does not match")
    claims = orjson.loads(_unb64(body))
    if claims["exp"] < time.time():
        raise InvalidToken("bearer token expired")
    return Principal(Kind(claims["kind"]), claims["sub"], frozenset(claims["scope"].split()))
