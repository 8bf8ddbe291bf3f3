"""Who signs in: the Principal of a professional (from the directory) or of a patient (by INS).

Both are looked up through the FHIR engine, as the system: a professional by the national
identifier (``PS_IdNat``, system ``urn:oid:1.2.250.1.71.4.2.1``) of their Practitioner, whose
profession comes from the directory (the Practitioner's qualifications, else its PractitionerRoles,
coded in TRE_G15); a patient by the INS matricule (NIR, NIA, test and demo OIDs) or by the id of
their Patient.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from carnet.auth.principal import Kind, Principal
from carnet.directory import keys
from carnet.directory.fhir import PS_IDNAT_SYSTEM, professions_of
from carnet.errors import CarnetError, NotFound
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRequest, FhirRouter
from carnet.identity import nir

INS_SYSTEMS = tuple(f"urn:oid:{oid}" for oid in (nir.OID_INS_NIR, nir.OID_INS_NIA, nir.OID_INS_NIR_TEST,
                                                   nir.OID_INS_NIR_DEMO))
PRACTITIONER_SCOPES = frozenset({"user/*.cruds"})
PATIENT_SCOPES = frozenset({"patient/*.cruds"})


@dataclass(frozen=True)
class ProfessionalIdentity:
    """A professional as an identity provider vouches for them (the development provider, Pro Santé
    Connect): the national id, and what the provider says of the profession and the sign-on."""

    national_id: str
    strong_auth: bool = True
    profession: str | None = None
    roles: frozenset[str] = frozenset()
    display: str = ""


def _search(router: FhirRouter, rtype: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
    resp = router.handle(FhirRequest("GET", rtype, query, {}), Principal.system("carnet-auth"))
    if resp.status != 200:
        raise RuntimeError(f"directory lookup failed ({resp.status})")
    bundle = jsonio.loads(resp.json_bytes())
    return [e["resource"] for e in bundle.get("entry") or [] if e.get("search", {}).get("mode") == "match"]


def display_of(resource: dict[str, Any]) -> str:
    """A person's name for display: title, first given name, family name."""
    names = resource.get("name") or []
    name = next((n for n in names if n.get("use") in ("usual", "official")), names[0] if names else {})
    parts = [*(name.get("suffix") or [])[:1], *(name.get("given") or [])[:1], name.get("family") or ""]
    return " ".join(p.title() if p.isupper() and len(p) > 2 else p for p in parts if p)


def profession_label(code: str) -> str:
    """The French label of a TRE_G15 profession code (the code itself when unknown)."""
    try:
        return str(keys.profession(code).label_fr)
    except CarnetError:
        return code


def _identifier(resource: dict[str, Any], systems: Iterable[str]) -> str | None:
    wanted = set(systems)
    for ident in resource.get("identifier") or []:
        if ident.get("system") in wanted and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


def practitioner_by_national_id(router: FhirRouter, national_id: str) -> dict[str, Any]:
    found = _search(router, "Practitioner", [("identifier", f"{PS_IDNAT_SYSTEM}|{national_id}")])
    if not found:
        raise NotFound(f"Aucun professionnel d'identifiant national {national_id} dans l'annuaire / "
                       f"No professional with national id {national_id} in the directory")
    return found[0]


def profession_of(router: FhirRouter, practitioner: dict[str, Any]) -> str | None:
    codes = professions_of(practitioner)
    if not codes:
        query = [("practitioner", f"Practitioner/{practitioner['id']}")]
        for role in _search(router, "PractitionerRole", query):
            codes += professions_of(role)
    return codes[0] if codes else None


def practitioners(router: FhirRouter, limit: int = 50) -> list[dict[str, Any]]:
    """Professionals of the directory that carry a national id (the development provider's list)."""
    found = _search(router, "Practitioner", [("identifier", f"{PS_IDNAT_SYSTEM}|"), ("_count", str(limit)),
                                             ("_sort", "family")])
    return [p for p in found if _identifier(p, [PS_IDNAT_SYSTEM])]


def practitioner_principal(router: FhirRouter, identity: ProfessionalIdentity | str,
                           scopes: frozenset[str] = PRACTITIONER_SCOPES) -> Principal:
    """The Principal of a professional signed on as ``identity`` (or a bare national id: a strong
    sign-on). Unknown to the directory: NotFound."""
    if isinstance(identity, str):
        identity = ProfessionalIdentity(identity)
    practitioner = practitioner_by_national_id(router, identity.national_id)
    profession = identity.profession or profession_of(router, practitioner)
    return Principal(Kind.PRACTITIONER, identity.national_id, frozenset(scopes),
                     display=identity.display or display_of(practitioner), profession=profession,
                     roles=identity.roles, fhir_user=f"Practitioner/{practitioner['id']}",
                     strong_auth=identity.strong_auth)


def patient_by_matricule(router: FhirRouter, matricule: str) -> dict[str, Any]:
    compact = matricule.replace(" ", "")
    found = _search(router, "Patient", [("identifier", ",".join(f"{s}|{compact}" for s in INS_SYSTEMS))])
    if not found:
        raise NotFound(f"Aucun patient de matricule INS {compact} / No patient with INS matricule {compact}")
    return found[0]


def patient_by_id(router: FhirRouter, patient_id: str) -> dict[str, Any]:
    found = _search(router, "Patient", [("_id", patient_id)])
    if not found:
        raise NotFound(f"Aucun patient {patient_id} / No patient {patient_id}")
    return found[0]


def patient_principal(router: FhirRouter, patient: dict[str, Any],
                      scopes: frozenset[str] = PATIENT_SCOPES, *, strong_auth: bool = False) -> Principal:
    """The Principal of a patient signed in as themselves: bound to their own record."""
    subject = _identifier(patient, INS_SYSTEMS) or patient["id"]
    return Principal(Kind.PATIENT, subject, frozenset(scopes), display=display_of(patient),
                     fhir_user=f"Patient/{patient['id']}", patient=patient["id"], strong_auth=strong_auth)
