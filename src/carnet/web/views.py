"""What the pages show of FHIR resources: names, dates, document rows, access-history rows."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from carnet.documents import valuesets
from carnet.policy.attributes import CODES, labels_of

PARIS = ZoneInfo("Europe/Paris")
LOINC = "http://loinc.org"
CDA_TYPES = ("application/hl7-v3+xml", "application/cda+xml", "text/xml", "application/xml",
             "application/hl7-cda+xml")


def human_name(resource: dict[str, Any] | None) -> str:
    """Given names then family name of a Patient or Practitioner (the usual name first)."""
    if not resource:
        return ""
    names = resource.get("name") or []
    chosen = next((n for n in names if n.get("use") == "usual"), None) or (names[0] if names else {})
    if chosen.get("text"):
        return str(chosen["text"])
    given = " ".join(g.title() for g in (chosen.get("given") or [])[:1])
    family = str(chosen.get("family") or "").upper()
    prefix = " ".join(chosen.get("prefix") or [])
    return " ".join(p for p in (prefix, given, family) if p)


def parse_instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time())
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(PARIS) if moment.tzinfo else moment


def fmt_date(value: str | None, lang: str, with_time: bool = False) -> str:
    moment = parse_instant(value)
    if moment is None:
        return value or ""
    day = moment.strftime("%d/%m/%Y") if lang == "fr" else moment.strftime("%Y-%m-%d")
    if not with_time or len(value or "") <= 10:
        return day
    return f"{day} {'à' if lang == 'fr' else 'at'} {moment.strftime('%H:%M')}"


def type_label(coding: dict[str, Any] | None) -> str:
    if not coding:
        return ""
    found = valuesets.document_type(str(coding.get("code", "")), coding.get("system") or LOINC)
    return (found.display if found and found.display else None) or str(
        coding.get("display") or coding.get("code")
    )


@lru_cache(maxsize=1)
def document_types() -> list[tuple[str, str]]:
    """("system|code", French label) of the document types a new document may have, by label."""
    out = {}
    for concept in valuesets.value_set("type").concepts.values():
        if isinstance(concept, valuesets.DocumentType) and not concept.retired:
            out[f"{concept.system.url}|{concept.code}"] = concept.display or concept.code
    return sorted(out.items(), key=lambda kv: kv[1].lower())


def patient_document_types() -> list[tuple[str, str]]:
    """The types of the documents a patient adds (class 90, "documents déposés par le patient")."""
    return [
        (key, label)
        for key, label in document_types()
        if (found := valuesets.class_for_type(key.split("|")[1], key.split("|")[0])) is not None
        and found.code == "90"
    ]


def _included(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle.get("entry") or []
        if e.get("search", {}).get("mode") == "include"
    }


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if e.get("search", {}).get("mode", "match") == "match"
    ]


def documents(bundle: dict[str, Any], lang: str) -> list[dict[str, Any]]:
    """One row per DocumentReference of a search result (authors from its ``_include``)."""
    people = _included(bundle)
    rows = []
    for doc in matches(bundle):
        if doc.get("resourceType") != "DocumentReference":
            continue
        rows.append(document_row(doc, people, lang))
    return rows


def document_row(doc: dict[str, Any], people: dict[str, dict[str, Any]], lang: str) -> dict[str, Any]:
    codings = (doc.get("type") or {}).get("coding") or []
    attachment = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    authors = []
    for ref in doc.get("author") or []:
        target = people.get(str(ref.get("reference")))
        authors.append(human_name(target) if target else str(ref.get("display") or ""))
    visibility = labels_of(doc)
    category = (doc.get("category") or [{}])[0].get("coding") or [{}]
    return {
        "id": doc["id"],
        "title": doc.get("description")
        or attachment.get("title")
        or type_label(codings[0] if codings else None),
        "type": type_label(codings[0] if codings else None),
        "type_code": codings[0].get("code") if codings else "",
        "date": fmt_date(doc.get("date"), lang),
        "authors": ", ".join(a for a in authors if a),
        "content_type": attachment.get("contentType") or "",
        "size": attachment.get("size"),
        "masked": bool(visibility & CODES["MASQUE_PS"]),
        "status": doc.get("status"),
        "category": str(category[0].get("code") or ""),
        "patient_document": str(category[0].get("code")) == "90" if category else False,
    }


ACTIONS = {
    "C": ("création", "creation"),
    "R": ("lecture", "read"),
    "U": ("modification", "update"),
    "D": ("suppression", "deletion"),
    "E": ("opération", "operation"),
}
SUBTYPES = {
    "read": ("lecture", "read"),
    "vread": ("lecture d'une version", "read of a version"),
    "search-type": ("recherche", "search"),
    "search": ("recherche", "search"),
    "history-instance": ("historique", "history"),
    "create": ("création", "creation"),
    "update": ("modification", "update"),
    "patch": ("modification", "update"),
    "delete": ("suppression", "deletion"),
    "operation": ("opération", "operation"),
    "login": ("connexion", "sign-in"),
    "110122": ("connexion", "sign-in"),
    "110123": ("déconnexion", "sign-out"),
}
OPERATIONS = {
    "$break-glass": ("accès en urgence", "emergency access"),
    "$regulation-access": ("accès en régulation (Centre 15)", "regulation access (Centre 15)"),
    "$access": ("consultation des droits d'accès", "review of access rights"),
    "$inclusion-proof": ("vérification d'une trace", "check of a trace"),
    "$ins-verify": ("vérification de l'INS (INSi)", "INS check (INSi)"),
    "$identity-document-check": ("contrôle d'une pièce d'identité", "identity document check"),
    "$identity-check": ("contrôle d'une pièce d'identité", "identity document check"),
    "$match": ("rapprochement d'identité", "identity matching"),
    "$merge": ("fusion d'identités", "identity merge"),
    "iti-65": ("publication de documents", "document publication"),
}


def _decoded(query: str) -> str:
    try:
        return base64.b64decode(query).decode("utf-8")
    except ValueError:
        return ""


SYSTEM = ("Carnet (traitement automatique)", "Carnet (automatic processing)")


def access_row(event: dict[str, Any], lang: str) -> dict[str, Any]:
    """One line of the access history, from a BALP-style AuditEvent."""
    from carnet.auth import people

    i = 1 if lang == "en" else 0
    agents = event.get("agent") or []
    person = next((a for a in agents if a.get("requestor")), agents[0] if agents else {})
    who = person.get("who") or {}
    roles = [
        people.profession_label(c["code"])
        for r in person.get("role") or []
        for c in r.get("coding") or []
        if c.get("code")
    ]
    codes = [str(c.get("code")) for c in event.get("subtype") or []]
    what = SUBTYPES.get(codes[0] if codes else "", ACTIONS.get(str(event.get("action")), ("", "")))[i]
    if len(codes) > 1:
        what = OPERATIONS.get("$" + codes[1].lstrip("$"), OPERATIONS.get(codes[1].lower(), (codes[1],) * 2))[
            i
        ]
    types = sorted(
        {
            str((e.get("what") or {}).get("reference", "")).split("/")[0]
            for e in event.get("entity") or []
            if (e.get("what") or {}).get("reference")
        }
        | {
            str((e.get("what") or {}).get("display"))
            for e in event.get("entity") or []
            if (e.get("what") or {}).get("display")
        }
        - {"", "Patient"}
    )
    mode, reason = "normal", ""
    for purpose in event.get("purposeOfEvent") or []:
        for coding in purpose.get("coding") or []:
            if coding.get("code") in ("emergency", "regulation"):
                mode, reason = str(coding["code"]), str(purpose.get("text") or "")
    if len(codes) > 1 and codes[1].lstrip("$") in ("break-glass", "regulation-access"):
        # the opening of an emergency access: its written reason is the event's query
        mode = "emergency" if codes[1].lstrip("$") == "break-glass" else "regulation"
        reason = next((_decoded(e["query"]) for e in event.get("entity") or [] if e.get("query")), reason)
    return {
        "id": event.get("id"),
        "when": fmt_date(event.get("recorded"), lang, with_time=True),
        "who": SYSTEM[i]
        if str((who.get("identifier") or {}).get("system", "")).endswith(":system")
        else str(who.get("display") or who.get("reference") or ""),
        "roles": ", ".join(roles),
        "what": what + (f" ({', '.join(types)})" if types else ""),
        "outcome": str(event.get("outcome", "0")),
        "mode": mode,
        "reason": reason,
        "message": str(event.get("outcomeDesc") or ""),
    }


def today_iso() -> str:
    return datetime.now(UTC).date().isoformat()


def now_instant() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def pick(message: str, lang: str) -> str:
    """One language of a bilingual server message (« français / English »)."""
    parts = message.split(" / ")
    if len(parts) == 2:
        return parts[1 if lang == "en" else 0]
    return message


def pdf_document(pid: str, author: str, type_key: str, title: str, data: bytes,
                 labels: list[dict[str, Any]] | None = None, care_date: str | None = None) -> dict[str, Any]:
    """The DocumentReference that publishes a PDF (ITI-105: the server builds the SubmissionSet),
    ``type_key`` being "system|code" from :func:`document_types`."""
    import hashlib
    import uuid

    system, code = type_key.split("|", 1)
    body: dict[str, Any] = {
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "date": now_instant(),
        "author": [{"reference": author}], "description": title[:200],
        "content": [{"attachment": {
            "contentType": "application/pdf", "language": "fr-FR", "title": title[:200],
            "data": base64.b64encode(data).decode("ascii"),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),  # noqa: S324 - FHIR's attachment.hash is SHA-1
            "size": len(data)}}],
    }
    if labels:
        body["securityLabel"] = labels
    if care_date:
        body["context"] = {"period": {"start": care_date}}
    return body
