"""The sign-in page of the authorisation endpoint, and its pluggable sign-in methods.

``/oauth/authorize`` checks the client's request, opens a sign-in session (a cookie naming a row of
``signin_sessions``; nothing about the user travels in URLs) and sends the browser to
``/oauth/signin``, a small server-rendered page (French first, English with ``?lang=en``) listing
the sign-in methods in force. Each method is a :class:`SignInMethod` (a partial template for the
page and its own routes), registered in :mod:`carnet.api.signin_methods`; when it has established
who signed in it calls :func:`finish`, which sends the browser back to the client with an
authorisation code.

Methods: ``development`` (development mode only: pick a professional of the directory, a strong
sign-on), ``patient`` (username, password, then a one-time code), ``psc`` (Pro Santé Connect, an
external OpenID provider, when :mod:`carnet.auth.psc` is present and configured). A new method is a
:class:`SignInMethod` added in :func:`carnet.api.signin_methods.build_methods`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from carnet.audit import AuditRecord
from carnet.auth import accounts as accounts_mod
from carnet.auth import scopes as smart
from carnet.auth.accounts import AccountStore
from carnet.auth.principal import Kind, Principal
from carnet.auth.server import CarnetAuthorizationServer, OAuthResponse, SignedIn
from carnet.auth.sessions import SignInSessions
from carnet.auth.throttle import FailureThrottle
from carnet.config import Settings

log = logging.getLogger("carnet.auth")

COOKIE = "carnet_signin"
TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False
)

TEXT: dict[str, tuple[str, str]] = {
    "title": ("Connexion", "Sign in"),
    "app_asks": ("Vous vous connectez pour l'application", "You are signing in for the application"),
    "no_method": ("Aucun moyen de connexion n'est disponible.", "No sign-in method is available."),
    "cancel": ("Annuler", "Cancel"),
    "sign_in": ("Se connecter", "Sign in"),
    "next": ("Continuer", "Continue"),
    "username": ("Identifiant", "Username"),
    "password": ("Mot de passe", "Password"),
    "dev_hint": (
        "Fournisseur d'identité de développement : aucun contrôle, réservé au mode développement.",
        "Development identity provider: no check at all, development mode only.",
    ),
    "dev_pick": ("Professionnel de démonstration", "Demo professional"),
    "otp_title": ("Code à usage unique", "One-time code"),
    "otp_totp": (
        "Saisissez le code à 6 chiffres affiché par votre application d'authentification.",
        "Enter the 6-digit code shown by your authenticator application.",
    ),
    "otp_sent": (
        "Un code à 6 chiffres vient de vous être envoyé. Saisissez-le.",
        "A 6-digit code has just been sent to you. Enter it.",
    ),
    "otp_code": ("Code", "Code"),
    "psc_hint": ("Professionnels de santé : carte CPS ou e-CPS.", "Health professionals: CPS card or e-CPS."),
    "psc_button": ("Se connecter avec Pro Santé Connect", "Sign in with Pro Santé Connect"),
    "error_title": ("Connexion impossible", "Sign-in failed"),
    "error_back": ("Revenez à l'application et recommencez.", "Go back to the application and start again."),
    "wrong": ("Identifiant, mot de passe ou code incorrect.", "Wrong username, password or code."),
    "throttled": (
        "Trop d'échecs de connexion depuis votre réseau : réessayez dans quelques minutes.",
        "Too many failed sign-ins from your network: try again in a few minutes.",
    ),
    "locked": (
        "Trop d'échecs : connexion bloquée pour ce compte pendant quelques minutes.",
        "Too many failures: sign-in is blocked for this account for a few minutes.",
    ),
    "csrf": ("Formulaire expiré ou invalide, recommencez.", "Expired or invalid form, please try again."),
    "expired": (
        "Votre session de connexion a expiré ou n'existe pas.",
        "Your sign-in session expired or does not exist.",
    ),
    "code_expired": ("Le code a expiré : recommencez la connexion.", "The code expired: sign in again."),
    "unknown_pro": ("Professionnel inconnu de l'annuaire.", "Professional unknown to the directory."),
    "unknown_patient": ("Aucun dossier n'est associé à ce compte.", "No record is linked to this account."),
}

PERMISSION_WORDS = {
    "c": ("créer", "create"),
    "r": ("lire", "read"),
    "u": ("modifier", "update"),
    "d": ("supprimer", "delete"),
    "s": ("rechercher", "search"),
}
CONTEXT_WORDS = {
    "patient": ("votre dossier", "your record"),
    "user": ("ce que vous pouvez voir", "what you can see"),
    "system": ("tous les dossiers", "every record"),
}
OTHER_WORDS = {
    "openid": ("vous identifier", "identify you"),
    "fhirUser": ("savoir qui vous êtes", "know who you are"),
    "profile": ("votre nom", "your name"),
    "offline_access": ("rester connectée en votre absence", "stay connected while you are away"),
    "launch/patient": ("ouvrir votre dossier", "open your record"),
}


def t(lang: str) -> Callable[[str], str]:
    index = 1 if lang == "en" else 0
    return lambda key: TEXT[key][index]


def describe_scope(scope: str, lang: str) -> str:
    i = 1 if lang == "en" else 0
    clinical = smart.parse_clinical(scope)
    if clinical is None:
        return OTHER_WORDS.get(scope, (scope, scope))[i]
    what = (
        ("toutes les données" if i == 0 else "all data")
        if clinical.resource_type == "*"
        else clinical.resource_type
    )
    verbs = ", ".join(PERMISSION_WORDS[p][i] for p in clinical.permissions)
    return (
        f"{what} ({CONTEXT_WORDS[clinical.context][i]}) : {verbs}"
        if i == 0
        else f"{what} ({CONTEXT_WORDS[clinical.context][i]}): {verbs}"
    )


# -- the registry of sign-in methods ---------------------------------------------------------------


@dataclass
class SignInMethod:
    key: str
    labels: tuple[str, str]  # French, English
    template: str
    routes: list[BaseRoute] = field(default_factory=list)
    # extra template context for the page (runs in a thread: may read the database)
    context_of: Callable[[Request], dict[str, Any]] | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def label(self, lang: str) -> str:
        return self.labels[1 if lang == "en" else 0]


@dataclass
class SignIn:
    """What the sign-in handlers share (kept on ``app.state.signin``)."""

    settings: Settings
    server: CarnetAuthorizationServer
    sessions: SignInSessions
    accounts: AccountStore
    notifier: accounts_mod.Notifier
    router: Any  # the FHIR router, to find who signs in
    methods: dict[str, SignInMethod] = field(default_factory=dict)
    throttle: FailureThrottle | None = None  # failed sign-ins by network address

    def __post_init__(self) -> None:
        if self.throttle is None:
            self.throttle = FailureThrottle(self.settings.signin_address_max_failures,
                                            self.settings.signin_address_window_seconds)


def _lang(request: Request, state: dict[str, Any] | None = None) -> str:
    asked = request.query_params.get("lang")
    if asked in ("fr", "en"):
        return asked
    if state and state.get("lang") in ("fr", "en"):
        return str(state["lang"])
    accept = request.headers.get("accept-language", "")
    return "en" if accept.lower().startswith("en") else "fr"


def _signin(request: Request) -> SignIn:
    signin: SignIn = request.app.state.signin
    return signin


def render(request: Request, template: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(lang=lang, t=t(lang), **context)
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


def error_page(request: Request, lang: str, message: str, status: int = 400) -> HTMLResponse:
    return render(request, "signin/error.html", lang, status, error=message, methods=[], csrf=None)


def set_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=settings.signin_session_ttl_seconds,
        path="/oauth",
        httponly=True,
        samesite="lax",
        secure=settings.public_base_url.startswith("https://"),
    )


def to_response(result: OAuthResponse) -> Response:
    location = result.location
    if location is not None and 300 <= result.status < 400:
        return RedirectResponse(location, status_code=303 if result.status == 302 else result.status)
    from starlette.responses import JSONResponse

    headers = {k: v for k, v in result.headers if k.lower() != "content-type"}
    if isinstance(result.body, dict):
        return JSONResponse(result.body, status_code=result.status, headers=headers)
    return Response(result.body or "", status_code=result.status, headers=headers)


async def current(request: Request) -> tuple[str, dict[str, Any]] | None:
    token = request.cookies.get(COOKIE)
    state = await run_in_threadpool(_signin(request).sessions.get, token)
    return (token, state) if token and state is not None else None


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def checked_form(request: Request) -> tuple[str, dict[str, Any], dict[str, str]] | Response:
    """The session and the posted form, once the CSRF token checks out; else the error page."""
    found = await current(request)
    lang = _lang(request)
    if found is None:
        return error_page(request, lang, t(lang)("expired"))
    token, state = found
    form = await _form(request)
    if not _signin(request).sessions.check_csrf(token, form.get("csrf")):
        return error_page(request, _lang(request, state), t(_lang(request, state))("csrf"), 403)
    return token, state, form


async def page(
    request: Request, token: str, state: dict[str, Any], *, message: str | None = None, status: int = 200
) -> Response:
    signin = _signin(request)
    lang = _lang(request, state)
    methods = []
    for method in signin.methods.values():
        if method.context_of is not None:
            method = SignInMethod(
                method.key,
                method.labels,
                method.template,
                method.routes,
                method.context_of,
                await run_in_threadpool(method.context_of, request),
            )
        methods.append(method)
    asked = smart.split(dict(state["params"]).get("scope"))
    return render(
        request,
        "signin/page.html",
        lang,
        status,
        methods=methods,
        csrf=signin.sessions.csrf(token),
        client=state.get("client_name"),
        scopes=[describe_scope(s, lang) for s in asked],
        message=message,
    )


async def audit_signin(request: Request, who: Principal, outcome: int, patient: str | None,
                       message: str | None = None, amr: str = "") -> None:
    """Trace a sign-in, successful or not: the patient sees the attempts on their account."""
    audit = _signin(request).router.audit
    if audit is None:
        return
    entry = AuditRecord("login", outcome, patient=patient, message=message,
                        detail={"method": amr} if amr else {})
    await run_in_threadpool(audit.write, audit_rows(audit, who, entry))


def audit_rows(audit: Any, who: Principal, entry: AuditRecord) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    audit.record(None, who, entry, rows)
    return rows


async def finish(request: Request, token: str, state: dict[str, Any], signed_in: SignedIn | None) -> Response:
    """End the sign-in: back to the client with a code (or ``access_denied`` when ``signed_in`` is None)."""
    signin = _signin(request)
    server = signin.server

    def work() -> OAuthResponse:
        oauth_request = server.request("GET", "/oauth/authorize", {}, [tuple(p) for p in state["params"]])
        return server.authorize(oauth_request, signed_in)

    try:
        result = await run_in_threadpool(work)
    except Exception as exc:  # the client or its request went wrong meanwhile
        from authlib.oauth2.rfc6749 import OAuth2Error

        if not isinstance(exc, OAuth2Error):
            raise
        lang = _lang(request, state)
        return error_page(request, lang, f"{exc.error}: {exc.description or ''}")
    await run_in_threadpool(signin.sessions.end, token)
    response = to_response(result)
    response.delete_cookie(COOKIE, path="/oauth")
    if signed_in is not None:
        who = signed_in.principal
        await audit_signin(request, who, 0, who.resource_id if who.kind == Kind.PATIENT else None,
                           amr=" ".join(signed_in.amr))
        log.info(
            "signed in: %s %s for client %s",
            signed_in.principal.kind.value,
            signed_in.principal.fhir_user or signed_in.principal.subject,
            dict(state["params"]).get("client_id"),
        )
    return response


# -- the page and cancel ---------------------------------------------------------------------------


async def signin_page(request: Request) -> Response:
    found = await current(request)
    if found is None:
        return error_page(request, _lang(request), t(_lang(request))("expired"))
    token, state = found
    lang = request.query_params.get("lang")
    if lang in ("fr", "en") and state.get("lang") != lang:
        state["lang"] = lang
        await run_in_threadpool(_signin(request).sessions.save, token, state)
    if state.get("stage") == "code":
        return otp_page(request, token, state)
    return await page(request, token, state)


async def cancel(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, _ = checked
    return await finish(request, token, state, None)


def otp_page(
    request: Request, token: str, state: dict[str, Any], message: str | None = None, status: int = 200
) -> Response:
    signin = _signin(request)
    return render(
        request,
        "signin/otp.html",
        _lang(request, state),
        status,
        methods=[],
        csrf=signin.sessions.csrf(token),
        totp=state.get("totp", True),
        message=message,
        client=state.get("client_name"),
        scopes=[],
    )


async def stylesheet(request: Request) -> Response:
    return Response(
        (TEMPLATES / "signin" / "signin.css").read_bytes(),
        media_type="text/css",
        headers={"cache-control": "public, max-age=3600"},
    )


def build_methods(settings: Settings) -> dict[str, SignInMethod]:
    """The sign-in methods in force (:mod:`carnet.api.signin_methods`)."""
    from carnet.api.signin_methods import build_methods as build

    return build(settings)


def routes(methods: dict[str, SignInMethod]) -> list[BaseRoute]:
    out: list[BaseRoute] = [
        Route("/oauth/signin", signin_page, methods=["GET"]),
        Route("/oauth/signin/cancel", cancel, methods=["POST"]),
        Route("/oauth/signin.css", stylesheet, methods=["GET"]),
    ]
    for method in methods.values():
        out.extend(method.routes)
    return out


__all__ = ["COOKIE", "SignIn", "SignInMethod", "build_methods", "routes", "set_cookie", "to_response"]
