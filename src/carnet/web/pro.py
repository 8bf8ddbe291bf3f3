"""The professional's side of the portal: find a patient, read what the rules allow, publish a
document, emergency access with a written reason.

Searches are posted (identity traits never travel in a URL). A record the professional may not
read is absent, as on the API; what the portal can say is why access may be withheld in general,
and offer emergency access, which the server grants or refuses with its reason.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from carnet.auth.principal import Kind, Principal
from carnet.identity import nir
from carnet.web import views
from carnet.web.patient import MAX_UPLOAD, content_response, document_page, outcome_text, search_documents
from carnet.web.portal import Visitor, form_of, page, portal_of, render, text

INS_SYSTEMS = tuple(f"urn:oid:{oid}" for oid in (nir.OID_INS_NIR, nir.OID_INS_NIR_TEST, nir.OID_INS_NIR_DEMO))
REGULATION_ROLE = "centre15"


async def as_for(request: Request, visitor: Visitor, pid: str) -> Principal:
    """The caller for ``pid``'s record: the emergency principal while an emergency access runs."""
    token = (visitor.state.get("emergency") or {}).get(pid)
    if token:
        try:
            found: Principal = await run_in_threadpool(portal_of(request).state.issuer.verify, token)
            if found.patient == pid:
                return found
        except Exception:  # expired or revoked: back to the ordinary rights
            visitor.state["emergency"].pop(pid, None)
    return visitor.principal


def _patient_row(p: dict[str, Any], lang: str) -> dict[str, Any]:
    from carnet.identity import fhir as idfhir

    ins = idfhir.read_patient_ins(p)
    return {
        "id": p["id"],
        "name": views.human_name(p),
        "birth": views.fmt_date(p.get("birthDate"), lang),
        "gender": p.get("gender", ""),
        "ins": ins.ins.matricule if ins.ins else "",
        "status": ins.status.value if ins.status else "",
    }


@page(Kind.PRACTITIONER)
async def find(request: Request, visitor: Visitor) -> Response:
    form = await form_of(request) if request.method == "POST" else {}
    results = None
    if request.method == "POST":
        query: list[tuple[str, str]] = [("_count", "20")]
        ins = form.get("ins", "").replace(" ", "")
        if ins:
            query.append(("identifier", ",".join(f"{s}|{ins}" for s in INS_SYSTEMS)))
        for field, param in (("family", "family"), ("given", "given"), ("birthdate", "birthdate")):
            if form.get(field):
                query.append((param, form[field]))
        if len(query) > 1:
            status, bundle = await portal_of(request).json(visitor.principal, "GET", "Patient", query)
            results = [_patient_row(p, visitor.lang) for p in views.matches(bundle)] if status == 200 else []
        else:
            results = []
    return render(request, "pro/find.html", visitor, form=form, results=results)


@page(Kind.PRACTITIONER)
async def record(request: Request, visitor: Visitor) -> Response:
    pid = request.path_params["pid"]
    who = await as_for(request, visitor, pid)
    status, patient = await portal_of(request).json(who, "GET", f"Patient/{pid}")
    if status != 200:
        return render(request, "pro/withheld.html", visitor, 404, pid=pid)
    documents = await search_documents(request, _as(visitor, who), pid, [], count=100)
    return render(
        request,
        "pro/record.html",
        visitor,
        patient=_patient_row(patient, visitor.lang),
        documents=documents,
        emergency=who.access_mode.value != "normal",
        pid=pid,
        reason=who.reason,
    )


def _as(visitor: Visitor, who: Principal) -> Visitor:
    """The visitor acting as ``who`` (their emergency principal on one record)."""
    return Visitor(visitor.token, visitor.state, who, visitor.lang, visitor.csrf)


@page(Kind.PRACTITIONER)
async def document(request: Request, visitor: Visitor) -> Response:
    pid = request.path_params["pid"]
    acting = _as(visitor, await as_for(request, visitor, pid))
    return await document_page(request, acting, request.path_params["doc"], "pro/document.html", pid=pid)


@page(Kind.PRACTITIONER)
async def content(request: Request, visitor: Visitor) -> Response:
    pid = request.path_params["pid"]
    return await content_response(
        request, _as(visitor, await as_for(request, visitor, pid)), request.path_params["doc"]
    )


@page(Kind.PRACTITIONER)
async def publish(request: Request, visitor: Visitor) -> Response:
    """A PDF and its metadata (type from the national list, date of care, visibility)."""
    pid = request.path_params["pid"]
    t = text(visitor.lang)
    types = views.document_types()
    if request.method == "GET":
        return render(request, "pro/publish.html", visitor, pid=pid, types=types, form={}, error=None)
    form = await request.form()
    fields = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
    upload = form.get("file")
    data = b"" if upload is None or isinstance(upload, str) else await upload.read(MAX_UPLOAD + 1)
    error = None
    if len(data) > MAX_UPLOAD:
        error = t("too_big")
    elif not data.startswith(b"%PDF-"):
        error = t("not_pdf")
    elif fields.get("type") not in dict(types):
        error = t("doc_type")
    if error is not None:
        return render(
            request, "pro/publish.html", visitor, 400, pid=pid, types=types, form=fields, error=error
        )
    title = fields.get("description") or dict(types)[fields["type"]]
    labels = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}
    ]
    if fields.get("visibility") in ("INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"):
        from carnet.policy.attributes import VISIBILITY_SYSTEM

        labels.append({"coding": [{"system": VISIBILITY_SYSTEM, "code": fields["visibility"]}]})
    body = views.pdf_document(pid, str(visitor.principal.fhir_user), fields["type"], title, data, labels,
                              fields.get("date") or views.today_iso())
    p = portal_of(request)
    status, answer = await p.json(visitor.principal, "POST", "DocumentReference", body=body)
    if status >= 300:
        return render(
            request,
            "pro/publish.html",
            visitor,
            400,
            pid=pid,
            types=types,
            form=fields,
            error=f"{t('refused_publish')} {outcome_text(answer, visitor.lang)}",
        )
    await p.flash(visitor, "published")
    return RedirectResponse(f"/portail/patients/{pid}", status_code=303)


@page(Kind.PRACTITIONER)
async def emergency(request: Request, visitor: Visitor) -> Response:
    """Emergency access (or, for a Centre 15 regulating doctor, regulation access), reason required."""
    t = text(visitor.lang)
    form = await form_of(request)
    reason = form.get("reason", "")
    pid = request.path_params.get("pid") or await _resolve_ins(request, form.get("ins", ""))
    regulation = REGULATION_ROLE in visitor.principal.roles and form.get("mode") == "regulation"
    if not reason:
        return render(
            request,
            "pro/withheld.html",
            visitor,
            400,
            pid=pid,
            error=t("reason_required"),
            ins=form.get("ins", ""),
        )
    p = portal_of(request)
    status, answer = (
        await p.json(
            visitor.principal,
            "POST",
            f"Patient/{pid}/{'$regulation-access' if regulation else '$break-glass'}",
            body={"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]},
        )
        if pid
        else (404, {})
    )
    if status != 200:
        # Asked by INS, a refusal gives no reason: the reason (opposed, blocked, closed...) would tell
        # that a record exists for that INS, which an unknown INS must not be distinguishable from.
        by_path = bool(request.path_params.get("pid"))
        message = outcome_text(answer, visitor.lang) if status == 403 else ""
        return render(
            request,
            "pro/withheld.html",
            visitor,
            403,
            pid=request.path_params.get("pid"),
            error=f"{t('emergency_refused')} {message}".strip() if by_path else t("emergency_refused_by_ins"),
            ins=form.get("ins", ""),
        )
    token = next(x["valueString"] for x in answer["parameter"] if x["name"] == "access_token")
    visitor.state.setdefault("emergency", {})[pid] = token
    visitor.state["emergency_at"] = time.time()
    await p.save(visitor)
    return RedirectResponse(f"/portail/patients/{pid}", status_code=303)


async def _resolve_ins(request: Request, ins: str) -> str | None:
    """The record of an INS, for an emergency access asked by INS (the professional may not be able
    to find it: that is why they ask). The server decides; an unknown INS is refused alike."""
    ins = ins.replace(" ", "")
    if not ins.isdigit() or len(ins) != 15:
        return None
    system = Principal.system("carnet-portail")
    status, bundle = await portal_of(request).json(
        system,
        "GET",
        "Patient",
        [("identifier", ",".join(f"{s}|{ins}" for s in INS_SYSTEMS)), ("_elements", "id")],
    )
    found = views.matches(bundle) if status == 200 else []
    return str(found[0]["id"]) if len(found) == 1 else None


@page(Kind.PRACTITIONER)
async def emergency_form(request: Request, visitor: Visitor) -> Response:
    return render(
        request, "pro/withheld.html", visitor, pid=request.path_params.get("pid"), error=None, ins=""
    )


@page(Kind.PRACTITIONER)
async def end_emergency(request: Request, visitor: Visitor) -> Response:
    pid = request.path_params["pid"]
    (visitor.state.get("emergency") or {}).pop(pid, None)
    await portal_of(request).save(visitor)
    return RedirectResponse(f"/portail/patients/{pid}", status_code=303)
