"""The ASGI application: ``create_app(settings)`` wires the engine, the FHIR router and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carnet import __version__, web
from carnet.api import ledger, oauth, openapi, signin
from carnet.api.fhir import fhir_endpoint
from carnet.api.limits import HEADER_SECONDS_STATE, RequestLimits
from carnet.auth.accounts import AccountStore, load_notifier
from carnet.auth.issuer import TokenIssuer
from carnet.auth.server import CarnetAuthorizationServer
from carnet.auth.sessions import SignInSessions
from carnet.config import Mode, Settings
from carnet.db.engine import WalCheckpointer, make_engine
from carnet.fhir.capability import capability_statement
from carnet.fhir.router import status_of
from carnet.ledger.keys import load_signer, origin_of
from carnet.ledger.sequencer import LedgerWorker, Sequencer
from carnet.policy.rights import RightsWorker
from carnet.web.portal import Portal
from carnet.wiring import build_router

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
CSP = (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'")
# The portal's pages: no script at all, styles and images from this origin only, forms posted here
PORTAL_CSP = (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; "
              b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class SecurityHeaders:
    """Pure ASGI middleware adding strict default headers (and no-store on the API)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        api = path.startswith("/fhir")
        page = path == "/" or (path.startswith("/portail") and not path.endswith("/contenu"))
        csp = PORTAL_CSP if page else CSP

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                headers.append(csp)
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


class AnyMethod:
    """An endpoint as an ASGI app: a Route given one takes every method (given a function, only those
    listed, answering the others itself)."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    engine = make_engine(settings, statement_seconds=settings.statement_timeout_seconds,
                         background_checkpoints=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = settings.public_base_url + "/fhir"
    router = build_router(settings, engine)
    router.capability = lambda: capability_statement(base, started, router.declared_operations(),
                                                     tuple(router.instantiates), tuple(router.guides))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Few threads: each request's database work is short, and Python threads beyond the cores
        # only queue on the interpreter lock, stretching every write's hold on the SQLite lock.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        worker = None
        if settings.audit and settings.ledger_sequencer:
            worker = LedgerWorker(Sequencer(engine, load_signer(settings), origin_of(settings),
                                            checkpoint_seconds=settings.ledger_checkpoint_seconds,
                                            spool=getattr(router.audit, "spool", None)))
            worker.start()
        sqlite = engine.dialect.name == "sqlite"
        checkpoints = WalCheckpointer(engine) if sqlite and settings.wal_checkpointer else None
        if checkpoints is not None:
            checkpoints.start()
        # rights that end or begin on a day with no write to say so
        every = settings.rights_recheck_seconds
        rights = RightsWorker(engine, every) if every else None
        if rights is not None:
            rights.start()
        yield {HEADER_SECONDS_STATE: settings.header_read_seconds}  # read by carnet.api.limits.HttpProtocol
        if rights is not None:
            rights.stop()
        if checkpoints is not None:
            checkpoints.stop()
        if worker is not None:
            worker.stop()
        engine.dispose()

    issuer = TokenIssuer(settings, engine)
    oauth_server = CarnetAuthorizationServer(settings, engine, issuer)
    methods = signin.build_methods(settings)
    app = Starlette(
        # Starlette tries the routes in order: the API's first (a request to /fhir no longer tests
        # the portal's 26 patterns before its own), the portal's pages last
        routes=[
            *ledger.routes(),
            Route("/healthz", health),
            *openapi.routes(),
            *oauth.routes(methods),  # before /fhir/{path}: it holds /fhir/.well-known/smart-configuration
            # every method reaches the FHIR router, which answers an unsupported one with a 405
            # OperationOutcome (a route's own 405 would be Starlette's plain text)
            Route("/fhir", AnyMethod(fhir_endpoint)),
            Route("/fhir/{path:path}", AnyMethod(fhir_endpoint)),
            *web.routes(),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(RequestLimits, settings=settings)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.fhir = router
    app.state.signing_key = settings.signing_key()
    app.state.issuer = issuer
    app.state.oauth = oauth_server
    app.state.signin = signin.SignIn(
        settings, oauth_server,
        SignInSessions(engine, app.state.signing_key, settings.signin_session_ttl_seconds),
        AccountStore(settings, engine), load_notifier(settings.notifier, settings.mode == Mode.PRODUCTION),
        router, methods)
    app.state.portal = Portal(settings, app.state)
    router.token_issuer = app.state.issuer  # type: ignore[attr-defined]  # emergency access tokens
    return app


__all__ = ["create_app", "status_of"]
