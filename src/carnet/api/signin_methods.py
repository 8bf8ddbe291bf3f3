"""The sign-in methods of the sign-in page (:mod:`carnet.api.signin`): the development identity
provider, patients (password, then a one-time code) and Pro Santé Connect. Each is a
:class:`SignInMethod` (a partial template and its routes); :func:`build_methods` picks those in force
(``CARNET_SIGNIN_METHODS``, the mode, whether Pro Santé Connect is configured)."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carnet.api.signin import (
    SignInMethod,
    _lang,
    _signin,
    audit_signin,
    checked_form,
    current,
    error_page,
    finish,
    otp_page,
    page,
    t,
)
from carnet.auth import accounts as accounts_mod
from carnet.auth import people
from carnet.auth.accounts import Outcome
from carnet.auth.principal import Kind, Principal
from carnet.auth.server import SignedIn
from carnet.config import Mode, Settings
from carnet.errors import CarnetError

PHYSICIAN = "10"  # TRE_G15 "Médecin"
REGULATION_ROLE = "centre15"  # carnet.policy.operations: the role of a Centre 15 regulating doctor
MAX_SESSION_FAILURES = 10  # wrong answers in one sign-in session before it ends
SENT_CODE_SECONDS = 300  # life of a code sent through the notifier


# -- development identity provider -----------------------------------------------------------------


def _development_context(request: Request) -> dict[str, Any]:
    router = _signin(request).router
    listed = []
    for practitioner in people.practitioners(router, limit=100):
        national_id = next(
            i["value"] for i in practitioner["identifier"] if i.get("system") == people.PS_IDNAT_SYSTEM
        )
        codes = people.professions_of(practitioner)
        entry = {
            "national_id": national_id,
            "display": people.display_of(practitioner),
            "profession": people.profession_label(codes[0]) if codes else "",
        }
        listed.append(entry)
        if codes and codes[0] == PHYSICIAN:  # a physician may also sign on as a Centre 15 regulating doctor
            listed.append(entry | {"national_id": f"{national_id}|{REGULATION_ROLE}",
                                   "profession": f"{entry['profession']} — régulation (Centre 15)"})
    return {"practitioners": listed}


async def development_signin(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, form = checked
    signin = _signin(request)
    if signin.settings.mode is not Mode.DEVELOPMENT:
        return error_page(request, _lang(request, state), "development mode only", 403)
    national_id, _, role = form.get("national_id", "").strip().partition("|")
    identity = people.ProfessionalIdentity(national_id, roles=frozenset({role} & {REGULATION_ROLE}))
    try:
        principal = await run_in_threadpool(people.practitioner_principal, signin.router, identity)
    except CarnetError:
        return await page(request, token, state, message=t(_lang(request, state))("unknown_pro"), status=400)
    return await finish(request, token, state, SignedIn(principal, int(time.time()), ("dev",)))


# -- patients: password, then a one-time code ------------------------------------------------------


def form_username(state: dict[str, Any]) -> str:
    """The account name a failed password was typed for (kept for the trace, never shown)."""
    return str(state.pop("attempted", "") or "")


async def _failed(
    request: Request, token: str, state: dict[str, Any], outcome: Outcome, on_code_page: bool
) -> Response:
    signin = _signin(request)
    lang = _lang(request, state)
    username = str(state.get("username") or form_username(state))
    account = await run_in_threadpool(signin.accounts.get, username) if username else None
    tried = username or "unknown"
    await audit_signin(request, Principal(Kind.ANONYMOUS, tried, display=tried),
                       8, account.patient_id if account is not None else None,
                       message="locked" if outcome is Outcome.LOCKED else "wrong password or code")
    assert signin.throttle is not None
    signin.throttle.failed(address(request))
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


def address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def throttled(request: Request, token: str, state: dict[str, Any]) -> Response | None:
    """The refusal of an address that failed too often (before any password or code is checked)."""
    signin = _signin(request)
    assert signin.throttle is not None
    if not signin.throttle.blocked(address(request)):
        return None
    lang = _lang(request, state)
    await audit_signin(request, Principal(Kind.ANONYMOUS, "unknown", display="unknown"), 8, None,
                       message="throttled: too many failures from this address")
    return await page(request, token, state, message=t(lang)("throttled"), status=429)


async def patient_password(request: Request) -> Response:
    checked = await checked_form(request)
    if isinstance(checked, Response):
        return checked
    token, state, form = checked
    refused = await throttled(request, token, state)
    if refused is not None:
        return refused
    signin = _signin(request)
    result = await run_in_threadpool(
        signin.accounts.check_password, form.get("username", ""), form.get("password", "")
    )
    if result.outcome is not Outcome.OK or result.account is None:
        state["attempted"] = form.get("username", "")[:128]
        return await _failed(request, token, state, result.outcome, on_code_page=False)
    account = result.account
    state.update(stage="code", username=account.username, totp=bool(account.totp_sealed))
    if not account.totp_sealed and account.channel:
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
    refused = await throttled(request, token, state)
    if refused is not None:
        return refused
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
        await audit_signin(request, Principal(Kind.ANONYMOUS, "psc", display="Pro Santé Connect"), 8, None,
                           message=exc.message)
        await run_in_threadpool(signin.sessions.save, token, state)
        return await page(request, token, state, message=exc.message, status=401)
    return await finish(request, token, state, SignedIn(principal, int(time.time()), ("psc",)))


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
