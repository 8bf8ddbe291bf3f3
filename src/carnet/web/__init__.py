"""The portal (SPEC C10): server-rendered pages for patients, their legal representatives and
professionals, in French (English available), on top of the same engine as the FHIR API.

Routes live under ``/portail`` (and ``/``, the landing page); see :mod:`carnet.web.portal` for the
sessions and the sign-in, :mod:`carnet.web.patient`, :mod:`carnet.web.access` and
:mod:`carnet.web.pro` for the pages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from carnet.web import access, patient, pro
from carnet.web.portal import (
    HERE,
    LANG_COOKIE,
    Visitor,
    form_token_ok,
    language,
    page,
    portal_of,
    render,
    safe_next,
    text,
)

_MESSAGES = ("expired", "signin_failed", "signed_out")


async def landing(request: Request) -> Response:
    visitor = await portal_of(request).visitor(request)
    if visitor is not None:
        return RedirectResponse("/portail", status_code=303)
    message = request.query_params.get("message")
    return render(request, "landing.html", None, message=message if message in _MESSAGES else None)


async def sign_in(request: Request) -> Response:
    form = await request.form()
    if not form_token_ok(request, None, form.get("csrf")):
        return render(request, "error.html", None, 403, message=text(language(request))("csrf"))
    return await portal_of(request).start_signin(request)


async def callback(request: Request) -> Response:
    return await portal_of(request).finish_signin(request)


@page()
async def sign_out(request: Request, visitor: Visitor) -> Response:
    return await portal_of(request).sign_out(visitor)


async def choose_language(request: Request) -> Response:
    """Switch French / English (a cookie of its own, not tied to the session)."""
    form = await request.form()
    visitor = await portal_of(request).visitor(request)
    if not form_token_ok(request, visitor, form.get("csrf")):
        return render(request, "error.html", visitor, 403, message=text(language(request))("csrf"))
    lang = form.get("lang")
    response = RedirectResponse(safe_next(str(form.get("next") or "/")), status_code=303)
    if lang in ("fr", "en"):
        response.set_cookie(
            LANG_COOKIE,
            str(lang),
            max_age=365 * 86400,
            path="/",
            samesite="lax",
            secure=portal_of(request).secure,
        )
    return response


@page()
async def home(request: Request, visitor: Visitor) -> Response:
    if visitor.is_patient:
        return await patient.home(request, visitor)
    return RedirectResponse("/portail/patients", status_code=303)


def routes() -> list[BaseRoute]:
    both = ["GET", "POST"]
    return [
        Route("/", landing),
        Route("/portail", home),
        Route("/portail/connexion", sign_in, methods=["POST"]),
        Route("/portail/retour", callback),
        Route("/portail/deconnexion", sign_out, methods=["POST"]),
        Route("/portail/langue", choose_language, methods=["POST"]),
        Route("/portail/dossier", patient.choose_record, methods=["POST"]),
        Route("/portail/documents", patient.documents, methods=both),
        Route("/portail/documents/ajouter", patient.upload, methods=both),
        Route("/portail/documents/{doc}", patient.document),
        Route("/portail/documents/{doc}/contenu", patient.content),
        Route("/portail/documents/{doc}/{action}", patient.mask, methods=["POST"]),
        Route("/portail/mesures", patient.measures),
        Route("/portail/historique", patient.history),
        Route("/portail/historique/{event}/verifier", patient.verify, methods=["POST"]),
        Route("/portail/acces", access.access, methods=both),
        Route("/portail/acces/{action}", access.decide, methods=["POST"]),
        Route("/portail/identite", access.identity),
        Route("/portail/patients", pro.find, methods=both),
        Route("/portail/urgence", pro.emergency, methods=["POST"]),
        Route("/portail/patients/{pid}", pro.record),
        Route("/portail/patients/{pid}/urgence", pro.emergency, methods=["POST"]),
        Route("/portail/patients/{pid}/urgence/fin", pro.end_emergency, methods=["POST"]),
        Route("/portail/patients/{pid}/publier", pro.publish, methods=both),
        Route("/portail/patients/{pid}/documents/{doc}", pro.document),
        Route("/portail/patients/{pid}/documents/{doc}/contenu", pro.content),
        Mount("/portail/static", StaticFiles(directory=HERE / "static"), name="portal-static"),
    ]


__all__ = ["routes"]
