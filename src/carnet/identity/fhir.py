"""The FR Core "Patient INS" shape of a Patient resource: build it, read it back, check it.

FR Core (Interop'Santé, https://hl7.fr/ig/fhir/core, profile ``fr-core-patient-ins``) carries the INS as:

* an ``identifier`` per INS system: ``urn:oid:1.2.250.1.213.1.4.8`` (INS-NIR, use ``official``), ``…4.9``
  (INS-NIA, use ``temp``), ``…4.10`` (INS-NIR-TEST) and ``…4.11`` (INS-NIR-DEMO), each typed with the
  same code in ``fr-core-cs-v2-0203``;
* the official name (``use = official``): ``family`` is the birth name and ``given`` holds exactly one
  name, the first birth first name; the full list of birth first names, separated by spaces, is the
  ``fr-core-patient-birth-list-given-name`` extension of that name;
* ``gender`` and ``birthDate``;
* the ``patient-birthPlace`` extension, whose ``valueAddress`` carries the INSEE code of the commune
  (TRE_R13-CommuneOM) in the ``fr-core-address-insee-code`` extension. For people born abroad the
  code is the INSEE country code (99xxx), coded in TRE_R20-Pays (*assumption*: the extension's own
  text says the country code takes the commune's place; FR Core's COG value set lists both systems);
* the ``fr-core-identity-reliability`` extension: ``identityStatus`` (PROV, RECUP, VALI, QUAL in
  ``fr-core-cs-identity-status``), ``validationMode`` (the identity document checked, in
  ``fr-core-cs-mode-validation-identity``), ``validationDate``, and ``comment`` codes for the
  "douteuse" (DOUT) and "fictive" (FICT) attributes.

Readers also accept the FR Core 2.1 identity status system (``fr-core-cs-v2-0445``) and the older
``TRE_R13-Commune`` system, found in published examples.

Every problem found by :func:`check_patient_ins` is an :class:`carnet.errors.Issue` with a French /
English diagnostic and the FHIRPath expression of the element at fault.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from carnet.errors import Issue, Unprocessable
from carnet.errors import bilingual as _text
from carnet.identity import nir
from carnet.identity.matching import normalise_name
from carnet.identity.status import (
    GENDERS,
    STATUS_SYSTEM,
    VALIDATION_MODE_SYSTEM,
    DocumentType,
    Event,
    IdentityFlag,
    IdentityState,
    IdentityStatus,
    Traits,
)

CORE = "https://hl7.fr/ig/fhir/core"
PROFILE_PATIENT_INS = f"{CORE}/StructureDefinition/fr-core-patient-ins"
IDENTIFIER_TYPE_SYSTEM = f"{CORE}/CodeSystem/fr-core-cs-v2-0203"
BIRTH_LIST_GIVEN_NAME = f"{CORE}/StructureDefinition/fr-core-patient-birth-list-given-name"
INSEE_CODE = f"{CORE}/StructureDefinition/fr-core-address-insee-code"
IDENTITY_RELIABILITY = f"{CORE}/StructureDefinition/fr-core-identity-reliability"
STATUS_COMMENT_SYSTEM = f"{CORE}/CodeSystem/fr-core-cs-identity-status-comment"
LEGACY_STATUS_SYSTEM = f"{CORE}/CodeSystem/fr-core-cs-v2-0445"  # FR Core 2.1
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
COMMUNE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
LEGACY_COMMUNE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-Commune/FHIR/TRE-R13-Commune"
COUNTRY_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R20-Pays/FHIR/TRE-R20-Pays"

PARIS = ZoneInfo("Europe/Paris")

# Our document types and their FR Core validation-mode codes. FR Core has no single code for the
# family record book *and* a parent's document; "LEP" (livret de famille des parents) is the nearest.
_MODE_OF_DOCUMENT: Mapping[DocumentType, str] = MappingProxyType({
    DocumentType.PASSPORT: "PA", DocumentType.NATIONAL_ID_CARD: "CN", DocumentType.RESIDENCE_PERMIT: "CS",
    DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT: "LEP",
})
_DOCUMENT_OF_MODE: Mapping[str, DocumentType] = MappingProxyType({
    **{v: k for k, v in _MODE_OF_DOCUMENT.items()},
    "LE": DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT,  # older FR Core code system
})


def mode_of_document(document_type: DocumentType) -> str:
    """The FR Core validation-mode code of one of our document types."""
    return _MODE_OF_DOCUMENT[document_type]


def document_of_mode(code: str) -> DocumentType | None:
    """Our document type for an FR Core validation-mode code (``LE``, the older code, included)."""
    return _DOCUMENT_OF_MODE.get(code)


# The complete fr-core-cs-mode-validation-identity code system (FR Core 2.2).
VALIDATION_MODES = frozenset({"CN", "PA", "CS", "eCN", "IN", "AV", "LECV", "AN", "LEP", "CC", "ANCV"})
_FLAG_CODES: Mapping[IdentityFlag, str] = MappingProxyType({IdentityFlag.DOUTEUSE: "DOUT",
                                                             IdentityFlag.FICTIVE: "FICT"})
_STATUS_SYSTEMS = (STATUS_SYSTEM, LEGACY_STATUS_SYSTEM)
INS_GENDERS = ("male", "female", "unknown")  # FR Core fr-core-vs-patient-gender-INS


@dataclass(frozen=True)
class InsIdentifier:
    matricule: str  # as written in the resource, spaces removed
    oid: str  # bare OID
    use: str | None
    index: int  # position in Patient.identifier


@dataclass(frozen=True)
class PatientIns:
    """What a Patient resource says about its INS identity."""

    traits: Traits | None
    identifiers: tuple[InsIdentifier, ...]
    status: IdentityStatus | None  # as declared by the resource
    document_type: DocumentType | None = None
    validation_date: date | None = None
    flags: frozenset[IdentityFlag] = field(default_factory=frozenset)

    @property
    def ins(self) -> InsIdentifier | None:
        """The INS in force: an official NIR (real, test or demo) first, else the temporary NIA."""
        ranked = sorted((i for i in self.identifiers if i.use != "old"),
                        key=lambda i: (i.oid == nir.OID_INS_NIA, i.index))
        return ranked[0] if ranked else None


# -- Building ----------------------------------------------------------------------------------------

def ins_identifier(matricule: str, oid: str) -> dict[str, Any]:
    """The identifier element for a matricule under one of the four INS OIDs (checked, not refused
    in production here: that is the caller's policy)."""
    system = nir.check_oid(oid, production=False)
    value = nir.parse_matricule(matricule).value
    return {"use": system.use,
            "type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": system.type_code}]},
            "system": system.system, "value": value}


def birthplace_extension(code: str, city: str | None = None) -> dict[str, Any]:
    """``patient-birthPlace`` with the INSEE code of the commune, or 99xxx for a country."""
    code = code.strip().upper()
    system = COUNTRY_SYSTEM if code.startswith("99") else COMMUNE_SYSTEM
    address: dict[str, Any] = {"extension": [{"url": INSEE_CODE,
                                              "valueCoding": {"system": system, "code": code}}]}
    if city:
        address["city"] = city
    return {"url": BIRTH_PLACE, "valueAddress": address}


def _last_date(state: IdentityState, event: Event) -> date | None:
    for step in reversed(state.history):
        if step.what is event:
            return step.when.astimezone(PARIS).date()
    return None


def reliability_extension(status: IdentityStatus, *, document_type: DocumentType | None = None,
                          validation_date: date | None = None,
                          flags: Iterable[IdentityFlag] = ()) -> dict[str, Any]:
    """The ``fr-core-identity-reliability`` extension."""
    parts: list[dict[str, Any]] = [{"url": "identityStatus", "valueCoding": {
        "system": STATUS_SYSTEM, "code": status.value, "display": status.label_fr}}]
    for flag in sorted(set(flags)):
        parts.append({"url": "comment", "valueCodeableConcept": {"coding": [{
            "system": STATUS_COMMENT_SYSTEM, "code": _FLAG_CODES[flag],
            "display": f"Identité {flag.value}"}]}})
    if validation_date is not None:
        parts.append({"url": "validationDate", "valueDate": validation_date.isoformat()})
    if document_type is not None:
        parts.append({"url": "validationMode", "valueCoding": {
            "system": VALIDATION_MODE_SYSTEM, "code": _MODE_OF_DOCUMENT[document_type],
            "display": document_type.label_fr}})
    return {"url": IDENTITY_RELIABILITY, "extension": parts}


def reliability_from_state(state: IdentityState) -> dict[str, Any]:
    """The reliability extension the facts give: status, flags and, when C holds, the document and
    the date of the last document check (in Europe/Paris)."""
    document = state.document_type if state.has_c else None
    checked = _last_date(state, Event.DOCUMENT_CHECK) if document else None
    return reliability_extension(state.status, document_type=document, flags=state.flags,
                                 validation_date=checked)


def build_patient(traits: Traits, *, matricule: str | None = None, oid: str = nir.OID_INS_NIR,
                  status: IdentityStatus | IdentityState = IdentityStatus.PROV,
                  document_type: DocumentType | None = None, validation_date: date | None = None,
                  flags: Iterable[IdentityFlag] = (), birthplace_city: str | None = None,
                  resource_id: str | None = None) -> dict[str, Any]:
    """A Patient in the FR Core Patient INS shape. Given an :class:`IdentityState`, its status, flags,
    the document behind C and the date of the last document check (in Europe/Paris) are used."""
    if isinstance(status, IdentityState):
        state = status
        status = state.status
        flags = state.flags
        if state.has_c:
            document_type = document_type or state.document_type
            validation_date = validation_date or _last_date(state, Event.DOCUMENT_CHECK)
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if resource_id:
        patient["id"] = resource_id
    patient["meta"] = {"profile": [PROFILE_PATIENT_INS]}
    extensions = [reliability_extension(status, document_type=document_type,
                                        validation_date=validation_date, flags=flags)]
    if traits.birthplace_code:
        extensions.append(birthplace_extension(traits.birthplace_code, birthplace_city))
    patient["extension"] = extensions
    if matricule:
        patient["identifier"] = [ins_identifier(matricule, oid)]
    name: dict[str, Any] = {"use": "official", "family": traits.birth_family_name}
    if traits.birth_given_names:
        name = {"extension": [{"url": BIRTH_LIST_GIVEN_NAME,
                               "valueString": " ".join(traits.birth_given_names)}],
                **name, "given": [traits.birth_given_names[0]]}
    patient["name"] = [name]
    patient["gender"] = traits.sex
    patient["birthDate"] = traits.birth_date.isoformat()
    return patient


# -- Reading -----------------------------------------------------------------------------------------

def _extensions(node: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(node, dict) or not isinstance(node.get("extension"), list):
        return []
    return [e for e in node["extension"] if isinstance(e, dict) and e.get("url") == url]


def _official_names(resource: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    names = resource.get("name")
    if not isinstance(names, list):
        return []
    return [(i, n) for i, n in enumerate(names) if isinstance(n, dict) and n.get("use") == "official"]


def ins_identifiers(resource: Mapping[str, Any]) -> list[InsIdentifier]:
    """The identifiers of the resource whose system is one of the INS OIDs."""
    found = []
    for i, ident in enumerate(resource.get("identifier") or []):
        if not isinstance(ident, dict) or not isinstance(ident.get("system"), str):
            continue
        oid = ident["system"].removeprefix("urn:oid:")
        if oid in nir.INS_OIDS:
            found.append(InsIdentifier(nir.compact(str(ident.get("value") or "")), oid, ident.get("use"), i))
    return found


def birthplace_code(resource: Mapping[str, Any]) -> str | None:
    for ext in _extensions(resource, BIRTH_PLACE):
        for code in _extensions(ext.get("valueAddress"), INSEE_CODE):
            value = (code.get("valueCoding") or {}).get("code")
            if isinstance(value, str) and value.strip():
                return value.strip().upper()
    return None


def birth_given_names(name: Mapping[str, Any]) -> tuple[str, ...]:
    """The birth first names of an official name: its list extension, else its ``given``."""
    for ext in _extensions(name, BIRTH_LIST_GIVEN_NAME):
        if isinstance(ext.get("valueString"), str):
            return tuple(ext["valueString"].split())
    given = name.get("given")
    return tuple(g for g in given if isinstance(g, str)) if isinstance(given, list) else ()


def _missing(fr: str, en: str, expression: str) -> Unprocessable:
    issue = _issue("required", fr, en, expression)
    return Unprocessable(issue.diagnostics, issues=[issue])


def read_traits(resource: Mapping[str, Any]) -> Traits:
    """The five strict traits of a Patient INS; Unprocessable when one cannot be read. The birth first
    names come from the list extension, else from the official name's ``given``."""
    official = _official_names(resource)
    if not official:
        raise _missing("Nom de naissance (name, use = official) absent",
                       "Birth name (name with use = official) missing", "Patient.name")
    i, name = official[0]
    family = name.get("family")
    if not isinstance(family, str) or not family.strip():
        raise _missing("Nom de naissance (family) absent", "Birth name (family) missing",
                       f"Patient.name[{i}].family")
    if not isinstance(resource.get("birthDate"), str):
        raise _missing("Date de naissance (birthDate) absente", "Birth date missing", "Patient.birthDate")
    if not isinstance(resource.get("gender"), str):
        raise _missing("Sexe (gender) absent", "Gender missing", "Patient.gender")
    try:
        born = date.fromisoformat(resource["birthDate"])
    except ValueError:
        issue = _issue("value", f"Date de naissance incomplète ou invalide « {resource['birthDate']} »",
                       f'Incomplete or invalid birth date "{resource["birthDate"]}"', "Patient.birthDate")
        raise Unprocessable(issue.diagnostics, issues=[issue]) from None
    return Traits(birth_family_name=family, birth_given_names=birth_given_names(name), birth_date=born,
                  sex=resource["gender"], birthplace_code=birthplace_code(resource))


def read_reliability(resource: Mapping[str, Any]) -> tuple[IdentityStatus | None, DocumentType | None,
                                                           date | None, frozenset[IdentityFlag]]:
    """Declared status, document type, validation date and flags (unknown codes read as absent)."""
    status = document = when = None
    flags: set[IdentityFlag] = set()
    by_code = {code: flag for flag, code in _FLAG_CODES.items()}
    for ext in _extensions(resource, IDENTITY_RELIABILITY):
        for part in ext.get("extension") or []:
            if not isinstance(part, dict):
                continue
            url, coding = part.get("url"), part.get("valueCoding") or {}
            if url == "identityStatus" and coding.get("code") in IdentityStatus.__members__:
                status = IdentityStatus(coding["code"])
            elif url == "validationMode":
                document = _DOCUMENT_OF_MODE.get(coding.get("code", ""), document)
            elif url == "validationDate" and isinstance(part.get("valueDate"), str):
                with contextlib.suppress(ValueError):
                    when = date.fromisoformat(part["valueDate"])
            elif url == "comment":
                for c in (part.get("valueCodeableConcept") or {}).get("coding") or []:
                    if isinstance(c, dict) and c.get("code") in by_code:
                        flags.add(by_code[c["code"]])
    return status, document, when, frozenset(flags)


def read_patient_ins(resource: Mapping[str, Any]) -> PatientIns:
    """Traits (None when incomplete), INS identifiers and declared reliability of a Patient."""
    try:
        traits: Traits | None = read_traits(resource)
    except Unprocessable:
        traits = None
    status, document, when, flags = read_reliability(resource)
    return PatientIns(traits=traits, identifiers=tuple(ins_identifiers(resource)), status=status,
                      document_type=document, validation_date=when, flags=flags)


# -- Checking ----------------------------------------------------------------------------------------


def _issue(code: str, fr: str, en: str, expression: str, severity: str = "error") -> Issue:
    return Issue(severity, code, _text(fr, en), [expression])


def _check_identifier(resource: Mapping[str, Any], ident: InsIdentifier, production: bool) -> list[Issue]:
    where = f"Patient.identifier[{ident.index}]"
    raw = resource["identifier"][ident.index]
    known = nir.INS_OIDS[ident.oid]
    issues: list[Issue] = []
    if not ident.matricule:
        issues.append(_issue("required", "Identifiant INS sans valeur", "INS identifier without a value",
                             f"{where}.value"))
    else:
        try:
            nir.parse_matricule(ident.matricule, expression=f"{where}.value")
        except Unprocessable as exc:
            issues.extend(exc.issues)
    if production and not known.allowed_in_production:
        issues.append(_issue("business-rule", f"OID {known.oid} ({known.label_fr}) refusé en production",
                             f"OID {known.oid} ({known.label_en}) is refused in production mode",
                             f"{where}.system"))
    allowed_uses = {known.use} | ({"old"} if known.use == "official" else set())
    if ident.use not in allowed_uses:
        issues.append(_issue("value", f"Usage « {ident.use} » invalide pour {known.label_fr} : attendu "
                             f"{known.use}", f'Invalid use "{ident.use}" for {known.label_en}: expected '
                             f"{known.use}", f"{where}.use"))
    kind = raw.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    if not any(isinstance(c, dict) and c.get("system") == IDENTIFIER_TYPE_SYSTEM
               and c.get("code") == known.type_code for c in codings or []):
        expected = f"{known.type_code} ({IDENTIFIER_TYPE_SYSTEM})"
        issues.append(_issue("required", f"Type d'identifiant attendu : {expected}",
                             f"Identifier type expected: {expected}", f"{where}.type"))
    return issues


def _coherence(resource: Mapping[str, Any], ident: InsIdentifier) -> list[Issue]:
    """Warnings when the matricule and the traits disagree (they may, legitimately: the NIR keeps the
    place and sex recorded at birth, and communes merge)."""
    try:
        m = nir.parse_matricule(ident.matricule)
    except Unprocessable:
        return []
    where = f"Patient.identifier[{ident.index}].value"
    issues = []

    def warn(fr: str, en: str) -> None:
        issues.append(_issue("value", fr, en, where, "warning"))

    gender = resource.get("gender")
    if gender in ("male", "female") and gender != m.gender:
        warn(f"Le sexe du matricule ({m.sex}) ne correspond pas au sexe « {gender} »",
             f'The matricule\'s sex digit ({m.sex}) does not match gender "{gender}"')
    try:
        born: date | None = date.fromisoformat(str(resource.get("birthDate")))
    except ValueError:
        born = None
    if born is not None and born.year % 100 != m.year:
        warn(f"L'année du matricule ({m.year:02d}) ne correspond pas à la naissance le {born.isoformat()}",
             f"The matricule's year ({m.year:02d}) does not match birth date {born.isoformat()}")
    if born is not None and m.month_known and born.month != m.month:
        warn(f"Le mois du matricule ({m.month:02d}) ne correspond pas à la naissance le {born.isoformat()}",
             f"The matricule's month ({m.month:02d}) does not match birth date {born.isoformat()}")
    place, expected = birthplace_code(resource), m.birthplace_code
    corsica_before_1976 = m.departement == "20" and place is not None and place[:2] in ("2A", "2B")
    if place and place != expected and not (corsica_before_1976 and place[2:] == m.commune):
        warn(f"Le lieu de naissance du matricule ({expected}) ne correspond pas au code INSEE {place}",
             f"The matricule's birthplace ({expected}) does not match INSEE code {place}")
    return issues


def _check_name(resource: Mapping[str, Any], required: bool) -> list[Issue]:
    official = _official_names(resource)
    if not official:
        return [_issue("required", "Nom de naissance (name, use = official) absent",
                       "Birth name (name with use = official) missing", "Patient.name")] if required else []
    issues = []
    if len(official) > 1:
        issues.append(_issue("value", f"{len(official)} noms officiels au lieu d'un seul",
                             f"{len(official)} official names instead of one", "Patient.name"))
    i, name = official[0]
    where = f"Patient.name[{i}]"
    if not isinstance(name.get("family"), str) or not name["family"].strip():
        issues.append(_issue("required", "Nom de naissance (family) absent", "Birth name (family) missing",
                             f"{where}.family"))
    given: list[Any] = name["given"] if isinstance(name.get("given"), list) else []
    if len(given) != 1:
        issues.append(_issue(
            "value", f"Le nom officiel doit porter exactement un prénom (le premier prénom de naissance), "
            f"il en porte {len(given)}", f"The official name must carry exactly one given name (the first "
            f"birth first name), it carries {len(given)}", f"{where}.given"))
    lists = [e.get("valueString") for e in _extensions(name, BIRTH_LIST_GIVEN_NAME)]
    listed = lists[0] if lists and isinstance(lists[0], str) and lists[0].strip() else None
    if listed is None:
        issues.append(_issue("required", "Liste des prénoms de naissance absente",
                             "List of birth first names missing",
                             f"{where}.extension('{BIRTH_LIST_GIVEN_NAME}')"))
    elif len(given) == 1 and isinstance(given[0], str):
        words, first = normalise_name(listed), normalise_name(given[0])
        if not first or not (words == first or words.startswith(first + " ")):
            issues.append(_issue(
                "value", f"Le prénom « {given[0]} » n'est pas le premier des prénoms de naissance "
                f"« {listed} »", f'Given name "{given[0]}" is not the first of the birth first names '
                f'"{listed}"', f"{where}.given[0]"))
    return issues


def _check_reliability(resource: Mapping[str, Any], has_ins: bool) -> list[Issue]:
    expression = f"Patient.extension('{IDENTITY_RELIABILITY}')"
    on_status = f"{expression}.extension('identityStatus')"
    found = _extensions(resource, IDENTITY_RELIABILITY)
    if not found:
        return [_issue("required", "Extension de fiabilité de l'identité absente",
                       "Identity reliability extension missing", expression)] if has_ins else []
    issues: list[Issue] = []
    statuses = []
    for part in found[0].get("extension") or []:
        if not isinstance(part, dict):
            continue
        coding: dict[str, Any] = part["valueCoding"] if isinstance(part.get("valueCoding"), dict) else {}
        code, system = str(coding.get("code")), coding.get("system")
        if part.get("url") == "identityStatus":
            if system in _STATUS_SYSTEMS and code in IdentityStatus.__members__:
                statuses.append(IdentityStatus(code))
            else:
                issues.append(_issue(
                    "code-invalid", f"Statut d'identité inconnu « {code} » : attendu PROV, RECUP, VALI ou "
                    f"QUAL ({STATUS_SYSTEM})", f'Unknown identity status "{code}": expected PROV, RECUP, '
                    f"VALI or QUAL ({STATUS_SYSTEM})", on_status))
        elif part.get("url") == "validationMode" and code not in VALIDATION_MODES:
            modes = ", ".join(sorted(VALIDATION_MODES))
            issues.append(_issue("code-invalid", f"Mode de validation inconnu « {code} » : attendu l'un "
                                 f"de {modes}", f'Unknown validation mode "{code}": expected one of {modes}',
                                 f"{expression}.extension('validationMode')"))
    if not statuses and not issues:
        issues.append(_issue("required", "Statut d'identité (identityStatus) absent",
                             "Identity status (identityStatus) missing", on_status))
    flags = read_reliability(resource)[3]
    if len(flags) > 1:
        issues.append(_issue(
            "invariant", "Les attributs « identité douteuse » et « identité fictive » ne peuvent être "
            "cumulés (fr-core-identity-reliability-2)", 'The "doubtful" and "fictitious" identity '
            "attributes cannot be combined (fr-core-identity-reliability-2)",
            f"{expression}.extension('comment')"))
    if flags and statuses and statuses[0] is not IdentityStatus.PROV:
        flag, current = sorted(flags)[0], statuses[0].value
        issues.append(_issue(
            "invariant", f"Une identité marquée « {flag.label_fr} » doit rester provisoire (PROV), pas "
            f"{current} (fr-core-identity-reliability-1)", f'An identity flagged "{flag.label_en}" must '
            f"stay provisional (PROV), not {current} (fr-core-identity-reliability-1)", on_status))
    if statuses and statuses[0] in (IdentityStatus.RECUP, IdentityStatus.QUAL) and not has_ins:
        current = statuses[0].value
        issues.append(_issue(
            "business-rule", f"Une identité {current} a été récupérée par l'INSi et porte donc un "
            "matricule INS : identifiant INS absent", f"A {current} identity was retrieved through INSi "
            "and so carries an INS matricule: INS identifier missing", "Patient.identifier"))
    return issues


def _check_traits(resource: Mapping[str, Any], has_ins: bool) -> list[Issue]:
    issues = []
    gender, allowed = resource.get("gender"), INS_GENDERS if has_ins else GENDERS
    if gender is None:
        issues.append(_issue("required", "Sexe (gender) absent", "Gender missing", "Patient.gender"))
    elif gender not in allowed:
        issues.append(_issue("value", f"Sexe « {gender} » invalide : attendu {', '.join(allowed)}",
                             f'Invalid gender "{gender}": expected {", ".join(allowed)}', "Patient.gender"))
    born = resource.get("birthDate")
    if not isinstance(born, str):
        issues.append(_issue("required", "Date de naissance (birthDate) absente", "Birth date missing",
                             "Patient.birthDate"))
    elif len(born) != 10:
        issues.append(_issue("value", f"Date de naissance incomplète « {born} » : jour, mois et année "
                             f"attendus", f'Incomplete birth date "{born}": day, month and year expected',
                             "Patient.birthDate"))
    if has_ins and birthplace_code(resource) is None:
        issues.append(_issue("required", "Lieu de naissance (code INSEE) absent",
                             "Birthplace (INSEE code) missing", f"Patient.extension('{BIRTH_PLACE}')"))
    return issues


def check_patient_ins(resource: Mapping[str, Any], *, production: bool,
                      require_traits: bool = False) -> list[Issue]:
    """Every way ``resource`` departs from the FR Core Patient INS rules this server applies.

    The matricule, OID (test and demo OIDs are errors when ``production``), use and type of each INS
    identifier are checked; once an INS identifier is present (or ``require_traits`` is set) the traits
    FR Core makes mandatory must be there: official name with exactly one given name and the list of
    birth first names, gender, full birth date and, with an INS, the birthplace. The identity
    reliability extension is required with an INS and checked whenever present. Disagreements between
    the matricule and the traits are warnings.
    """
    if resource.get("resourceType") != "Patient":
        return [_issue("structure", "Une ressource Patient est attendue", "A Patient resource is expected",
                       "resourceType")]
    identifiers = ins_identifiers(resource)
    has_ins = bool(identifiers)
    issues: list[Issue] = []
    for ident in identifiers:
        issues.extend(_check_identifier(resource, ident, production))
    issues.extend(_check_name(resource, has_ins or require_traits))
    if has_ins or require_traits:
        issues.extend(_check_traits(resource, has_ins))
    issues.extend(_check_reliability(resource, has_ins))
    for ident in identifiers:
        issues.extend(_coherence(resource, ident))
    return issues
