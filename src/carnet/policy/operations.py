"""Access operations on a patient's record (FHIR operations on Patient instances):

- ``POST Patient/{id}/$break-glass`` (Parameters ``reason``, mandatory): *bris de glace*. A
  professional signed on strongly gets a short-lived token in emergency mode bound to that record,
  unless the patient opposed emergency access or blocked them, or the record is closed or its
  identity not qualified. The access is recorded with its reason.
- ``POST Patient/{id}/$regulation-access`` (``reason``): the same for a Centre 15 regulating doctor
  (a physician whose token carries the role ``centre15``), in regulation mode.
- ``GET Patient/{id}/$access``: who can access the record and why (the patient, a representative,
  or the operator): each professional with the rights and their reasons, and the record's facts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from sqlalchemy import select

from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.db.tables import access_rights
from carnet.errors import CarnetError, Forbidden, Invalid, NotFound
from carnet.errors import bilingual as _t
from carnet.fhir.parameters import one, parameters, request_body
from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter, Operation
from carnet.fhir.store import Repository
from carnet.policy.rights import Level, RecordRights, holds_today, rights_of

EMERGENCY_TTL_SECONDS = 900
REGULATION_ROLE = "centre15"
PHYSICIAN = "10"


class Issuer(Protocol):
    def issue(self, principal: Principal, ttl_seconds: int | None = None) -> str: ...



def _record(repo: Repository, rid: str) -> RecordRights:
    try:
        repo.as_system().read("Patient", rid)
    except CarnetError:  # absent, deleted: the same answer
        raise NotFound(f"Patient/{rid} is not known") from None
    return rights_of(repo.conn, rid)


def emergency_token(repo: Repository, issuer: Issuer, rid: str, reason: str | None,
                    mode: AccessMode) -> dict[str, Any]:
    who = repo.principal
    if who.kind != Kind.PRACTITIONER or not who.fhir_user:
        raise Forbidden(_t("L'accès en urgence est réservé aux professionnels de santé",
                           "emergency access is for health professionals"))
    if not who.strong_auth:
        raise Forbidden(_t("L'accès en urgence exige une authentification forte",
                           "emergency access requires a strong sign-on"))
    if not reason or not reason.strip():
        raise Invalid(_t("Le motif de l'accès en urgence est obligatoire",
                         "the reason of an emergency access is mandatory"), expression=["reason"])
    if mode == AccessMode.REGULATION and (who.profession != PHYSICIAN or REGULATION_ROLE not in who.roles):
        raise Forbidden(_t("L'accès en régulation est réservé aux médecins régulateurs du centre 15",
                           "regulation access is for Centre 15 regulating doctors"))
    rights = _record(repo, rid)
    refusal = None
    if rights.emergency_opposed:
        refusal = _t("Le patient s'est opposé à l'accès en urgence à son dossier",
                     "the patient opposed emergency access to their record")
    elif rights.level(who.fhir_user) == Level.BLOCKED:
        refusal = _t("Le patient a bloqué ce professionnel", "the patient blocked this professional")
    elif not rights.open:
        refusal = _t("Le dossier est fermé", "the record is closed")
    elif not rights.qualified:
        refusal = _t("L'identité du patient n'est pas qualifiée", "the patient's identity is not qualified")
    interaction = "break-glass" if mode == AccessMode.EMERGENCY else "regulation-access"
    if refusal is not None:
        repo._record(interaction, "Patient", (rid,), outcome=4, query=reason.strip())
        raise Forbidden(refusal)
    principal = replace(who, access_mode=mode, patient=rid, reason=reason.strip()[:500],
                        scopes=frozenset({"user/*.rs"}))
    token = issuer.issue(principal, EMERGENCY_TTL_SECONDS)
    repo._record(interaction, "Patient", (rid,), query=reason.strip())
    return {"resourceType": "Parameters", "parameter": [
        {"name": "access_token", "valueString": token},
        {"name": "token_type", "valueString": "Bearer"},
        {"name": "expires_in", "valueInteger": EMERGENCY_TTL_SECONDS},
        {"name": "patient", "valueReference": {"reference": f"Patient/{rid}"}},
        {"name": "mode", "valueCode": mode.value}]}


def access_summary(repo: Repository, rid: str) -> dict[str, Any]:
    who = repo.principal
    allowed = who.kind in (Kind.SYSTEM, Kind.OPERATOR) or (who.kind == Kind.PATIENT and (
        who.resource_id == rid or repo.conn.execute(select(access_rights.c.level).where(
            access_rights.c.actor == who.fhir_user, access_rights.c.patient_id == rid,
            access_rights.c.level == int(Level.REPRESENTATIVE),
            holds_today(access_rights.c))).first() is not None))
    if not allowed:  # a professional, another patient: as if the record did not exist
        raise NotFound(f"Patient/{rid} is not known")
    rights = _record(repo, rid)
    parts: list[dict[str, Any]] = [
        {"name": "open", "valueBoolean": rights.open},
        {"name": "qualified", "valueBoolean": rights.qualified},
        {"name": "emergencyOpposed", "valueBoolean": rights.emergency_opposed},
        {"name": "minor", "valueBoolean": rights.minor}]
    parts += [{"name": "note", "valueString": n} for n in rights.notes]
    for grant in sorted(rights.grants.values(), key=lambda g: (-g.level, g.actor)):
        parts.append({"name": "actor", "part": [
            {"name": "who", "valueReference": {"reference": grant.actor}},
            {"name": "rights", "valueCode": grant.level.name.lower()},
            *({"name": "reason", "valueString": r} for r in grant.reasons)]})
    repo._record("read", "Patient", (rid,), query="$access")
    return {"resourceType": "Parameters", "parameter": parts}


def register_access_operations(router: FhirRouter) -> None:
    def issuer() -> Issuer:
        found = getattr(router, "token_issuer", None)
        if found is None:
            raise Forbidden(_t("Aucun émetteur de jetons n'est configuré", "no token issuer is configured"))
        return found

    def reason_of(req: FhirRequest, name: str) -> str | None:
        params = parameters(request_body(req), f"Patient/{name}")
        value = one(params, "reason", "valueString", str)
        return str(value) if value is not None else None

    def break_glass(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        return FhirResponse(200, emergency_token(repo, issuer(), rid, reason_of(req, "$break-glass"),
                                                 AccessMode.EMERGENCY))

    def regulation(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        return FhirResponse(200, emergency_token(repo, issuer(), rid, reason_of(req, "$regulation-access"),
                                                 AccessMode.REGULATION))

    def access(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        return FhirResponse(200, access_summary(repo, rid))

    for name, handler, methods, doc in (
            ("$break-glass", break_glass, ("POST",),
             "emergency access (bris de glace): reason mandatory; a short-lived token bound to the record"),
            ("$regulation-access", regulation, ("POST",),
             "Centre 15 regulation access: reason mandatory; a short-lived token bound to the record"),
            ("$access", access, ("GET",), "who can access the record, and why")):
        router.add_operation(Operation(name, "Patient", True, handler, methods, doc))
