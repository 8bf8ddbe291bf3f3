"""What a client may send, and how slowly: limits enforced before any handler sees the request.

:class:`RequestLimits` (ASGI middleware, every route) refuses a body larger than
``CARNET_MAX_BODY_BYTES`` (413: at once when its Content-Length says so, else as soon as the bytes
received pass it, chunked bodies included) and a body that arrives too slowly (408: not complete
within ``CARNET_BODY_READ_SECONDS`` plus a second per ``CARNET_BODY_MIN_RATE`` bytes received, so
that a large upload on a slow line passes and a trickle of bytes does not hold the request). The
refusal replaces whatever the handler would have answered; after a 408 the connection is closed.
The FHIR API answers an OperationOutcome, the OAuth endpoints an OAuth error, other pages plain
text; each message in French and English.

:class:`HttpProtocol` is uvicorn's HTTP protocol with a deadline on headers: a connection that
sends nothing, or trickles its request line and headers, is closed after
``CARNET_HEADER_READ_SECONDS`` (uvicorn alone keeps it open forever). ``carnet serve`` selects it
with :func:`uvicorn_options`; the window is read from the application's lifespan state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carnet.config import Settings
from carnet.errors import CarnetError, SlowClient, TooLarge, bilingual

try:  # what uvicorn's "auto" picks: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - uvicorn[standard] ships httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

HEADER_SECONDS_STATE = "carnet.header_read_seconds"  # key of the lifespan state HttpProtocol reads
DEFAULT_HEADER_SECONDS = 10.0


def too_large(limit: int) -> TooLarge:
    return TooLarge(bilingual(f"le corps de la requête dépasse les {limit} octets acceptés",
                              f"the request body is larger than the {limit} bytes accepted"))


def too_slow() -> SlowClient:
    return SlowClient(bilingual("le corps de la requête arrive trop lentement ; la requête est abandonnée",
                                "the request body arrived too slowly; the request was abandoned"))


def _refusal(path: str, exc: CarnetError) -> tuple[bytes, bytes]:
    """(content type, body) of a refusal, in the idiom of the surface asked."""
    if path == "/fhir" or path.startswith("/fhir/"):
        return b"application/fhir+json; charset=utf-8", orjson.dumps(
            {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in exc.issues]})
    if path.startswith("/oauth/"):
        return b"application/json", orjson.dumps({"error": "invalid_request",
                                                  "error_description": exc.message})
    return b"text/plain; charset=utf-8", exc.message.encode()


class RequestLimits:
    """Pure ASGI middleware bounding every request body in size and in time (see the module)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.max_body_bytes
        self.seconds = settings.body_read_seconds
        self.rate = max(settings.body_min_rate, 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, path, too_large(self.max_bytes))
            return
        start = time.monotonic()
        received = 0
        complete = False  # the whole body is in: later receives (waiting for a disconnect) are not timed
        refused: CarnetError | None = None
        answered = False  # a response has started, the handler's or the refusal

        async def limited_receive() -> Message:
            nonlocal received, complete, refused
            if refused is not None:
                raise refused
            if complete:
                return await receive()
            remaining = start + self.seconds + received / self.rate - time.monotonic()
            message: Message | None = None
            if remaining > 0:
                with anyio.move_on_after(remaining):
                    message = await receive()
            if message is None:
                refused = too_slow()
                raise refused
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = too_large(self.max_bytes)
                    raise refused
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if refused is not None:  # the refusal replaces the handler's answer
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await self._refuse(send, path, refused)
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refused is None:
                raise
        if refused is not None and not answered:
            await self._refuse(send, path, refused)

    async def _refuse(self, send: Send, path: str, exc: CarnetError) -> None:
        status = 408 if isinstance(exc, SlowClient) else 413
        ctype, body = _refusal(path, exc)
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        if status == 408:  # a trickling client is let go; the rest of a body too large is discarded by
            headers.append((b"connection", b"close"))  # uvicorn, so the client reads its 413 (bounded by
            # HttpProtocol's window)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class HttpProtocol(_Base):
    """uvicorn's HTTP protocol, closing a connection that does not complete a request's headers
    within the window (``CARNET_HEADER_READ_SECONDS``, from the lifespan state): checked every
    window, a connection is closed when no request arrived during the last one and none is running.
    A request being answered (or its body being read, which :class:`RequestLimits` times) keeps it."""

    _carnet_timer: asyncio.TimerHandle | None = None
    _carnet_window: float = DEFAULT_HEADER_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        seconds = float(self.app_state.get(HEADER_SECONDS_STATE, DEFAULT_HEADER_SECONDS))
        if seconds > 0:
            self._carnet_window = seconds
            self._carnet_timer = self.loop.call_later(seconds, self._carnet_check, self.cycle)

    def _carnet_check(self, seen: Any) -> None:
        self._carnet_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is seen and (cycle is None or cycle.response_complete):
            self.transport.close()  # nothing asked for a whole window: a silent or trickling client
            return
        self._carnet_timer = self.loop.call_later(self._carnet_window, self._carnet_check, cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._carnet_timer is not None:
            self._carnet_timer.cancel()
            self._carnet_timer = None
        super().connection_lost(exc)


def uvicorn_options() -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that put these limits on the connections."""
    return {"http": "carnet.api.limits:HttpProtocol"}
