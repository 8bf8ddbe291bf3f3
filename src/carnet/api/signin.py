"""The sign-in page of the authorisation endpoint, and its pluggable sign-in methods.

``/oauth/authorize`` checks the client's request, opens a sign-in session (a cookie naming a row of
``signin_sessions``; nothing about the user travels in URLs) and sends the browser to
``/oauth/signin``, a small server-rendered page (French first, English with ``?lang=en``) listing
the sign-in methods in force. Each method is a :class:`SignInMethod` in :data:`METHODS`: a partial
template for the page and its own routes; when it has established who signed in it calls
:func:`finish`, which sends the browser back to the client with an authorisation code.

Methods: ``development`` (development mode only: pick a professional of the directory, a strong
sign-on), ``patient`` (username, password, then a one-time code), ``psc`` (Pro Santé Connect, an
external OpenID provider, when :mod:`carnet.auth.psc` is present and configured).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from carnet.auth import accounts as accounts_mod
from carnet.auth import people
from carnet.auth import scopes as smart
from carnet.auth.accounts import AccountStore, Outcome
from carnet.auth.server import CarnetAuthorizationServer, OAuthResponse, SignedIn
from carnet.auth.sessions import SignInSessions
from carnet.config import Mode, Settings
from carnet.errors import CarnetError

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
MAX_SESSION_FAILURES = 10
SENT_CODE_SECONDS = 300


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


# -- development identity provider -----------------------------------------------------------------


def _development_context(request: Request) -> dict[str, Any]:
    router = _signin(request).router
    listed = []
    for practitioner in people.practitioners(router, limit=100):
        national_id = next(
            i["value"] for i in practitioner["identifier"] if i.get("system") == people.PS_IDNAT_SYSTEM
        )
        codes = people.professions_of(practitioner)
        listed.append(
            {
                "national_id": national_id,
                "display": people.display_of(practitioner),
                "profession": people.profession_label(codes[0]) if codes else "",
            }
        )
    return {"practitioners": listed}


async def development_signin(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, form = checked
    signin = _signin(request)
    if signin.settings.mode is not Mode.DEVELOPMENT:
        return error_page(request, _lang(request, state), "development mode only", 403)
    try:
        principal = await run_in_threadpool(
            people.practitioner_principal, signin.router, form.get("national_id", "").strip()
        )
    except CarnetError:
        return await page(request, token, state, message=t(_lang(request, state))("unknown_pro"), status=400)
    return await finish(request, token, state, SignedIn(principal, int(time.time()), ("dev",)))


# -- patients: password, then a one-time code ------------------------------------------------------


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


async def _failed(
    request: Request, token: str, state: dict[str, Any], outcome: Outcome, on_code_page: bool
) -> Response:
    signin = _signin(request)
    lang = _lang(request, state)
    state["failures"] = int(state.get("failures", 0)) + 1
    if state["failures"] >= MAX_SESSION_FAILURES:  # this browser guesses: end its sign-in
        await run_in_threadpool(signin.sessions.end, token)
        return error_page(request, lang, t(lang)("locked"), 429)
    message = t(lang)("locked" if outcome is Outcome.LOCKED else "wrong")
    status = 429 if outcome is Outcome.LOCKED else 401
    if outcome is Outcome.LOCKED:
        state.pop("stage", None)
        state.pop("username", None)
    await run_in_threadpool(signin.sessions.save, token, state)
    if on_code_page and outcome is not Outcome.LOCKED:
        return otp_page(request, token, state, message, status)
    return await page(request, token, state, message=message, status=status)


async def patient_password(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, form = checked
    signin = _signin(request)
    result = await run_in_threadpool(
        signin.accounts.check_password, form.get("username", ""), form.get("password", "")
    )
    if result.outcome is not Outcome.OK or result.account is None:
        return await _failed(request, token, state, result.outcome, on_code_page=False)
    account = result.account
    state.update(stage="code", username=account.username, totp=bool(account.totp_secret))
    if not account.totp_secret and account.channel:
        code = accounts_mod.new_code()
        state.update(code_hash=accounts_mod.code_hash(code), code_expires=time.time() + SENT_CODE_SECONDS)
        await run_in_threadpool(signin.notifier.send_code, account.channel, account.username, code)
    await run_in_threadpool(signin.sessions.save, token, state)
    return RedirectResponse("/oauth/signin", status_code=303)


async def patient_code(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, form = checked
    signin = _signin(request)
    lang = _lang(request, state)
    if state.get("stage") != "code" or not state.get("username"):
        return await page(request, token, state, message=t(lang)("expired"), status=400)
    code = form.get("code", "")
    if state.get("totp", True):
        result = await run_in_threadpool(signin.accounts.check_totp, state["username"], code)
    else:
        account = await run_in_threadpool(signin.accounts.get, state["username"])
        if account is None or float(state.get("code_expires", 0)) < time.time():
            state.pop("stage", None)
            await run_in_threadpool(signin.sessions.save, token, state)
            return await page(request, token, state, message=t(lang)("code_expired"), status=400)
        result = await run_in_threadpool(
            signin.accounts.check_sent_code, account, state.get("code_hash", ""), code
        )
    if result.outcome is not Outcome.OK or result.account is None:
        return await _failed(request, token, state, result.outcome, on_code_page=True)
    try:
        patient = await run_in_threadpool(people.patient_by_id, signin.router, result.account.patient_id)
    except CarnetError:
        return error_page(request, lang, t(lang)("unknown_patient"), 400)
    principal = people.patient_principal(signin.router, patient)
    return await finish(request, token, state, SignedIn(principal, int(time.time()), ("pwd", "otp")))


# -- Pro Santé Connect (carnet.auth.psc, when present and configured) ------------------------------


def psc_available(settings: Settings) -> bool:
    return (
        bool(getattr(settings, "psc_issuer", "")) and importlib.util.find_spec("carnet.auth.psc") is not None
    )


def _psc_client(request: Request) -> Any:
    client = getattr(request.app.state, "psc_client", None)
    if client is None:
        from carnet.auth.psc import PscClient

        client = request.app.state.psc_client = PscClient.from_settings(_signin(request).settings)
    return client


def _psc_redirect_uri(settings: Settings) -> str:
    return getattr(settings, "psc_redirect_uri", None) or settings.public_base_url + "/oauth/psc/callback"


async def psc_start(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, _ = checked
    from carnet.auth.psc import PendingSignIn

    signin = _signin(request)
    pending = PendingSignIn.new()
    client = _psc_client(request)
    try:
        url = await run_in_threadpool(
            lambda: client.authorization_url(
                redirect_uri=_psc_redirect_uri(signin.settings),
                state=pending.state,
                nonce=pending.nonce,
                code_verifier=pending.code_verifier,
            )
        )
    except CarnetError as exc:
        return await page(request, token, state, message=exc.message, status=502)
    state["psc"] = {"state": pending.state, "nonce": pending.nonce, "code_verifier": pending.code_verifier}
    await run_in_threadpool(signin.sessions.save, token, state)
    return RedirectResponse(url, status_code=303)


async def psc_callback(request: Request) -> Response:
    found = await current(request)
    lang = _lang(request)
    if found is None or "psc" not in found[1]:
        return error_page(request, lang, t(lang)("expired"))
    token, state = found
    signin = _signin(request)
    pending = state.pop("psc")
    client = _psc_client(request)

    def work() -> Any:
        code = client.callback_code(dict(request.query_params), state=pending["state"])
        identity = client.finish(
            code=code,
            redirect_uri=_psc_redirect_uri(signin.settings),
            code_verifier=pending["code_verifier"],
            nonce=pending["nonce"],
        )
        practitioner = people.practitioner_by_national_id(signin.router, identity.national_id)
        principal = identity.principal(f"Practitioner/{practitioner['id']}")
        if principal.profession is None:
            from dataclasses import replace

            principal = replace(principal, profession=people.profession_of(signin.router, practitioner))
        return principal

    try:
        principal = await run_in_threadpool(work)
    except CarnetError as exc:
        await run_in_threadpool(signin.sessions.save, token, state)
        return await page(request, token, state, message=exc.message, status=401)
    return await finish(request, token, state, SignedIn(principal, int(time.time()), ("psc",)))


# -- assembly --------------------------------------------------------------------------------------


def build_methods(settings: Settings) -> dict[str, SignInMethod]:
    wanted = {m.strip() for m in settings.signin_methods.split(",") if m.strip()}
    methods: dict[str, SignInMethod] = {}
    if settings.mode is Mode.DEVELOPMENT and (not wanted or "development" in wanted):
        methods["development"] = SignInMethod(
            "development",
            ("Professionnel (développement)", "Professional (development)"),
            "signin/development.html",
            [Route("/oauth/signin/development", development_signin, methods=["POST"])],
            _development_context,
        )
    if psc_available(settings) and (not wanted or "psc" in wanted):
        methods["psc"] = SignInMethod(
            "psc",
            ("Professionnel de santé", "Health professional"),
            "signin/psc.html",
            [
                Route("/oauth/signin/psc", psc_start, methods=["POST"]),
                Route("/oauth/psc/callback", psc_callback, methods=["GET"]),
            ],
        )
    if not wanted or "patient" in wanted:
        methods["patient"] = SignInMethod(
            "patient",
            ("Patient ou représentant légal", "Patient or legal representative"),
            "signin/patient.html",
            [
                Route("/oauth/signin/patient", patient_password, methods=["POST"]),
                Route("/oauth/signin/patient/code", patient_code, methods=["POST"]),
            ],
        )
    return methods


async def stylesheet(request: Request) -> Response:
    return Response(
        (TEMPLATES / "signin" / "signin.css").read_bytes(),
        media_type="text/css",
        headers={"cache-control": "public, max-age=3600"},
    )


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
