"""AuditEvent on the FHIR API: a patient's access history, an operator's view of everything.

Who reads what:

- a patient reads the events about their own record and the records of the minors they represent
  (``AuditEvent?patient=...``; another record's events are as absent as a record that does not
  exist);
- a professional reads only their own trail (the events where they are the agent and that
  succeeded: a refused read's event names the record of the hidden resource), never other
  people's traces;
- operators and system clients read everything.

An AuditEvent is served as the exact bytes of its leaf in the Merkle log, so that anyone holding
it can hash it; ``AuditEvent/{id}/$inclusion-proof`` adds its index, the proof and the signed
checkpoint it is checked against. AuditEvents are written by the server only: every write to the
type is refused.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import ColumnElement, false, select

from carnet.auth.principal import Kind, Principal
from carnet.db.tables import access_rights, audit_events, ledger_nodes
from carnet.errors import Conflict, Invalid, MethodNotAllowed, NotFound, TooLarge
from carnet.errors import bilingual as _t
from carnet.fhir.router import FHIR_JSON, FhirRequest, FhirResponse, FhirRouter, Operation
from carnet.fhir.store import Repository, new_id
from carnet.fhir.values import date_range, instant_text, now_us
from carnet.ledger.merkle import inclusion_proof, leaf_hash
from carnet.ledger.store import DbNodes, latest_checkpoint
from carnet.policy.dicah import readable_types
from carnet.policy.rights import Level, holds_today

PREFIXES = ("eq", "ge", "le", "gt", "lt")
SORTS = {"date": True, "-date": False, "": False}



def reader_condition(repo: Repository) -> ColumnElement[bool] | None:
    """The rows of ``audit_events`` the caller may read (None: all of them)."""
    who: Principal = repo.principal
    t = audit_events.c
    types = readable_types(who.scopes)
    if types is not None and "AuditEvent" not in types:  # a token granted other types only
        return false()
    if who.kind in (Kind.SYSTEM, Kind.OPERATOR):
        return None
    if who.kind == Kind.PATIENT and who.resource_id:
        represented = select(access_rights.c.patient_id).where(
            access_rights.c.actor == who.fhir_user, access_rights.c.level == int(Level.REPRESENTATIVE),
            holds_today(access_rights.c))
        return (t.patient_id == who.resource_id) | t.patient_id.in_(represented)
    if who.kind == Kind.PRACTITIONER and who.fhir_user:
        # their own trail, but not their refused attempts: the event of a read answered 404 names
        # the record the hidden resource belongs to, which the 404 did not tell them
        return (t.agent == who.fhir_user) & (t.outcome == 0)
    return false()


def _reference_id(value: str, rtype: str) -> str:
    value = value.strip()
    return value[len(rtype) + 1:] if value.startswith(rtype + "/") else value


def _date_condition(value: str) -> ColumnElement[bool]:
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    span = date_range(text)
    if span is None:
        raise Invalid(_t(f"date invalide : « {value} »", f"invalid date: '{value}'"), expression=["date"])
    low, high = span
    c = audit_events.c.recorded
    return {"eq": (c >= low) & (c <= high), "ge": c >= low, "gt": c > high, "le": c <= high,
            "lt": c < low}[prefix]


def _whole(value: str) -> bool:
    """ASCII digits (str.isdigit takes "²", which int() refuses) of a number below 2^63 (the databases')."""
    return value.isascii() and value.isdigit() and int(value) < 2**63


def _query(repo: Repository, query: list[tuple[str, str]], max_count: int,
           default_count: int) -> tuple[list[ColumnElement[bool]], int, int, bool]:
    t = audit_events.c
    where: list[ColumnElement[bool]] = []
    count, offset, ascending = default_count, 0, False
    for name, value in query:
        base = name.split(":", 1)[0]
        values = [v for v in value.split(",") if v.strip()]
        if base == "patient":
            where.append(t.patient_id.in_([_reference_id(v, "Patient") for v in values]))
        elif name == "agent:not":  # every agent but these (a patient's history without their own reads)
            where.append(t.agent.notin_([v.strip() for v in values]) | t.agent.is_(None))
        elif base == "agent":
            where.append(t.agent.in_([v.strip() for v in values]))
        elif base == "date":
            where.append(_date_condition(value))
        elif base == "action":
            where.append(t.action.in_([v.strip().upper() for v in values]))
        elif base == "outcome":
            if not all(v.strip() in ("0", "4", "8", "12") for v in values):
                raise Invalid(_t("outcome vaut 0, 4, 8 ou 12", "outcome is 0, 4, 8 or 12"),
                              expression=["outcome"])
            where.append(t.outcome.in_([int(v) for v in values]))
        elif base == "subtype":
            where.append(t.subtype.in_([v.split("|")[-1].strip() for v in values]))
        elif base == "_id":
            where.append(t.id.in_([v.strip() for v in values]))
        elif name == "_count":
            if not _whole(value):
                raise Invalid(_t("_count doit être un entier", "_count must be a whole number"),
                              expression=["_count"])
            count = min(int(value), max_count)
        elif name == "_offset":
            if not _whole(value):
                raise Invalid(_t("_offset doit être un entier", "_offset must be a whole number"),
                              expression=["_offset"])
            offset = int(value)
        elif name == "_sort":
            if value not in SORTS:
                raise Invalid(_t("_sort vaut date ou -date", "_sort is date or -date"), expression=["_sort"])
            ascending = SORTS[value]
        elif name in ("_format", "_pretty", "_total"):
            continue
        else:
            raise Invalid(_t(f"paramètre de recherche inconnu pour AuditEvent : {name}",
                             f"unknown search parameter for AuditEvent: {name}"), expression=[name])
    return where, count, offset, ascending


def _check_terms(query: list[tuple[str, str]], max_terms: int, max_ids: int) -> None:
    """As for every search (carnet.fhir.search.check_terms): at most ``max_terms`` criteria values,
    ``_id`` values apart (up to ``max_ids``); SQLite refuses an expression deeper than a thousand."""
    ids = terms = 0
    for name, value in query:
        if name in ("_count", "_offset", "_sort", "_format", "_pretty", "_total"):
            continue
        n = len([v for v in value.split(",") if v.strip()])
        if name == "_id":
            ids += n
        else:
            terms += n
    if terms > max_terms or ids > max_ids:
        raise TooLarge(_t(f"la recherche compte trop de critères : au plus {max_terms} (et {max_ids} _id)",
                          f"the search has too many criteria: at most {max_terms} "
                          f"(and {max_ids} _id values)"))


def search(router: FhirRouter, repo: Repository, req: FhirRequest) -> FhirResponse:
    _check_terms(req.query, router.settings.max_search_terms, router.settings.max_page_size)
    where, count, offset, ascending = _query(repo, req.query, router.settings.max_page_size,
                                             router.settings.default_page_size)
    allowed = reader_condition(repo)
    if allowed is not None:
        where.append(allowed)
    t = audit_events.c
    order = (t.recorded.asc(), t.seq.asc()) if ascending else (t.recorded.desc(), t.seq.desc())
    rows = repo.conn.execute(select(t.id, t.patient_id, t.content).where(*where).order_by(*order)
                             .limit(count + 1).offset(offset)).all()
    has_next = len(rows) > count
    rows = rows[:count]
    base = router.base
    kept = [(k, v) for k, v in req.query if k not in ("_count", "_offset")]

    def url(at: int) -> str:
        return f"{base}/AuditEvent?{urlencode([*kept, ('_count', str(count)), ('_offset', str(at))])}"

    links = [{"relation": "self", "url": url(offset)}]
    if has_next:
        links.append({"relation": "next", "url": url(offset + count)})
    if offset:
        links.append({"relation": "previous", "url": url(max(offset - count, 0))})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "id": new_id(), "meta": {"lastUpdated": instant_text(now_us())},
        "type": "searchset", "link": links,
        "entry": [{"fullUrl": f"{base}/AuditEvent/{r.id}", "resource": orjson.Fragment(bytes(r.content)),
                   "search": {"mode": "match"}} for r in rows]}
    if not has_next:
        bundle["total"] = offset + len(rows)
    repo._record("search", "AuditEvent", tuple(r.id for r in rows), query=urlencode(req.query),
                 patients=[r.patient_id for r in rows])
    return FhirResponse(200, bundle)


def _readable(repo: Repository, rid: str) -> Any:
    t = audit_events.c
    allowed = reader_condition(repo)
    row = repo.conn.execute(select(t.id, t.seq, t.patient_id, t.content).where(
        t.id == rid, *([allowed] if allowed is not None else []))).first()
    if row is None:
        raise NotFound(f"AuditEvent/{rid} is not known")
    return row


def read(router: FhirRouter, repo: Repository, rid: str) -> FhirResponse:
    row = _readable(repo, rid)
    repo._record("read", "AuditEvent", (rid,), patients=(row.patient_id,))
    return FhirResponse(200, bytes(row.content), media_type=FHIR_JSON)


def proof(router: FhirRouter, repo: Repository, rid: str) -> FhirResponse:
    row = _readable(repo, rid)
    checkpoint = latest_checkpoint(repo.conn)
    n = ledger_nodes.c
    index = repo.conn.execute(select(n.idx).where(n.height == 0, n.hash == leaf_hash(bytes(row.content)),
                                                  n.seq == row.seq)).scalar()
    if index is None or checkpoint is None or checkpoint.size <= index:
        raise Conflict(_t("Cette trace n'est pas encore dans un point de contrôle signé ; réessayez dans "
                          "quelques secondes",
                          "this entry is not in a signed checkpoint yet; try again in a few seconds"))
    hashes = inclusion_proof(DbNodes(repo.conn), index, checkpoint.size)
    repo._record("read", "AuditEvent", (rid,), query="$inclusion-proof", patients=(row.patient_id,))
    key = router.ledger_key  # type: ignore[attr-defined]
    b64 = base64.b64encode
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": [
        {"name": "index", "valueString": str(index)},
        {"name": "size", "valueString": str(checkpoint.size)},
        {"name": "leaf", "valueBase64Binary": b64(bytes(row.content)).decode()},
        *({"name": "hash", "valueBase64Binary": b64(h).decode()} for h in hashes),
        {"name": "checkpoint", "valueString": checkpoint.note},
        {"name": "verifierKey", "valueString": key}]})


def _refuse(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
    raise MethodNotAllowed(_t("Les traces sont écrites par le serveur seul ; elles ne se modifient pas",
                              "audit events are written by the server alone and never change"))


def _refuse_hook(repo: Repository, resource: dict[str, Any], previous: dict[str, Any] | None) -> None:
    _refuse(repo, FhirRequest("PUT", "AuditEvent"), None)


def register_audit_api(router: FhirRouter) -> None:
    router.add_interaction("GET", "AuditEvent", True, lambda repo, req, rid: read(router, repo, rid or ""))
    router.searchers["AuditEvent"] = lambda repo, req, rid: search(router, repo, req)
    for method, instance in (("POST", False), ("PUT", True), ("PATCH", True), ("DELETE", True)):
        router.add_interaction(method, "AuditEvent", instance, _refuse)
    router.add_hook("AuditEvent", _refuse_hook)  # conditional writes and Bundle entries too
    router.add_operation(Operation(
        "$inclusion-proof", "AuditEvent", True, lambda repo, req, rid: proof(router, repo, rid or ""),
        ("GET",), "The entry's place in the transparency log: its index, its exact bytes, the inclusion "
        "proof and the signed checkpoint it is checked against (carnet verify-proof checks it offline)",
        read_only=True))
