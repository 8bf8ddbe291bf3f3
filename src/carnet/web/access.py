"""Who can access my record (authorise, block, unblock, oppose emergency access) and my identity."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from carnet.auth.principal import Kind
from carnet.identity import fhir as idfhir
from carnet.policy.consents import actor_of, consent, is_emergency_opposition
from carnet.web import views
from carnet.web.patient import current_record, outcome_text, record_name
from carnet.web.portal import Visitor, form_of, not_found, page, portal_of, render, text

LEVELS = {
    "full": ("Accès complet (y compris documents masqués)", "Full access (hidden documents included)"),
    "read": ("Lecture", "Read"),
    "blocked": ("Bloqué", "Blocked"),
    "representative": ("Représentant légal", "Legal representative"),
}


async def _names(request: Request, visitor: Visitor, refs: set[str]) -> dict[str, str]:
    """Display names of Practitioner and Patient/RelatedPerson references (one search per type)."""
    out: dict[str, str] = {}
    by_type: dict[str, list[str]] = {}
    for ref in refs:
        rtype, _, rid = ref.partition("/")
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in by_type.items():
        status, bundle = await portal_of(request).json(
            visitor.principal, "GET", rtype, [("_id", ",".join(sorted(ids))), ("_count", str(len(ids)))]
        )
        for resource in views.matches(bundle) if status == 200 else []:
            out[f"{rtype}/{resource['id']}"] = views.human_name(resource)
    return out


async def _consents(request: Request, visitor: Visitor, record: str) -> list[dict[str, Any]]:
    status, bundle = await portal_of(request).json(
        visitor.principal,
        "GET",
        "Consent",
        [("patient", f"Patient/{record}"), ("status", "active"), ("_count", "200")],
    )
    return views.matches(bundle) if status == 200 else []


@page(Kind.PATIENT)
async def access(request: Request, visitor: Visitor) -> Response:
    record, listed = await current_record(request, visitor)
    p = portal_of(request)
    i = 1 if visitor.lang == "en" else 0
    status, summary = await p.json(visitor.principal, "GET", f"Patient/{record}/$access")
    if status != 200:
        return not_found(request, visitor)
    _, patient = await p.json(visitor.principal, "GET", f"Patient/{record}")
    consents = await _consents(request, visitor, record)
    status, teams = await p.json(
        visitor.principal, "GET", "CareTeam", [("subject", f"Patient/{record}"), ("status", "active")]
    )
    status_rp, related = await p.json(
        visitor.principal, "GET", "RelatedPerson", [("patient", f"Patient/{record}")]
    )
    actors = []
    for part in summary.get("parameter") or []:
        if part.get("name") != "actor":
            continue
        values = {p["name"]: p for p in part.get("part") or []}
        reasons = [
            views.pick(str(p.get("valueString")), visitor.lang)
            for p in part.get("part") or []
            if p["name"] == "reason"
        ]
        actors.append(
            {
                "ref": values["who"]["valueReference"]["reference"],
                "level": values["rights"]["valueCode"],
                "reasons": reasons,
            }
        )
    flags = {p["name"]: p.get("valueBoolean") for p in summary.get("parameter") or [] if "valueBoolean" in p}
    gps = [str(g.get("reference")) for g in patient.get("generalPractitioner") or [] if g.get("reference")]
    team = [
        str((m.get("member") or {}).get("reference"))
        for t in views.matches(teams)
        for m in t.get("participant") or []
        if (m.get("member") or {}).get("reference")
    ]
    decisions = []
    for c in consents:
        actor = actor_of(c)
        if actor and (c.get("provision") or {}).get("type") in ("permit", "deny"):
            decisions.append({"id": c["id"], "actor": actor, "kind": c["provision"]["type"]})
    refs = {a["ref"] for a in actors} | set(gps) | set(team) | {d["actor"] for d in decisions}
    names = await _names(request, visitor, {r for r in refs if r.startswith("Practitioner/")})
    representatives = [views.human_name(r) for r in views.matches(related)] if status_rp == 200 else []
    found = []
    query = (await form_of(request)).get("name", "") if request.method == "POST" else ""
    if query:
        status, bundle = await p.json(
            visitor.principal, "GET", "Practitioner", [("name", query), ("_count", "10")]
        )
        found = [
            {"ref": f"Practitioner/{r['id']}", "name": views.human_name(r)} for r in views.matches(bundle)
        ]
    return render(
        request,
        "patient/access.html",
        visitor,
        record_name=record_name(listed, record),
        actors=[
            a | {"name": names.get(a["ref"], a["ref"]), "label": LEVELS.get(a["level"], (a["level"],) * 2)[i]}
            for a in actors
        ],
        gps=[names.get(g, g) for g in gps],
        team=sorted({names.get(m, m) for m in team}),
        permits=[d | {"name": names.get(d["actor"], d["actor"])} for d in decisions if d["kind"] == "permit"],
        denies=[d | {"name": names.get(d["actor"], d["actor"])} for d in decisions if d["kind"] == "deny"],
        opposed=bool(flags.get("emergencyOpposed")),
        representatives=representatives,
        query=query,
        found=found,
        own=record == visitor.principal.resource_id,
    )


@page(Kind.PATIENT)
async def decide(request: Request, visitor: Visitor) -> Response:
    """authorise / block a professional, withdraw a decision, oppose or allow emergency access."""
    record, _ = await current_record(request, visitor)
    form = await form_of(request)
    action = request.path_params["action"]
    p = portal_of(request)
    result: tuple[int, dict[str, Any]] | None = None
    if action in ("autoriser", "bloquer"):
        actor = form.get("actor", "")
        if not actor.startswith("Practitioner/"):
            return not_found(request, visitor)
        result = await p.json(
            visitor.principal,
            "POST",
            "Consent",
            body=consent(record, "permit" if action == "autoriser" else "deny", actor),
        )
    elif action == "retirer":
        status, found = await p.json(visitor.principal, "GET", f"Consent/{form.get('consent', '')}")
        if status != 200 or found.get("patient", {}).get("reference") != f"Patient/{record}":
            return not_found(request, visitor)
        result = await _withdraw(request, visitor, found)
    elif action == "opposition":
        result = await p.json(
            visitor.principal, "POST", "Consent", body=consent(record, "deny", purpose="ETREAT")
        )
    elif action == "levee-opposition":
        for c in await _consents(request, visitor, record):
            if is_emergency_opposition(c):
                result = await _withdraw(request, visitor, c)
    else:
        return not_found(request, visitor)
    if result is not None and result[0] >= 300:
        await p.flash(visitor, "error", outcome_text(result[1], visitor.lang), "error")
    else:
        await p.flash(visitor, "done")
    return RedirectResponse("/portail/acces", status_code=303)


async def _withdraw(
    request: Request, visitor: Visitor, resource: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """A decision is withdrawn by making its Consent inactive (it stays in the record's history)."""
    changed = dict(resource)
    changed["status"] = "inactive"
    changed.pop("meta", None)
    return await portal_of(request).json(visitor.principal, "PUT", f"Consent/{resource['id']}", body=changed)


@page(Kind.PATIENT)
async def identity(request: Request, visitor: Visitor) -> Response:
    record, listed = await current_record(request, visitor)
    status, patient = await portal_of(request).json(visitor.principal, "GET", f"Patient/{record}")
    if status != 200:
        return not_found(request, visitor)
    ins = idfhir.read_patient_ins(patient)
    t = text(visitor.lang)
    traits = ins.traits
    sexes = {
        "male": ("Masculin", "Male"),
        "female": ("Féminin", "Female"),
        "unknown": ("Inconnu", "Unknown"),
        "other": ("Autre", "Other"),
    }
    i = 1 if visitor.lang == "en" else 0
    facts = []
    if ins.ins is not None:
        facts.append((t("matricule"), ins.ins.matricule))
    if traits is not None:
        facts += [
            (t("birth_name"), traits.birth_family_name),
            (t("given_names"), " ".join(traits.birth_given_names)),
            (t("birth_date"), views.fmt_date(traits.birth_date.isoformat(), visitor.lang)),
            (t("sex"), sexes.get(traits.sex, (traits.sex,) * 2)[i]),
        ]
        if traits.birthplace_code:
            facts.append((t("birthplace"), traits.birthplace_code))
    status_key = f"status_{ins.status.value}" if ins.status is not None else None
    return render(
        request,
        "patient/identity.html",
        visitor,
        record_name=record_name(listed, record),
        facts=facts,
        ins_status=ins.status.value if ins.status else None,
        explanation=t(status_key) if status_key else None,
        has_ins=ins.ins is not None,
    )
