"""The patient's side of the portal (and legal representatives, who switch to a child's record).

Every page asks the FHIR engine as the signed-in patient: what the API hides (documents invisible
to the patient or to representatives, records they may not read) is absent from the pages too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from carnet.auth.principal import Kind
from carnet.ledger.note import NoteVerifier
from carnet.ledger.verify import entry_proof_from_parameters, verify_entry
from carnet.policy.attributes import VISIBILITY_SYSTEM
from carnet.web import views
from carnet.web.portal import Visitor, form_of, not_found, page, portal_of, render, text

PAGE = 25
RECORDS_SECONDS = 60
MAX_UPLOAD = 10 * 1024 * 1024


async def records(request: Request, visitor: Visitor) -> list[dict[str, Any]]:
    """The records a patient may open: their own, then those of the minors they represent.

    Kept a minute in the session: it only chooses what to ask for; the engine decides on every
    page whether the visitor may still read the record."""
    cached = visitor.state.get("records")
    if cached and time.time() - float(cached.get("at", 0)) < RECORDS_SECONDS:
        return list(cached["list"])
    status, bundle = await portal_of(request).json(
        visitor.principal, "GET", "Patient", [("_count", "20"), ("_elements", "name,birthDate")]
    )
    own = visitor.principal.resource_id
    out = (
        [{"id": p["id"], "name": views.human_name(p), "own": p["id"] == own} for p in views.matches(bundle)]
        if status == 200
        else []
    )
    listed = sorted(out, key=lambda r: (not r["own"], r["name"]))
    if status == 200:
        visitor.state["records"] = {"at": time.time(), "list": listed}
        await portal_of(request).save(visitor)
    return listed


async def current_record(request: Request, visitor: Visitor) -> tuple[str, list[dict[str, Any]]]:
    listed = await records(request, visitor)
    record = visitor.record or ""
    if record not in {r["id"] for r in listed}:  # no longer represented: back to their own
        record = visitor.principal.resource_id or ""
        visitor.state.pop("record", None)
        await portal_of(request).save(visitor)
    return record, listed


def record_name(listed: list[dict[str, Any]], record: str) -> str:
    return next((r["name"] for r in listed if r["id"] == record), "")


async def search_documents(
    request: Request, visitor: Visitor, record: str, query: list[tuple[str, str]], count: int = PAGE
) -> list[dict[str, Any]]:
    return (await documents_of(request, visitor, record, query, count))[0]


async def documents_of(
    request: Request, visitor: Visitor, record: str, query: list[tuple[str, str]], count: int, offset: int = 0
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the record's current documents, newest first, and whether older ones follow."""
    params = [
        ("patient", f"Patient/{record}"),
        ("status", "current"),
        ("_sort", "-date"),
        ("_include", "DocumentReference:author"),
        ("_count", str(count)),
        ("_offset", str(offset)),
        *query,
    ]
    status, bundle = await portal_of(request).json(visitor.principal, "GET", "DocumentReference", params)
    if status != 200:
        return [], False
    more = any(link.get("relation") == "next" for link in bundle.get("link") or [])
    return views.documents(bundle, visitor.lang), more


def _offset(value: str | None) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0


async def accesses(
    request: Request, visitor: Visitor, record: str, count: int, offset: int = 0, mine: bool = False
) -> tuple[list[dict[str, Any]], bool]:
    """The record's access history, newest first; without the visitor's own reads unless ``mine``."""
    query = [("patient", record), ("_sort", "-date"), ("_count", str(count)), ("_offset", str(offset))]
    if not mine and visitor.principal.fhir_user:
        query.append(("agent:not", visitor.principal.fhir_user))
    status, bundle = await portal_of(request).json(visitor.principal, "GET", "AuditEvent", query)
    if status != 200:
        return [], False
    rows = [views.access_row(e, visitor.lang) for e in views.matches(bundle)]
    more = any(link.get("relation") == "next" for link in bundle.get("link") or [])
    return rows, more


@page(Kind.PATIENT)
async def choose_record(request: Request, visitor: Visitor) -> Response:
    wanted = (await form_of(request)).get("record", "")
    if wanted in {r["id"] for r in await records(request, visitor)}:
        visitor.state["record"] = wanted
        await portal_of(request).save(visitor)
    return RedirectResponse("/portail", status_code=303)


async def home(request: Request, visitor: Visitor) -> Response:
    record, listed = await current_record(request, visitor)
    documents = await search_documents(request, visitor, record, [], count=5)
    recent, _ = await accesses(request, visitor, record, 5)
    return render(
        request,
        "patient/home.html",
        visitor,
        records=listed,
        record=record,
        record_name=record_name(listed, record),
        documents=documents,
        accesses=recent,
    )


# -- documents -------------------------------------------------------------------------------------


def _filters(form: dict[str, str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    query: list[tuple[str, str]] = []
    kept = {k: form.get(k, "") for k in ("type", "from", "to", "author")}
    if kept["type"] and "|" in kept["type"]:
        query.append(("type", kept["type"]))
    if kept["from"]:
        query.append(("date", f"ge{kept['from']}"))
    if kept["to"]:
        query.append(("date", f"le{kept['to']}"))
    if kept["author"]:
        query.append(("author:Practitioner.name", kept["author"]))
    return query, kept


@page(Kind.PATIENT)
async def documents(request: Request, visitor: Visitor) -> Response:
    """The record's documents; the filters are posted, so nothing about them lands in a URL."""
    record, listed = await current_record(request, visitor)
    form = await form_of(request) if request.method == "POST" else {}
    query, kept = _filters(form)
    offset = _offset(form.get("depuis"))
    found, more = await documents_of(request, visitor, record, query, PAGE, offset)
    return render(
        request,
        "patient/documents.html",
        visitor,
        documents=found,
        offset=offset,
        more=more,
        page=PAGE,
        filters=kept,
        types=views.document_types(),
        record_name=record_name(listed, record),
        own=record == visitor.principal.resource_id,
    )


async def read_document(request: Request, visitor: Visitor, doc_id: str) -> dict[str, Any] | None:
    status, bundle = await portal_of(request).json(
        visitor.principal,
        "GET",
        "DocumentReference",
        [("_id", doc_id), ("_include", "DocumentReference:author")],
    )
    if status != 200:
        return None
    found = [r for r in views.matches(bundle) if r.get("id") == doc_id]
    if not found:
        return None
    people = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle.get("entry") or []
        if e.get("search", {}).get("mode") == "include"
    }
    return {"resource": found[0], "row": views.document_row(found[0], people, visitor.lang)}


async def document_page(
    request: Request, visitor: Visitor, doc_id: str, template: str, **extra: Any
) -> Response:
    found = await read_document(request, visitor, doc_id)
    if found is None:
        return not_found(request, visitor)
    row = found["row"]
    rendered = None
    if row["content_type"] in views.CDA_TYPES:
        content = await document_bytes(request, visitor, found["resource"])
        if content is not None:
            from carnet.documents import cda_html
            from carnet.errors import CarnetError

            try:
                rendered = cda_html.render(content[0], visitor.lang)
            except CarnetError:
                rendered = None
    return render(request, template, visitor, doc=row, cda=rendered, **extra)


@page(Kind.PATIENT)
async def document(request: Request, visitor: Visitor) -> Response:
    record, _ = await current_record(request, visitor)
    return await document_page(
        request,
        visitor,
        request.path_params["doc"],
        "patient/document.html",
        own=record == visitor.principal.resource_id,
    )


async def document_bytes(
    request: Request, visitor: Visitor, resource: dict[str, Any]
) -> tuple[bytes, str] | None:
    """A document's content (read whole: for the CDA shown in the page)."""
    found = await document_stream(request, visitor, resource)
    if found is None:
        return None
    chunks, media_type = found
    return b"".join([chunk async for chunk in iterate_in_threadpool(chunks)]), media_type


async def document_stream(
    request: Request, visitor: Visitor, resource: dict[str, Any]
) -> tuple[Iterator[bytes], str] | None:
    """A document's content as the engine streams it (decrypted and verified chunk by chunk)."""
    attachment = ((resource.get("content") or [{}])[0]).get("attachment") or {}
    url = str(attachment.get("url") or "")
    if "Binary/" not in url:
        return None
    binary = url.rsplit("Binary/", 1)[1].split("?")[0]
    resp = await portal_of(request).fhir(
        visitor.principal, "GET", f"Binary/{binary}", headers={"accept": "*/*"}
    )
    if resp.status != 200:
        return None
    chunks = resp.stream if resp.stream is not None else iter([resp.json_bytes()])
    return chunks, resp.media_type or attachment.get("contentType") or "application/octet-stream"


async def content_response(request: Request, visitor: Visitor, doc_id: str) -> Response:
    """A document's exact bytes: a PDF opens in the browser, everything else is downloaded."""
    found = await read_document(request, visitor, doc_id)
    if found is None:
        return not_found(request, visitor)
    content = await document_stream(request, visitor, found["resource"])
    if content is None:
        return not_found(request, visitor)
    chunks, media_type = content
    inline = media_type == "application/pdf" and "telecharger" not in request.query_params
    extension = {"application/pdf": "pdf"}.get(media_type, "xml" if media_type in views.CDA_TYPES else "bin")
    disposition = f'{"inline" if inline else "attachment"}; filename="document-{doc_id[:8]}.{extension}"'
    return StreamingResponse(
        chunks,
        headers={
            "content-type": media_type,
            "content-disposition": disposition,
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


@page(Kind.PATIENT)
async def content(request: Request, visitor: Visitor) -> Response:
    return await content_response(request, visitor, request.path_params["doc"])


def _relabel(resource: dict[str, Any], masked: bool) -> list[dict[str, Any]]:
    """The JSON Patch that sets or lifts MASQUE_PS among a document's security labels."""
    labels = [
        label
        for label in resource.get("securityLabel") or []
        if not any(c.get("code") == "MASQUE_PS" for c in label.get("coding") or [])
    ]
    if masked:
        labels.append(
            {
                "coding": [
                    {
                        "system": VISIBILITY_SYSTEM,
                        "code": "MASQUE_PS",
                        "display": "Masqué aux professionnels de santé",
                    }
                ]
            }
        )
    if not labels:  # FHIR has no empty arrays
        return [{"op": "remove", "path": "/securityLabel"}]
    return [{"op": "add", "path": "/securityLabel", "value": labels}]


@page(Kind.PATIENT)
async def mask(request: Request, visitor: Visitor) -> Response:
    """Hide a document from professionals (``masquer``) or stop hiding it (``demasquer``)."""
    doc_id, action = request.path_params["doc"], request.path_params["action"]
    if action not in ("masquer", "demasquer"):
        return not_found(request, visitor)
    found = await read_document(request, visitor, doc_id)
    if found is None:
        return not_found(request, visitor)
    p = portal_of(request)
    status, answer = await p.json(
        visitor.principal,
        "PATCH",
        f"DocumentReference/{doc_id}",
        body=_relabel(found["resource"], action == "masquer"),
    )
    if status >= 300:
        await p.flash(visitor, "error", outcome_text(answer, visitor.lang), "error")
        return RedirectResponse(f"/portail/documents/{doc_id}", status_code=303)
    await p.flash(visitor, "masked_done" if action == "masquer" else "unmasked_done")
    return RedirectResponse(f"/portail/documents/{answer.get('id') or doc_id}", status_code=303)


def outcome_text(answer: dict[str, Any], lang: str = "fr") -> str:
    """What an OperationOutcome says, in the visitor's language."""
    issues = answer.get("issue") or []
    return " ".join(views.pick(str(i.get("diagnostics") or ""), lang) for i in issues)[:400]


@page(Kind.PATIENT)
async def upload(request: Request, visitor: Visitor) -> Response:
    """The patient adds one of their own documents (a PDF, class 90) to their record."""
    t = text(visitor.lang)
    record, _ = await current_record(request, visitor)
    types = views.patient_document_types()
    if request.method == "GET":
        return render(request, "patient/upload.html", visitor, types=types, error=None, form={})
    form = await request.form()
    fields = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
    upload_file = form.get("file")
    error = None
    data = b""
    if upload_file is None or isinstance(upload_file, str):
        error = t("not_pdf")
    else:
        data = await upload_file.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            error = t("too_big")
        elif not data.startswith(b"%PDF-"):
            error = t("not_pdf")
    kind = fields.get("type", "")
    if error is None and kind not in dict(types):
        error = t("doc_type")
    if error is not None:
        return render(request, "patient/upload.html", visitor, 400, types=types, error=error, form=fields)
    title = fields.get("description") or dict(types)[kind]
    body = views.pdf_document(record, f"Patient/{visitor.principal.resource_id}", kind, title, data)
    p = portal_of(request)
    status, answer = await p.json(visitor.principal, "POST", "DocumentReference", body=body)
    if status >= 300:
        return render(
            request,
            "patient/upload.html",
            visitor,
            400,
            types=types,
            form=fields,
            error=outcome_text(answer, visitor.lang) or t("error"),
        )
    await p.flash(visitor, "uploaded")
    return RedirectResponse(f"/portail/documents/{answer.get('id')}", status_code=303)


# -- access history ------------------------------------------------------------------------------


@page(Kind.PATIENT)
async def history(request: Request, visitor: Visitor) -> Response:
    record, listed = await current_record(request, visitor)
    offset = _offset(request.query_params.get("depuis"))
    mine = request.query_params.get("miennes") == "1"
    rows, more = await accesses(request, visitor, record, PAGE, offset, mine)
    return render(
        request,
        "patient/history.html",
        visitor,
        rows=rows,
        more=more,
        offset=offset,
        page=PAGE,
        record_name=record_name(listed, record),
        mine=mine,
    )


@page(Kind.PATIENT)
async def verify(request: Request, visitor: Visitor) -> Response:
    """Check one entry's inclusion proof against the signed checkpoint, with the published key."""
    event_id = request.path_params["event"]
    p = portal_of(request)
    status, event = await p.json(visitor.principal, "GET", f"AuditEvent/{event_id}")
    if status != 200:
        return not_found(request, visitor)
    status, params = await p.json(visitor.principal, "GET", f"AuditEvent/{event_id}/$inclusion-proof")
    result: dict[str, Any] = {"row": views.access_row(event, visitor.lang)}
    if status == 409:
        result.update(ok=None, message=text(visitor.lang)("verify_later"))
    elif status != 200:
        result.update(ok=False, message=outcome_text(params, visitor.lang))
    else:
        try:
            proof = entry_proof_from_parameters(params)
            published = NoteVerifier.from_key(p.state.fhir.ledger_key)
            result.update(
                ok=True,
                message=verify_entry(proof, published),
                proof=proof,
                key=p.state.fhir.ledger_key,
                leaf_matches=_same_event(proof.leaf, event),
            )
            if not result["leaf_matches"]:
                result.update(ok=False, message="the proven entry is not the event shown")
        except ValueError as exc:
            result.update(ok=False, message=str(exc))
    return render(request, "patient/verify.html", visitor, checked=result, event_id=event_id)


def _same_event(leaf: bytes, event: dict[str, Any]) -> bool:
    from carnet.fhir import jsonio

    try:
        return bool(jsonio.loads(leaf) == event)
    except ValueError:
        return False


__all__ = ["home"]


@page(Kind.PATIENT)
async def measures(request: Request, visitor: Visitor) -> Response:
    """The medical profile's measurements (weight, height, heart rate, blood pressure…) as charts."""
    from carnet.web import charts

    record, listed = await current_record(request, visitor)
    status, bundle = await portal_of(request).json(
        visitor.principal,
        "GET",
        "Observation",
        [("patient", f"Patient/{record}"), ("_sort", "date"), ("_count", "1000")],
    )
    found = charts.series_of(views.matches(bundle), visitor.lang) if status == 200 else []
    shown = [
        {
            "series": s,
            "svg": charts.svg(s, visitor.lang),
            "summary": charts.describe(s, visitor.lang),
            "rows": [
                (views.fmt_date(iso, visitor.lang, with_time=True), charts.number(v))
                for _, v, iso in reversed(s.points)
            ],
        }
        for s in found
    ]
    return render(
        request, "patient/measures.html", visitor, charts=shown, record_name=record_name(listed, record)
    )
