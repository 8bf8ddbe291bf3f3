"""From a CDA header to DocumentReference metadata, and back: what the header gives, what it says
wrong about itself, and where supplied metadata contradicts it.

========================================  ==========================================================
DocumentReference                         CDA header (CI-SIS reading)
========================================  ==========================================================
masterIdentifier                          ClinicalDocument/id: ``urn:ietf:rfc:3986`` + ``urn:oid:root``
                                          for a root alone; ``urn:oid:root`` + extension otherwise
                                          (*assumption*: the XDS uniqueId is then ``root^extension``)
type                                      code (J07)
category                                  class of the type by ASS_X04
date, content.attachment.creation         effectiveTime
securityLabel                             confidentialityCode (HL7 v3 N, R, V)
content.attachment.language, .title       languageCode, title
content.format                            for a nonXMLBody, by its media type (ASS_A12)
subject.identifier                        recordTarget/patientRole/id with an INS OID root
author (by identifier)                    author/assignedAuthor/id (PS_IdNat for professionals)
authenticator (by identifier)             legalAuthenticator/assignedEntity/id
custodian (by identifier)                 custodian/.../representedCustodianOrganization/id
context.period                            documentationOf/serviceEvent/effectiveTime low, high
context.facilityType                      componentOf/encompassingEncounter/location/healthCareFacility/code
context.practiceSetting                   documentationOf/serviceEvent/performer/assignedEntity/
                                          representedOrganization/standardIndustryClassCode
========================================  ==========================================================

Every issue carries a French / English diagnostic naming the DocumentReference element and the
header element compared, and the FHIRPath expression of the DocumentReference element.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from carnet.documents import valuesets
from carnet.documents.cda_model import CdaHeader, CdaTime, Code, InstanceId, Participant
from carnet.errors import Issue, Unprocessable
from carnet.fhir.values import date_range, to_us
from carnet.identity import nir

CONTENT_EXPRESSION = "DocumentReference.content[0].attachment"
Resolve = Callable[[str], Mapping[str, Any] | None]


def _text(fr: str, en: str) -> str:
    return f"{fr} / {en}"


def _issue(fr: str, en: str, expression: str | None, code: str = "value", severity: str = "error") -> Issue:
    return Issue(severity, code, _text(fr, en), [expression] if expression else [])


def _system_url(code_system: str | None) -> str | None:
    if not code_system:
        return None
    known = valuesets.code_system(code_system)
    if known is not None:
        return known.url
    return code_system if ":" in code_system else f"urn:oid:{code_system}"


def _coding(code: Code, concept: valuesets.Concept | None) -> dict[str, str]:
    if concept is not None:
        return concept.coding()
    out = {"code": code.code}
    system = _system_url(code.code_system)
    if system:
        out["system"] = system
    if code.display_name:
        out["display"] = code.display_name
    return out


def _reference(who: Participant) -> dict[str, Any] | None:
    ident = next((i for i in who.ids if i.extension), who.ids[0] if who.ids else None)
    if ident is None:
        return None
    out: dict[str, Any] = {"identifier": ident.identifier()}
    display = who.name.display() if who.name else who.device
    if display:
        out["display"] = display
    return out


# -- Metadata from the header ---------------------------------------------------------------------

def metadata_from_header(header: CdaHeader) -> dict[str, Any]:
    """The DocumentReference elements the header gives (see the module table); absent ones are left out."""
    out: dict[str, Any] = {}
    if header.id is not None:
        out["masterIdentifier"] = header.id.identifier()
    if header.code is not None:
        dtype = valuesets.document_type(header.code.code, header.code.code_system)
        out["type"] = {"coding": [_coding(header.code, dtype)]}
        cls = valuesets.class_for_type(header.code.code, header.code.code_system)
        if cls is not None:
            out["category"] = [{"coding": [cls.coding()]}]
    if header.effective_time is not None:
        out["date"] = header.effective_time.to_fhir_instant()
    if header.confidentiality is not None:
        conf = header.confidentiality
        out["securityLabel"] = [{"coding": [_coding(conf, valuesets.confidentiality(conf.code,
                                                                                    conf.code_system))]}]
    ins = header.ins
    if ins is not None:
        out["subject"] = {"identifier": ins.identifier()}
    authors = [r for r in (_reference(a) for a in header.authors) if r is not None]
    if authors:
        out["author"] = authors
    if header.legal_authenticator is not None:
        authenticator = _reference(header.legal_authenticator)
        if authenticator is not None:
            out["authenticator"] = authenticator
    if header.custodian is not None and header.custodian.ids:
        custodian: dict[str, Any] = {"identifier": header.custodian.ids[0].identifier()}
        if header.custodian.name:
            custodian["display"] = header.custodian.name
        out["custodian"] = custodian
    attachment: dict[str, Any] = {}
    if header.language:
        attachment["language"] = header.language
    if header.title:
        attachment["title"] = header.title
    if header.effective_time is not None:
        attachment["creation"] = header.effective_time.to_fhir()
    content: dict[str, Any] = {"attachment": attachment}
    body = header.non_xml_body
    if body is not None and body.media_type:
        fmt = valuesets.format_for_media_type(body.media_type)
        if fmt is not None:
            content["format"] = fmt.coding()
    if attachment or "format" in content:
        out["content"] = [content]
    context: dict[str, Any] = {}
    low, high = header.service_period
    if low is not None:
        context["period"] = {"start": low.to_fhir(), **({"end": high.to_fhir()} if high is not None else {})}
    facility = header.encounter.facility_type if header.encounter else None
    if facility is not None:
        concept = valuesets.facility_type(facility.code, facility.code_system)
        context["facilityType"] = {"coding": [_coding(facility, concept)]}
    if header.practice_setting is not None:
        setting = header.practice_setting
        concept = valuesets.practice_setting(setting.code, setting.code_system)
        context["practiceSetting"] = {"coding": [_coding(setting, concept)]}
    if context:
        out["context"] = context
    return out


# -- What the header says wrong about itself ------------------------------------------------------

def check_header(header: CdaHeader, *, production: bool = False,
                 expression: str | None = CONTENT_EXPRESSION) -> list[Issue]:
    """Problems of the header itself: unreadable values, missing identifiers, an unknown or retired
    type, an unknown confidentiality code, an INS matricule whose layout or key is wrong (the message
    names the expected key), test and demo INS OIDs in production."""
    issues = list(header.problems)
    required = ((header.id, "id"), (header.code, "code"), (header.effective_time, "effectiveTime"))
    for present, element in required:
        if present is None:
            issues.append(_issue(f"En-tête CDA : ClinicalDocument/{element} absent",
                                 f"CDA header: ClinicalDocument/{element} is missing", expression,
                                 "required"))
    for check, code in (("type", header.code), ("confidentiality", header.confidentiality)):
        if code is None:
            continue
        try:
            if check == "type":
                valuesets.check_type(code.code, code.code_system, expression=expression or "")
            else:
                valuesets.check_code(check, code.code, code.code_system, expression=expression)
        except Unprocessable as exc:
            issues.extend(exc.issues)
    for ins in header.patient.ins if header.patient else ():
        issues.extend(ins.issues)
        if production:
            try:
                nir.check_oid(ins.oid.oid, production=True, expression=expression)
            except Unprocessable as exc:
                issues.extend(exc.issues)
    return issues


# -- Where supplied metadata contradicts the header -----------------------------------------------

def _bare(system: str) -> str:
    return system.strip().removeprefix("urn:oid:")


def _unique_id(identifier: Mapping[str, Any]) -> str | None:
    system, value = str(identifier.get("system") or ""), str(identifier.get("value") or "")
    if not value:
        return None
    if system == "urn:ietf:rfc:3986" or not system:
        return value.removeprefix("urn:oid:").removeprefix("urn:uuid:").lower()
    return f"{_bare(system)}^{value}" if system.startswith("urn:oid:") else value


def _contained(resource: Mapping[str, Any], reference: Mapping[str, Any] | None,
               resolve: Resolve | None) -> Mapping[str, Any] | None:
    ref = str((reference or {}).get("reference") or "")
    if ref.startswith("#"):
        return next((c for c in resource.get("contained") or [] if c.get("id") == ref[1:]), None)
    if ref and resolve is not None:
        return resolve(ref)
    return None


def _identifiers(resource: Mapping[str, Any], reference: Mapping[str, Any] | None,
                 resolve: Resolve | None) -> list[tuple[str, str]]:
    """(system without urn:oid:, value) of a reference: its logical identifier and the identifiers
    of the resource it points to (contained, or given by ``resolve``)."""
    found: list[Mapping[str, Any]] = []
    if reference and isinstance(reference.get("identifier"), Mapping):
        found.append(reference["identifier"])
    target = _contained(resource, reference, resolve)
    if target is not None:
        found.extend(i for i in target.get("identifier") or [] if isinstance(i, Mapping))
        practitioner = target.get("practitioner")
        if isinstance(practitioner, Mapping) and isinstance(practitioner.get("identifier"), Mapping):
            found.append(practitioner["identifier"])
    return [(_bare(str(i.get("system") or "")), "".join(str(i.get("value") or "").split()))
            for i in found if i.get("value")]


def _ids(ids: tuple[InstanceId, ...]) -> set[tuple[str, str]]:
    """(system without urn:oid:, value) of instance identifiers, as :func:`_identifiers` reads the
    metadata's: root and extension, or a root alone in its FHIR form (``InstanceId.identifier``:
    ``urn:ietf:rfc:3986``, ``urn:oid:root``), which is how :func:`_reference` derives it. Blanks
    in a value do not count, on either side ("8100 0000001" is 81000000001)."""
    out = set()
    for i in ids:
        ident = i.identifier()
        out.add((i.root, "".join(i.extension.split())) if i.extension
                else (_bare(ident["system"]), "".join(ident["value"].split())))
    return out


def _range(header_time: CdaTime) -> tuple[int, int]:
    return to_us(header_time.value), to_us(header_time.end) - 1


def _time_issue(label_fr: str, label_en: str, given: str | None, header_time: CdaTime | None,
                element: str, expression: str) -> Issue | None:
    if not given or header_time is None:
        return None
    span = date_range(given)
    if span is None:
        return None
    low, high = _range(header_time)
    if span[0] <= high and low <= span[1]:
        return None
    shown = header_time.to_fhir()
    return _issue(f"{label_fr} incohérente : métadonnées « {given} » ({expression}), en-tête CDA « {shown} » "
                  f"({element})",
                  f'{label_en} mismatch: metadata "{given}" ({expression}), CDA header "{shown}" ({element})',
                  expression)


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]


def _code_issues(label_fr: str, label_en: str, concepts: list[tuple[str, Any]], header_code: Code,
                 element: str) -> list[Issue]:
    """Codings of ``concepts`` in the header code's system must carry the header's code."""
    want = valuesets.code_system(header_code.code_system or "")
    issues = []
    for prefix, concept in concepts:
        for j, coding in enumerate(_codings(concept)):
            system = valuesets.code_system(str(coding.get("system") or ""))
            same_system = (system is not None and system == want) or (
                system is None and want is None
                and _bare(str(coding.get("system") or "")) == _bare(header_code.code_system or ""))
            if same_system and str(coding.get("code") or "") != header_code.code:
                expr = f"{prefix}.coding[{j}].code"
                issues.append(_issue(
                    f"{label_fr} incohérent : métadonnées « {coding.get('code')} » ({expr}), en-tête CDA "
                    f"« {header_code.code} » ({element})",
                    f'{label_en} mismatch: metadata "{coding.get("code")}" ({expr}), CDA header '
                    f'"{header_code.code}" ({element})', expr))
    return issues


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def check_against_metadata(header: CdaHeader, document_reference: Mapping[str, Any], *,
                           patient: Mapping[str, Any] | None = None,
                           resolve: Resolve | None = None) -> list[Issue]:
    """Where ``document_reference`` contradicts the header: masterIdentifier, patient INS, type,
    category, authors, dates (date, attachment.creation, context.period) and confidentiality.

    Elements absent from the metadata are not issues (:func:`metadata_from_header` fills them).
    ``patient`` is the Patient the subject designates, when the caller has it; ``resolve`` turns a
    literal reference (``Practitioner/123``) into its resource. An INS is compared with the INS
    identifiers found on the metadata side, authors with the identifiers of the DocumentReference's
    authors: one of the header's authors (person or organisation) must be among them.
    """
    dr = document_reference
    issues: list[Issue] = []
    master = dr.get("masterIdentifier")
    if isinstance(master, Mapping) and header.id is not None:
        given, want = _unique_id(master), header.id.unique_id
        if given is not None and given.lower() != want.lower():
            issues.append(_issue(
                f"Identifiant unique incohérent : métadonnées « {master.get('value')} » "
                f"(DocumentReference.masterIdentifier), en-tête CDA « {want} » (ClinicalDocument/id)",
                f'Unique id mismatch: metadata "{master.get("value")}" (DocumentReference.masterIdentifier), '
                f'CDA header "{want}" (ClinicalDocument/id)', "DocumentReference.masterIdentifier.value"))

    header_ins = {(i.oid.oid, nir.compact(i.value)) for i in (header.patient.ins if header.patient else ())}
    if header_ins:
        given_ids = _identifiers(dr, _map(dr.get("subject")), resolve)
        given_ids += _identifiers(dr, _map(_map(dr.get("context")).get("sourcePatientInfo")), None)
        if patient is not None:
            given_ids += [(_bare(str(i.get("system") or "")), "".join(str(i.get("value") or "").split()))
                          for i in patient.get("identifier") or [] if isinstance(i, Mapping)]
        given_ins = {(s, v.upper()) for s, v in given_ids if s in nir.INS_OIDS}
        if given_ins and not given_ins & header_ins:
            shown_given = ", ".join(f"{v} ({s})" for s, v in sorted(given_ins))
            shown_header = ", ".join(f"{v} ({s})" for s, v in sorted(header_ins))
            issues.append(_issue(
                f"INS du patient incohérent : métadonnées {shown_given} (DocumentReference.subject), en-tête "
                f"CDA {shown_header} (recordTarget/patientRole/id)",
                f"Patient INS mismatch: metadata {shown_given} (DocumentReference.subject), CDA header "
                f"{shown_header} (recordTarget/patientRole/id)", "DocumentReference.subject"))

    if header.code is not None:
        types = [("DocumentReference.type", dr.get("type"))]
        issues += _code_issues("Type de document", "Document type", types, header.code,
                               "ClinicalDocument/code")
        derived = valuesets.class_for_type(header.code.code, header.code.code_system)
        if derived is not None:
            cls_code = Code(derived.code, derived.system.oid)
            categories = [(f"DocumentReference.category[{i}]", c)
                          for i, c in enumerate(dr.get("category") or [])]
            issues += _code_issues("Classe de document", "Document class", categories, cls_code,
                                   "ClinicalDocument/code, par ASS_X04 / through ASS_X04")
    if header.confidentiality is not None:
        labels = [(f"DocumentReference.securityLabel[{i}]", c)
                  for i, c in enumerate(dr.get("securityLabel") or [])]
        issues += _code_issues("Niveau de confidentialité", "Confidentiality", labels,
                               header.confidentiality, "ClinicalDocument/confidentialityCode")

    issues += _author_issues(header, dr, resolve)

    contents = [c for c in dr.get("content") or [] if isinstance(c, Mapping)]
    period = _map(_map(dr.get("context")).get("period"))
    low, high = header.service_period
    created = header.effective_time
    checks: list[tuple[str, str, Any, CdaTime | None, str, str]] = [
        ("Date du document", "Document date", dr.get("date"), created, "ClinicalDocument/effectiveTime",
         "DocumentReference.date"),
        ("Date de début de l'acte", "Service start", period.get("start"), low,
         "documentationOf/serviceEvent/effectiveTime/low", "DocumentReference.context.period.start"),
        ("Date de fin de l'acte", "Service end", period.get("end"), high,
         "documentationOf/serviceEvent/effectiveTime/high", "DocumentReference.context.period.end"),
    ]
    for i, content in enumerate(contents):
        checks.append(("Date de création", "Creation date", _map(content.get("attachment")).get("creation"),
                       created, "ClinicalDocument/effectiveTime",
                       f"DocumentReference.content[{i}].attachment.creation"))
    for label_fr, label_en, given, header_time, element, expression in checks:
        text = given if isinstance(given, str) else None
        found = _time_issue(label_fr, label_en, text, header_time, element, expression)
        if found is not None:
            issues.append(found)
    return issues


def _author_issues(header: CdaHeader, dr: Mapping[str, Any], resolve: Resolve | None) -> list[Issue]:
    header_ids: set[tuple[str, str]] = set()
    for author in header.authors:
        header_ids |= _ids(author.ids)
        if author.organization is not None:
            header_ids |= _ids(author.organization.ids)
    given_ids: set[tuple[str, str]] = set()
    for ref in dr.get("author") or []:
        if isinstance(ref, Mapping):
            given_ids |= {(s, v) for s, v in _identifiers(dr, ref, resolve)}
    if not header_ids or not given_ids or header_ids & given_ids:
        return []
    shown_given = ", ".join(f"{v} ({s})" for s, v in sorted(given_ids))
    shown_header = ", ".join(f"{v} ({s})" for s, v in sorted(header_ids))
    return [_issue(f"Auteur incohérent : métadonnées {shown_given} (DocumentReference.author), en-tête CDA "
                   f"{shown_header} (author/assignedAuthor/id, representedOrganization/id)",
                   f"Author mismatch: metadata {shown_given} (DocumentReference.author), CDA header "
                   f"{shown_header} (author/assignedAuthor/id, representedOrganization/id)",
                   "DocumentReference.author")]
