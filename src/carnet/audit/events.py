"""AuditEvents in the IHE Basic Audit Log Patterns (BALP) style, and their canonical bytes.

One :class:`~carnet.audit.AuditRecord` (what a service did) becomes one AuditEvent per patient
concerned: a professional's search that returns the documents of three records is three events,
so that each patient's history holds what touched their record and nothing about anyone else's
(BALP's rule for queries across patients). The event's canonical JSON (sorted keys, no spaces,
UTF-8) is the exact leaf of the Merkle log: the same bytes are stored, served and hashed.
"""

from __future__ import annotations

import base64
import os
import time
from functools import lru_cache
from typing import Any

import orjson

from carnet.audit import AuditRecord
from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.fhir.values import instant_text

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"  # national id of health professionals (RPPS / ADELI, TRE_G08)
PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
ACCESS_MODE = "urn:carnet:access-mode"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

ACTIONS = {"create": "C", "read": "R", "vread": "R", "history": "R", "search": "E", "update": "U",
           "patch": "U", "delete": "D", "login": "E", "logout": "E"}
RESTFUL_CODES = {"read", "vread", "update", "patch", "delete", "history", "create", "search",
                 "batch", "transaction", "operation"}
PROFILES = {"create": "IHE.BasicAudit.Create", "read": "IHE.BasicAudit.Read",
            "vread": "IHE.BasicAudit.Read", "update": "IHE.BasicAudit.Update",
            "patch": "IHE.BasicAudit.Update", "delete": "IHE.BasicAudit.Delete",
            "search": "IHE.BasicAudit.Query", "login": "IHE.BasicAudit.SAMLaccessTokenUse.Minimal"}
# Emergency (break-glass) and Centre 15 regulation: the purpose of use shown in the history.
PURPOSE = {AccessMode.EMERGENCY: ("ETREAT", "Emergency Treatment"),
           AccessMode.REGULATION: ("ETREAT", "Emergency Treatment"),
           AccessMode.NORMAL: ("TREAT", "Treatment")}
ENTRY_MAX = 100  # resources named per event: a page of search results, not a whole export


SOURCE = {"observer": {"display": "Carnet"},
          "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                    "display": "Application Server"}]}


def event_id() -> str:
    """A UUID in the version 7 layout like :func:`carnet.fhir.store.new_id` (ids made one after
    another sort together, so the unique index grows at its end), spelled out directly: an
    AuditEvent is made on every request."""
    ms = f"{time.time_ns() // 1_000_000 & 0xFFFFFFFFFFFF:012x}"
    r = os.urandom(10).hex()
    return f"{ms[:8]}-{ms[8:]}-7{r[:3]}-{'89ab'[int(r[3], 16) & 3]}{r[4:7]}-{r[7:19]}"


_second: tuple[int, str] = (-1, "")  # the last second formatted, replaced whole (threads share it)


def _instant(us: int) -> str:
    """:func:`carnet.fhir.values.instant_text`, with the seconds part formatted once per second."""
    global _second
    sec, frac = divmod(us, 1_000_000)
    last = _second
    if last[0] != sec:
        last = _second = (sec, instant_text(sec * 1_000_000)[:-5])  # "YYYY-MM-DDTHH:MM:SS"
    return f"{last[1]}.{frac // 1000:03d}Z"


def action_of(interaction: str) -> str:
    return ACTIONS.get(interaction, "E")


def agent_of(principal: Principal) -> str:
    """The short name of who acted, stored beside the event for the patient's history and the
    professional's own trail: the FHIR resource they are, else kind:subject."""
    return principal.fhir_user or f"{principal.kind.value}:{principal.subject}"


def canonical(event: dict[str, Any]) -> bytes:
    """The leaf bytes: JSON with sorted keys and no insignificant whitespace."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


@lru_cache(maxsize=4096)
def _agent(principal: Principal) -> dict[str, Any]:
    """The agent of a caller's events: the same for each of their requests (cached; never mutated)."""
    who: dict[str, Any] = {"display": principal.display or principal.subject}
    if principal.fhir_user:
        who["reference"] = principal.fhir_user
    if principal.kind == Kind.PRACTITIONER:
        who["identifier"] = {"system": RPPS, "value": principal.subject}
    else:
        who["identifier"] = {"system": f"urn:carnet:{principal.kind.value}", "value": principal.subject}
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP" if principal.kind == Kind.PATIENT
                             else "AUT", "display": "information recipient"
                             if principal.kind == Kind.PATIENT else "author"}]},
        "who": who, "requestor": True}
    if principal.profession:
        agent["role"] = [{"coding": [{"system": PROFESSION, "code": principal.profession}]}]
    mode_code, mode_display = PURPOSE[principal.access_mode]
    if principal.kind == Kind.PRACTITIONER or principal.access_mode != AccessMode.NORMAL:
        agent["purposeOfUse"] = [{"coding": [{"system": ACT_REASON, "code": mode_code,
                                              "display": mode_display}]}]
    if principal.client_id:
        agent["network"] = {"address": principal.client_id, "type": "5"}  # 5: a URI/name, not an IP
    if principal.token_id:
        agent["policy"] = [f"urn:carnet:token:{principal.token_id}"]
    return agent


@lru_cache(maxsize=512)
def _type_and_subtype(interaction: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if interaction in ("login", "logout"):
        code, display = ("110122", "Login") if interaction == "login" else ("110123", "Logout")
        return ({"system": DCM, "code": "110114", "display": "User Authentication"},
                [{"system": DCM, "code": code, "display": display}])
    if interaction in RESTFUL_CODES:
        return ({"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
                [{"system": RESTFUL, "code": interaction}])
    if interaction.startswith("admin:"):
        return ({"system": DCM, "code": "110136", "display": "Security Roles Changed"}
                if interaction.startswith("admin:client") or interaction.startswith("admin:account")
                else {"system": DCM, "code": "110100", "display": "Application Activity"},
                [{"system": "urn:carnet:admin", "code": interaction[6:]}])
    # an operation ($break-glass, $ins-verify...) or an MHD transaction
    return ({"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
            [{"system": RESTFUL, "code": "operation"},
             {"system": "urn:carnet:operation", "code": interaction}])


def build_events(principal: Principal, record: AuditRecord,
                 recorded_us: int) -> list[tuple[str | None, dict[str, Any]]]:
    """The AuditEvents of one record: one per patient concerned (and one without a patient for
    what belongs to no record), each naming at most :data:`ENTRY_MAX` resources."""
    by_patient: dict[str | None, list[tuple[str, str]]] = {}
    for rtype, rid, patient in record.entities:
        by_patient.setdefault(patient, []).append((rtype, rid))
    if not by_patient or (record.patient is not None and record.patient not in by_patient):
        by_patient[record.patient] = []
    event_type, subtype = _type_and_subtype(record.interaction[:64])
    mode = principal.access_mode
    recorded = _instant(recorded_us)
    out = []
    for patient, touched in by_patient.items():
        event: dict[str, Any] = {
            "resourceType": "AuditEvent", "id": event_id(),
            "type": event_type, "subtype": subtype, "action": action_of(record.interaction),
            "recorded": recorded, "outcome": str(record.outcome),
            "agent": [_agent(principal)], "source": SOURCE,
        }
        profile = PROFILES.get(record.interaction)
        if profile and patient is not None and record.interaction != "login":
            profile += ".Patient" if not profile.endswith("Minimal") else ""
        if profile:
            event["meta"] = {"profile": [BALP + profile]}
        if record.message:
            event["outcomeDesc"] = record.message[:500]
        if mode != AccessMode.NORMAL:
            code, display = PURPOSE[mode]
            event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": code, "display": display}]},
                                       {"coding": [{"system": ACCESS_MODE, "code": mode.value}],
                                        **({"text": principal.reason} if principal.reason else {})}]
        entities: list[dict[str, Any]] = []
        if patient is not None:
            entities.append({"what": {"reference": f"Patient/{patient}"},
                             "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                             "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
        for rtype, rid in touched[:ENTRY_MAX]:
            if rtype == "Patient" and rid == patient:
                continue
            entities.append({"what": {"reference": f"{rtype}/{rid}"},
                             "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                             "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}})
        if record.query is not None or (record.resource_type and not touched):
            query: dict[str, Any] = {"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                                     "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"}}
            if record.resource_type:
                query["what"] = {"display": record.resource_type}
            if record.query:
                query["query"] = base64.b64encode(record.query.encode()).decode()
            entities.append(query)
        if record.detail:
            entities.append({"type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
                             "detail": [{"type": k, "valueString": v}
                                        for k, v in sorted(record.detail.items())]})
        if entities:
            event["entity"] = entities
        out.append((patient, event))
    return out
