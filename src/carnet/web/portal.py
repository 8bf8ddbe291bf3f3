"""The portal's machinery: sessions, sign-in through our own authorisation server, pages, forms.

The portal is a first-party OAuth client of Carnet (``carnet-portail``, public, PKCE). Signing in
goes through ``/oauth/authorize`` like any application, so patients and professionals use the same
sign-in methods (password and one-time code; Pro Santé Connect or, in development, the development
provider). On return the portal reads who signed in from the access token, revokes the token, and
keeps that caller in a server-side session (a random cookie naming a row; nothing about the user in
the cookie or in URLs). Every page then asks the FHIR engine as that caller, through the same
:func:`carnet.api.fhir.dispatch` as the API, so a page shows exactly what the API would answer and
every access is traced the same way.

Sessions end after ``CARNET_PORTAL_IDLE_SECONDS`` without a page, ``CARNET_PORTAL_MAX_SECONDS``
after sign-in, or on sign-out. Every form carries a CSRF token (an HMAC of the session token).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from carnet.api.fhir import dispatch
from carnet.auth.clients import ClientStore, ClientType
from carnet.auth.issuer import claims_of, principal_of
from carnet.auth.principal import Kind, Principal
from carnet.auth.sessions import SignInSessions
from carnet.config import Settings
from carnet.errors import Conflict
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRequest, FhirResponse
from carnet.web.text import TEXT

log = logging.getLogger("carnet.web")

COOKIE = "carnet_portail"
LANG_COOKIE = "carnet_langue"
ANON_COOKIE = "carnet_formulaire"  # CSRF token of the forms shown before sign-in
CLIENT_ID = "carnet-portail"
SCOPES = ("openid", "fhirUser", "launch/patient", "patient/*.cruds", "user/*.cruds")
HERE = Path(__file__).parent
MAX_PART_BYTES = 11 * 1024 * 1024  # an uploaded PDF (10 MB) and room for its form
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
)


def text(lang: str) -> Callable[[str], str]:
    index = 1 if lang == "en" else 0
    return lambda key: TEXT[key][index]


def language(request: Request) -> str:
    """French unless the visitor chose English (a public service speaks French first)."""
    return "en" if request.cookies.get(LANG_COOKIE) == "en" else "fr"


@dataclass
class Visitor:
    """A signed-in browser: its session, who it is, and the record it is looking at."""

    token: str
    state: dict[str, Any]
    principal: Principal
    lang: str
    csrf: str

    @property
    def is_patient(self) -> bool:
        return self.principal.kind == Kind.PATIENT

    @property
    def record(self) -> str | None:
        """The record a patient is looking at: theirs, or that of a minor they represent."""
        chosen = self.state.get("record")
        return str(chosen) if chosen else self.principal.resource_id


class Portal:
    """What the portal's handlers share (``app.state.portal``)."""

    def __init__(self, settings: Settings, app_state: Any) -> None:
        self.settings = settings
        self.state = app_state
        engine = app_state.engine
        self.sessions = SignInSessions(engine, app_state.signing_key, settings.portal_idle_seconds)
        self.clients = ClientStore(engine)
        self.secure = settings.public_base_url.startswith("https://")

    @property
    def redirect_uri(self) -> str:
        return self.settings.public_base_url + "/portail/retour"

    def ensure_client(self) -> None:
        """Register the portal as a client of this server, once (its redirect URI follows the base URL)."""
        client = self.clients.get(CLIENT_ID)
        if client is not None and self.redirect_uri in client.redirect_uris:
            return
        if client is not None:
            self.clients.remove(CLIENT_ID)
        with contextlib.suppress(Conflict):  # another process registered it meanwhile
            self.clients.add(
                "Carnet — portail",
                ClientType.PUBLIC,
                redirect_uris=[self.redirect_uri],
                scope=list(SCOPES),
                client_id=CLIENT_ID,
            )

    # -- the FHIR engine, as the visitor -------------------------------------------------------

    async def fhir(
        self,
        principal: Principal,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> FhirResponse:
        raw = body if body is None or isinstance(body, bytes) else jsonio.dumps(body)
        hdrs = {"content-type": "application/fhir+json", **(headers or {})}
        return await dispatch(self.state.fhir, FhirRequest(method, path, list(query), hdrs, raw), principal)

    async def json(
        self,
        principal: Principal,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"content-type": "application/json-patch+json"} if method == "PATCH" else None
        resp = await self.fhir(principal, method, path, query, body, headers)
        content = resp.json_bytes()
        return resp.status, (dict(jsonio.loads(content)) if content else {})

    # -- sessions ------------------------------------------------------------------------------

    async def visitor(self, request: Request) -> Visitor | None:
        token = request.cookies.get(COOKIE)
        state = await run_in_threadpool(self.sessions.get, token)
        if not token or state is None or "claims" not in state:
            return None
        now = time.time()
        if now - float(state.get("signed_in", 0)) > self.settings.portal_max_seconds:
            await run_in_threadpool(self.sessions.end, token)
            return None
        if now - float(state.get("renewed", 0)) > 60:  # a sliding end, renewed at most once a minute
            state["renewed"] = now
            await run_in_threadpool(self.renew, token, state)
        principal = principal_of(state["claims"])
        return Visitor(token, state, principal, language(request), self.sessions.csrf(token))

    def renew(self, token: str, state: dict[str, Any]) -> None:
        self.sessions.save(token, state)
        self.sessions.renew(token)

    async def save(self, visitor: Visitor) -> None:
        await run_in_threadpool(self.sessions.save, visitor.token, visitor.state)

    async def flash(self, visitor: Visitor, key: str, detail: str = "", kind: str = "ok") -> None:
        visitor.state.setdefault("flash", []).append([key, detail, kind])
        await self.save(visitor)

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=self.settings.portal_max_seconds,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )

    # -- signing in ----------------------------------------------------------------------------

    async def start_signin(self, request: Request) -> Response:
        await run_in_threadpool(self.ensure_client)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        nonce = secrets.token_urlsafe(24)
        token = await run_in_threadpool(
            self.sessions.create, {"pending": {"state": nonce, "verifier": verifier}}
        )
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(SCOPES),
            "state": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "aud": self.settings.public_base_url + "/fhir",
            "lang": language(request),
        }
        response = RedirectResponse("/oauth/authorize?" + urlencode(params), status_code=303)
        self.set_cookie(response, token)
        return response

    async def finish_signin(self, request: Request) -> Response:
        lang = language(request)
        token = request.cookies.get(COOKIE)
        state = await run_in_threadpool(self.sessions.get, token)
        pending = (state or {}).get("pending")
        code = request.query_params.get("code")
        if (
            not token
            or not pending
            or not code
            or not secrets.compare_digest(str(pending["state"]).encode(),
                                          request.query_params.get("state", "").encode())
        ):
            return landing_redirect("signin_failed")
        server = self.state.oauth
        params = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri),
            ("client_id", CLIENT_ID),
            ("code_verifier", pending["verifier"]),
        ]

        def exchange() -> Principal | None:
            result = server.token(server.request("POST", "/oauth/token", {}, params))
            if result.status != 200 or not isinstance(result.body, dict):
                return None
            issuer = self.state.issuer
            principal: Principal = issuer.verify(result.body["access_token"])
            # the portal keeps the caller, not the token: revoke it at once
            issuer.revoke(principal.token_id or "", int(time.time()) + self.settings.access_token_ttl_seconds)
            return principal

        try:
            principal = await run_in_threadpool(exchange)
        except Exception:  # an expired or replayed code: start again
            log.info("portal sign-in: the code could not be exchanged")
            principal = None
        await run_in_threadpool(self.sessions.end, token)
        if principal is None or principal.kind not in (Kind.PATIENT, Kind.PRACTITIONER):
            return landing_redirect("signin_failed")
        now = time.time()
        fresh = await run_in_threadpool(
            self.sessions.create,
            {
                "claims": claims_of(principal) | {"jti": principal.token_id},
                "signed_in": now,
                "renewed": now,
                "emergency": {},
            },
        )
        response = RedirectResponse("/portail", status_code=303)
        self.set_cookie(response, fresh)
        response.set_cookie(
            LANG_COOKIE, lang, max_age=365 * 86400, path="/", samesite="lax", secure=self.secure
        )
        return response

    async def sign_out(self, visitor: Visitor) -> Response:
        await run_in_threadpool(self.sessions.end, visitor.token)
        response = landing_redirect("signed_out")
        response.delete_cookie(COOKIE, path="/")
        return response


def landing_redirect(message: str) -> RedirectResponse:
    return RedirectResponse(f"/?message={message}", status_code=303)


# -- rendering -------------------------------------------------------------------------------------


def render(
    request: Request, template: str, visitor: Visitor | None, status: int = 200, **context: Any
) -> HTMLResponse:
    lang = visitor.lang if visitor else language(request)
    anonymous = None if visitor else anonymous_token(request)
    flashes = []
    saved = None
    if visitor is not None and visitor.state.get("flash"):
        flashes = visitor.state.pop("flash")
        # shown once: the session forgets them once the page has left (off the event loop)
        saved = BackgroundTask(portal_of(request).sessions.save, visitor.token, dict(visitor.state))
    html = _env.get_template(template).render(
        lang=lang,
        t=text(lang),
        visitor=visitor,
        csrf=visitor.csrf if visitor else anonymous,
        path=request.url.path,
        flashes=flashes,
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"}, background=saved)
    if anonymous is not None and request.cookies.get(ANON_COOKIE) != anonymous:
        response.set_cookie(
            ANON_COOKIE, anonymous, path="/", httponly=True, samesite="lax", secure=portal_of(request).secure
        )
    return response


def anonymous_token(request: Request) -> str:
    """The CSRF token of a visitor not signed in (a double-submit cookie, for the sign-in and
    language forms)."""
    found = request.cookies.get(ANON_COOKIE, "")
    return found if re.fullmatch(r"[A-Za-z0-9_-]{43}", found) else secrets.token_urlsafe(32)


def form_token_ok(request: Request, visitor: Visitor | None, presented: object) -> bool:
    if not isinstance(presented, str) or not presented:
        return False
    if visitor is not None:
        return portal_of(request).sessions.check_csrf(visitor.token, presented)
    # as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500)
    return secrets.compare_digest(request.cookies.get(ANON_COOKIE, "").encode(), presented.encode())


def portal_of(request: Request) -> Portal:
    found: Portal = request.app.state.portal
    return found


Handler = Callable[[Request, Visitor], Awaitable[Response]]


def page(kind: Kind | None = None) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A page for signed-in visitors (of one kind when given): others go to the landing page.
    A POST must carry the session's CSRF token."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            p = portal_of(request)
            visitor = await p.visitor(request)
            if visitor is None:
                return landing_redirect("expired")
            if kind is not None and visitor.principal.kind != kind:
                return not_found(request, visitor)
            try:
                return await checked(request, visitor)
            except Exception:  # a bug, not the visitor's fault: a page that says so, without internals
                log.exception("portal page %s failed", request.url.path)
                return render(request, "error.html", visitor, 500, message=text(visitor.lang)("error_text"))

        async def checked(request: Request, visitor: Visitor) -> Response:
            p = portal_of(request)
            if request.method != "POST":
                return await handler(request, visitor)
            declared = request.headers.get("content-length", "")
            if not declared.isdigit() or int(declared) > MAX_PART_BYTES:
                return render(request, "error.html", visitor, 413, message=text(visitor.lang)("too_big"))
            # the form is parsed once (the handler's request.form() answers the same); its
            # uploaded files are closed when the handler is done
            async with request.form(max_part_size=MAX_PART_BYTES) as form:
                presented = form.get("csrf")
                if not isinstance(presented, str) or not p.sessions.check_csrf(visitor.token, presented):
                    return render(request, "error.html", visitor, 403, message=text(visitor.lang)("csrf"))
                return await handler(request, visitor)

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


def not_found(request: Request, visitor: Visitor | None) -> HTMLResponse:
    t = text(visitor.lang if visitor else language(request))
    return render(request, "error.html", visitor, 404, title=t("not_found"), message=t("not_found_text"))


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


def safe_next(value: str | None) -> str:
    """A local path to go back to (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/portail"
