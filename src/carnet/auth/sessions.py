"""Sign-in sessions: a browser's sign-in in progress at the authorisation endpoint.

The browser holds a random token in a cookie; the database holds, under the token's SHA-256, the
pending authorisation request and the step reached (so any app node can carry the sign-in on).
A session lives ``CARNET_SIGNIN_SESSION_TTL_SECONDS`` and ends with the sign-in. Forms carry a
CSRF token: an HMAC of the session token under the server's secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from carnet.db.tables import signin_sessions

_US = 1_000_000


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignInSessions:
    def __init__(self, engine: Engine, secret: bytes, ttl_seconds: int) -> None:
        self.engine = engine
        self.secret = secret
        self.ttl = ttl_seconds

    def create(self, state: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(delete(signin_sessions).where(signin_sessions.c.expires_at < int(now * _US)))
            conn.execute(
                insert(signin_sessions).values(
                    session_id=_key(token), state=json.dumps(state), expires_at=int((now + self.ttl) * _US)
                )
            )
        return token

    def get(self, token: str | None) -> dict[str, Any] | None:
        if not token or len(token) > 100:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(signin_sessions).where(signin_sessions.c.session_id == _key(token))
            ).first()
        if row is None or row.expires_at < time.time() * _US:
            return None
        state: dict[str, Any] = json.loads(row.state)
        return state

    def save(self, token: str, state: dict[str, Any]) -> None:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(
                update(signin_sessions)
                .where(signin_sessions.c.session_id == _key(token))
                .values(state=json.dumps(state))
            )

    def renew(self, token: str) -> None:
        """Push the session's end ``ttl`` seconds from now (a sliding expiry)."""
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(
                update(signin_sessions)
                .where(signin_sessions.c.session_id == _key(token))
                .values(expires_at=int((time.time() + self.ttl) * _US))
            )

    def end(self, token: str) -> None:
        with self.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
            conn.execute(delete(signin_sessions).where(signin_sessions.c.session_id == _key(token)))

    def csrf(self, token: str) -> str:
        return hmac.new(self.secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, token: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf(token).encode(), str(presented).encode())
