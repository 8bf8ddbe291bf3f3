"""Practitioner, PractitionerRole and Organization resources in the FR Core / ANS directory shape.

Following FR Core (``fr-core-practitioner``, ``fr-core-practitioner-role``, ``fr-core-organization``)
and the ANS directory guide:

* a Practitioner carries its ``PS_IdNat`` (system ``urn:oid:1.2.250.1.71.4.2.1``, type ``IDNPS``) and,
  for RPPS holders, the RPPS number (system ``https://rpps.esante.gouv.fr``, type ``RPPS``); its
  profession is a ``qualification`` coded in TRE_G15-ProfessionSante together with the professional
  category (TRE_R09, ``C`` civil);
* a PractitionerRole is one situation of practice: the practitioner, the organisation, the mode of
  practice (TRE_R23: libéral, salarié, bénévole) and the specialties (TRE_R38 ordinal specialties).
  Its ``code`` also carries the TRE_G15 profession, as FR Core's ``fr-core-practitioner-role-profession``
  does, so that the standard ``PractitionerRole?role=`` search finds practitioners by profession;
* an Organization carries its national structure identifier (system ``urn:oid:1.2.250.1.71.4.2.2``,
  type ``IDNST``: ``1`` + FINESS, ``3`` + SIRET...) and the FINESS (``https://finess.esante.gouv.fr``,
  type ``FINEG``/``FINEJ``) or SIRET/SIREN (``https://sirene.fr``) it is built from.

Resource ids are derived from the national identifiers (UUID version 5 in a namespace of our own), so
the same practitioner, role or organisation always gets the same id: loading a directory twice
updates in place instead of duplicating. The ids stay opaque; the identifiers they derive from are
public directory data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from carnet.directory import keys
from carnet.directory.keys import PsIdNat, StructureIdNat, StructureIdNatKind

ID_NAMESPACE = uuid.UUID("237af263-cfd7-425c-9434-20a9a6140851")

IDENTIFIER_TYPE_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
PS_IDNAT_SYSTEM = f"urn:oid:{keys.PS_IDNAT_OID}"
STRUCTURE_IDNAT_SYSTEM = f"urn:oid:{keys.STRUCTURE_IDNAT_OID}"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
FINESS_SYSTEM = "https://finess.esante.gouv.fr"
SIRENE_SYSTEM = "https://sirene.fr"
INSEE_CODE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
COMMUNE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
_NOS = "https://mos.esante.gouv.fr/NOS"
CATEGORY_SYSTEM = f"{_NOS}/TRE_R09-CategorieProfessionnelle/FHIR/TRE-R09-CategorieProfessionnelle"
MODE_SYSTEM = f"{_NOS}/TRE_R23-ModeExercice/FHIR/TRE-R23-ModeExercice"
SPECIALTY_SYSTEM = f"{_NOS}/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"

CATEGORIES = {"C": "Civil", "M": "Militaire", "F": "Fonctionnaire", "E": "Etudiant"}
MODES = {"L": "Libéral", "S": "Salarié", "B": "Bénévole"}


def profession_system() -> str:
    return keys.professions_metadata()["fhir_system"]


def directory_id(resource_type: str, *parts: str) -> str:
    """The id of a directory resource, derived from its national identifier(s)."""
    return str(uuid.uuid5(ID_NAMESPACE, "|".join((resource_type, *parts))))


@dataclass(frozen=True)
class Address:
    line: tuple[str, ...] = ()
    postal_code: str | None = None
    city: str | None = None
    insee_code: str | None = None  # COG code of the commune
    country: str | None = None

    def to_fhir(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if self.insee_code:
            out["extension"] = [{"url": INSEE_CODE,
                                 "valueCoding": {"system": COMMUNE_SYSTEM, "code": self.insee_code}}]
        out["use"] = "work"
        for key, value in (("line", list(self.line) or None), ("city", self.city),
                           ("postalCode", self.postal_code), ("country", self.country)):
            if value:
                out[key] = value
        return out if len(out) > 1 else None


def _telecom(phone: str | None, email: str | None) -> list[dict[str, Any]]:
    out = []
    if phone:
        out.append({"system": "phone", "value": phone, "use": "work"})
    if email:
        out.append({"system": "email", "value": email, "use": "work"})
    return out


def _typed(type_code: str, system: str, value: str) -> dict[str, Any]:
    return {"use": "official",
            "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": type_code}]},
            "system": system, "value": value}


def profession_coding(code: str) -> dict[str, Any]:
    """A TRE_G15 coding; the code must be one the directory knows (Unprocessable otherwise)."""
    found = keys.profession(code)
    return {"system": profession_system(), "code": found.code, "display": found.label_fr}


def practitioner_id(ps: PsIdNat) -> str:
    return directory_id("Practitioner", ps.value)


def practitioner(ps: PsIdNat, *, family: str, given: str | None = None, prefix: str | None = None,
                 suffix: str | None = None, professions: Iterable[str] = (), category: str = "C",
                 phone: str | None = None, email: str | None = None) -> dict[str, Any]:
    """A Practitioner. ``prefix`` is the civility (``M``, ``MME``), ``suffix`` the title used in practice
    (``DR``, ``PR``), as in the national directory; ``professions`` are TRE_G15 codes."""
    identifiers = [_typed("IDNPS", PS_IDNAT_SYSTEM, ps.value)]
    if ps.kind is keys.IdNatKind.RPPS:
        identifiers.append(_typed("RPPS", RPPS_SYSTEM, ps.identifier))
    name: dict[str, Any] = {"use": "usual", "family": family}
    if given:
        name["given"] = [given]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    resource: dict[str, Any] = {"resourceType": "Practitioner", "id": practitioner_id(ps),
                                "identifier": identifiers, "active": True, "name": [name]}
    telecom = _telecom(phone, email)
    if telecom:
        resource["telecom"] = telecom
    qualifications = [profession_qualification(code, category) for code in dict.fromkeys(professions)]
    if qualifications:
        resource["qualification"] = qualifications
    return resource


def profession_qualification(code: str, category: str = "C") -> dict[str, Any]:
    codings = [{"system": CATEGORY_SYSTEM, "code": category, "display": CATEGORIES.get(category, category)}]
    return {"code": {"coding": [*codings, profession_coding(code)]}}


def professions_of(resource: dict[str, Any]) -> list[str]:
    """The TRE_G15 codes of a Practitioner's qualifications or a PractitionerRole's codes."""
    system = profession_system()
    concepts = [q.get("code") or {} for q in resource.get("qualification") or []]
    concepts += list(resource.get("code") or [])
    return [c["code"] for concept in concepts for c in concept.get("coding") or []
            if c.get("system") == system and isinstance(c.get("code"), str)]


def structure_idnat(*, finess: str | None = None, siret: str | None = None, siren: str | None = None,
                    other: str | None = None) -> StructureIdNat:
    """The national identifier of a structure from its FINESS (site), else SIRET, else SIREN, else an
    identifier already in ``IdNat_Struct`` form (checked)."""
    if finess:
        return StructureIdNat(StructureIdNatKind.FINESS, keys.validate_finess(finess))
    if siret:
        return StructureIdNat(StructureIdNatKind.SIRET, keys.validate_siret(siret))
    if siren:
        return StructureIdNat(StructureIdNatKind.SIREN, keys.validate_siren(siren))
    if other:
        return keys.parse_structure_idnat(other)
    raise ValueError("a structure needs a FINESS, SIRET, SIREN or national structure identifier")


def organization_id(idnat: StructureIdNat) -> str:
    return directory_id("Organization", idnat.value)


def organization(idnat: StructureIdNat, *, name: str, finess_ej: str | None = None, siret: str | None = None,
                 siren: str | None = None, address: Address | None = None, phone: str | None = None,
                 email: str | None = None, alias: str | None = None) -> dict[str, Any]:
    identifiers = [_typed("IDNST", STRUCTURE_IDNAT_SYSTEM, idnat.value)]
    if idnat.kind is StructureIdNatKind.FINESS:
        identifiers.append(_typed("FINEG", FINESS_SYSTEM, idnat.identifier))
    if finess_ej:
        identifiers.append(_typed("FINEJ", FINESS_SYSTEM, keys.validate_finess(finess_ej)))
    if siret or idnat.kind is StructureIdNatKind.SIRET:
        identifiers.append(_typed("SIRET", SIRENE_SYSTEM, keys.validate_siret(siret or idnat.identifier)))
    if siren or idnat.kind is StructureIdNatKind.SIREN:
        identifiers.append(_typed("SIREN", SIRENE_SYSTEM, keys.validate_siren(siren or idnat.identifier)))
    resource: dict[str, Any] = {"resourceType": "Organization", "id": organization_id(idnat),
                                "identifier": identifiers, "active": True, "name": name}
    if alias and alias != name:
        resource["alias"] = [alias]
    telecom = _telecom(phone, email)
    if telecom:
        resource["telecom"] = telecom
    fhir_address = address.to_fhir() if address else None
    if fhir_address:
        resource["address"] = [fhir_address]
    return resource


def role_id(ps: PsIdNat, profession: str, structure: str | None, mode: str | None) -> str:
    return directory_id("PractitionerRole", ps.value, profession, structure or "", mode or "")


def practitioner_role(ps: PsIdNat, profession: str, *, structure: StructureIdNat | None = None,
                      structure_name: str | None = None, mode: str | None = None,
                      specialties: Sequence[tuple[str, str | None]] = (), phone: str | None = None,
                      email: str | None = None) -> dict[str, Any]:
    """One situation of practice of a practitioner, at a structure when there is one. ``specialties`` are
    (TRE_R38 code, display) pairs."""
    codes: list[dict[str, Any]] = [{"coding": [profession_coding(profession)]}]
    if mode:
        codes.append({"coding": [{"system": MODE_SYSTEM, "code": mode, "display": MODES.get(mode, mode)}]})
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": role_id(ps, profession, structure.value if structure else None, mode),
        "active": True, "practitioner": {"reference": f"Practitioner/{practitioner_id(ps)}"}}
    if structure is not None:
        resource["organization"] = {"reference": f"Organization/{organization_id(structure)}"}
        if structure_name:
            resource["organization"]["display"] = structure_name
    resource["code"] = codes
    if specialties:
        resource["specialty"] = [specialty_concept(code, display) for code, display in specialties]
    telecom = _telecom(phone, email)
    if telecom:
        resource["telecom"] = telecom
    return resource


def specialty_concept(code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": SPECIALTY_SYSTEM, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def merge_lists(current: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """``incoming`` with the qualifications (Practitioner) or specialties (PractitionerRole) of ``current``
    kept: a directory extract lists one profession or specialty per row, so rows met separately (or in
    an earlier load) add up instead of replacing each other."""
    merged = dict(incoming)
    for key in ("qualification", "specialty"):
        have = [x for x in current.get(key) or [] if isinstance(x, dict)]
        new = [x for x in incoming.get(key) or [] if x not in have]
        if have or new:
            merged[key] = have + new
    return merged
