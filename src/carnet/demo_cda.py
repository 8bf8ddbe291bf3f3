"""Structured CDA R2 documents for ``carnet demo``, built from real ANS CI-SIS examples.

Two templates, package data in ``demo_data/cda/`` (see its PROVENANCE.md): the synthèse médicale
(VSM) for adults, the child's measures of the carnet de santé (CSE-MDE) for minors. The template is
parsed with the server's own safe parser (:func:`carnet.documents.cda.parse`, which also drops its
comments and processing instructions) and its header rewritten for the demo patient:

* ``id`` and ``setId``: UUIDs given by the caller (derived from the seed), ``versionNumber`` 1;
* every date of the header (``effectiveTime``, the authors', signers' and participants' ``time``, the
  service event's and the encounter's): the document's date;
* ``recordTarget``: the patient's INS (matricule under the demo INS OID) as the only identifier, birth
  names in the INS form (capitals, no diacritics), sex, birth date, birthplace, address and
  telephone; for a minor the parent as ``guardian``; the example's ``informant`` elements (relatives
  of the example patient) are left out;
* every professional (an entity whose ``id`` is a PS_IdNat) becomes the demo author, and every
  organisation (an ``id`` under the structure IdNat OID) the author's practice, with its address,
  telephone and the ``AMBULATOIRE`` practice setting; the encounter is ``AMB`` in a group practice.

The body (narrative sections and entries) is kept as in the template.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from lxml import etree

from carnet.directory import keys
from carnet.documents import cda

if TYPE_CHECKING:
    from carnet.demo_people import DemoDirectory, DemoIdentity

TEMPLATES = Path(__file__).with_name("demo_data") / "cda"
ADULT_TEMPLATE = "VSM_1.4_2022.01.xml"
CHILD_TEMPLATE = "CSE-MDE_2023.01.xml"
PARIS = ZoneInfo("Europe/Paris")
HL7 = cda.HL7
NS = cda.NS
PROFESSION_SYSTEM = "1.2.250.1.213.1.1.4.5"  # TRE_G15 profession / TRE_R38 specialty, as CI-SIS codes it
PRACTICE_SETTING = ("AMBULATOIRE", "Ambulatoire", "1.2.250.1.213.1.1.4.9")  # TRE_A01-CadreExercice
FACILITY = ("SA08", "Cabinet de groupe", "1.2.250.1.71.4.2.4")  # TRE_R02-SecteurActivite
ENCOUNTER = ("AMB", "Ambulatoire (hors établissement)", "2.16.840.1.113883.5.4")  # HL7 ActCode
GENDER = {"female": ("F", "Féminin"), "male": ("M", "Masculin")}
GENDER_SYSTEM = "2.16.840.1.113883.5.1"
# Header elements whose time values are the document's date.
_TIMES = {"time", "low", "high", "effectiveTime"}


@dataclass(frozen=True)
class Address:
    lines: tuple[str, ...]
    postal_code: str | None
    city: str | None


@dataclass(frozen=True)
class Author:
    """The demo professional who writes the documents, and the practice that keeps them."""

    reference: str  # Practitioner/<id>
    idnat: str  # PS_IdNat: "8" + RPPS
    prefix: str | None  # civility (M, MME)
    given: str | None
    family: str
    suffix: str | None  # title (DR)
    code: str  # G15_<profession>/<specialty>
    code_display: str
    organization_idnat: str  # IdNat_Struct: "1" + FINESS, "3" + SIRET
    organization_name: str
    address: Address | None
    phone: str | None


@dataclass(frozen=True)
class Person:
    """What the header says of the patient (and of a minor's guardian)."""

    birth_family: str  # INS form
    birth_given: tuple[str, ...]  # INS form
    sex: str  # FHIR gender
    birth_date: date
    birthplace_code: str | None
    birthplace_name: str | None
    address: Address | None
    phone: str | None


@dataclass(frozen=True)
class Guardian:
    family: str  # usual name
    given: str | None
    sex: str
    address: Address | None
    phone: str | None


@functools.cache
def _template(name: str) -> bytes:
    return (TEMPLATES / name).read_bytes()


def ts(when: datetime) -> str:
    """A CDA ``TS`` to the second with its offset."""
    return when.strftime("%Y%m%d%H%M%S%z")


def address_of(resource: dict[str, Any]) -> Address | None:
    """The first address of a FHIR resource."""
    found = next(iter(resource.get("address") or []), None)
    if not isinstance(found, dict):
        return None
    return Address(tuple(found.get("line") or ()), found.get("postalCode"), found.get("city"))


def phone_of(resource: dict[str, Any]) -> str | None:
    return next((t["value"] for t in resource.get("telecom") or [] if t.get("system") == "phone"), None)


def author_of(directory: DemoDirectory, role: str = "10/L") -> Author:
    """The demo professional of ``role`` (``"<profession>/<L|S>"``, by default the libéral physician, every
    adult's médecin traitant) and the practice of that role, from the demo directory."""
    from carnet.demo_access import roles

    reference = roles(directory)[role]
    resources = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
                 for e in directory.bundle["entry"]}
    practitioner = resources[reference]
    situation = next(r for r in resources.values() if r["resourceType"] == "PractitionerRole"
                     and r["practitioner"]["reference"] == reference)
    organization = resources[situation["organization"]["reference"]]
    idnat = next(i["value"] for i in practitioner["identifier"]
                 if i["system"] == f"urn:oid:{keys.PS_IDNAT_OID}")
    org_idnat = next(i["value"] for i in organization["identifier"]
                     if i["system"] == f"urn:oid:{keys.STRUCTURE_IDNAT_OID}")
    profession = role.split("/")[0]
    code, display = f"G15_{profession}", keys.profession(profession).label_fr
    for concept in situation.get("specialty") or []:
        coding = concept["coding"][0]
        code, display = f"{code}/{coding['code']}", f"{display} - {coding.get('display') or coding['code']}"
        break
    name = practitioner["name"][0]
    return Author(reference, idnat, next(iter(name.get("prefix") or []), None),
                  next(iter(name.get("given") or []), None), name["family"],
                  next(iter(name.get("suffix") or []), None), code, display, org_idnat, organization["name"],
                  address_of(organization), phone_of(organization))


def person_of(identity: DemoIdentity, patient: dict[str, Any]) -> Person:
    """The header's view of a demo patient: INS traits, and the address and telephone of the record."""
    from carnet.demo_people import BIRTHPLACES

    t = identity.traits
    places = dict(BIRTHPLACES)
    return Person(t.birth_family_name, tuple(t.birth_given_names), t.sex, t.birth_date, t.birthplace_code,
                  places.get(t.birthplace_code or ""), address_of(patient), phone_of(patient))


def guardian_of(parent: dict[str, Any]) -> Guardian:
    """A minor's parent, from the parent's Patient resource (everyday name)."""
    names = parent.get("name") or []
    usual = next((n for n in names if n.get("use") == "usual"), names[0] if names else {})
    return Guardian(str(usual.get("family") or ""), next(iter(usual.get("given") or []), None),
                    str(parent.get("gender") or ""), address_of(parent), phone_of(parent))


def _h(tag: str) -> str:
    return f"{{{HL7}}}{tag}"


def _sub(parent: Any, tag: str, text: str | None = None, **attrs: str) -> Any:
    el = etree.SubElement(parent, _h(tag), attrs)
    if text is not None:
        el.text = text
    return el


def _new(tag: str, **attrs: str) -> Any:
    return etree.Element(_h(tag), attrs, nsmap={None: HL7})


def _replace(parent: Any, tag: str, new: list[Any]) -> None:
    """Replace the ``tag`` children of ``parent`` by ``new``, where the first of them was (or at the end)."""
    old = parent.findall(f"h:{tag}", NS)
    index = list(parent).index(old[0]) if old else len(parent)
    for el in old:
        parent.remove(el)
    for k, el in enumerate(new):
        parent.insert(index + k, el)


def _addr(address: Address | None, use: str | None = None) -> list[Any]:
    if address is None:
        return []
    el = _new("addr", **({"use": use} if use else {}))
    for line in address.lines:
        _sub(el, "streetAddressLine", line)
    if address.postal_code:
        _sub(el, "postalCode", address.postal_code)
    if address.city:
        _sub(el, "city", address.city)
    _sub(el, "country", "FRANCE")
    return [el]


def _tel(phone: str | None, use: str) -> list[Any]:
    return [_new("telecom", value=f"tel:{phone}", use=use)] if phone else []


def _patient_role(role: Any, person: Person, ins: tuple[str, str], guardian: Guardian | None) -> None:
    oid, matricule = ins
    _replace(role, "id", [_new("id", root=oid, extension=matricule)])
    _replace(role, "addr", _addr(person.address, "H"))
    _replace(role, "telecom", _tel(person.phone, "MC"))
    patient = role.find("h:patient", NS)
    name = _new("name")
    _sub(name, "family", person.birth_family, qualifier="BR")
    _sub(name, "given", " ".join(person.birth_given))
    _sub(name, "given", person.birth_given[0], qualifier="BR")
    _sub(name, "family", person.birth_family, qualifier="CL")
    _sub(name, "given", person.birth_given[0], qualifier="CL")
    _replace(patient, "name", [name])
    code, display = GENDER.get(person.sex, ("UN", "Indéterminé"))
    _replace(patient, "administrativeGenderCode",
             [_new("administrativeGenderCode", code=code, displayName=display, codeSystem=GENDER_SYSTEM)])
    _replace(patient, "birthTime", [_new("birthTime", value=person.birth_date.strftime("%Y%m%d"))])
    for old in patient.findall("h:guardian", NS):
        patient.remove(old)
    place = None
    if person.birthplace_code:
        place = _new("birthplace")
        addr = _sub(_sub(place, "place"), "addr")
        _sub(addr, "county", person.birthplace_code)
        if person.birthplace_name:
            abroad = person.birthplace_code.startswith("99")
            _sub(addr, "country" if abroad else "city", person.birthplace_name)
    _replace(patient, "birthplace", [place] if place is not None else [])
    if guardian is not None:
        el = _new("guardian")
        for part in (*_addr(guardian.address, "H"), *_tel(guardian.phone, "MC")):
            el.append(part)
        gname = _sub(_sub(el, "guardianPerson"), "name")
        _sub(gname, "prefix", "MME" if guardian.sex == "female" else "M")
        _sub(gname, "family", guardian.family)
        if guardian.given:
            _sub(gname, "given", guardian.given)
        after = patient.find("h:birthTime", NS)
        patient.insert(list(patient).index(after) + 1, el)


def _professional(entity: Any, author: Author) -> None:
    """An assignedAuthor/assignedEntity/associatedEntity naming a PS: the demo author."""
    entity.find("h:id", NS).set("extension", author.idnat)
    code = entity.find("h:code", NS)
    if code is not None:
        code.attrib.clear()
        code.attrib.update({"code": author.code, "displayName": author.code_display,
                            "codeSystem": PROFESSION_SYSTEM})
    if entity.find("h:addr", NS) is not None:
        _replace(entity, "addr", _addr(author.address))
    if entity.find("h:telecom", NS) is not None:
        _replace(entity, "telecom", _tel(author.phone, "WP"))
    for person in ("assignedPerson", "associatedPerson"):
        found = entity.find(f"h:{person}", NS)
        if found is None:
            continue
        name = _new("name")
        if author.prefix:
            _sub(name, "prefix", author.prefix)
        if author.given:
            _sub(name, "given", author.given)
        _sub(name, "family", author.family)
        if author.suffix:
            _sub(name, "suffix", author.suffix)
        _replace(found, "name", [name])


def _organization(org: Any, author: Author) -> None:
    """An organisation with a national structure identifier: the author's practice."""
    org.find("h:id", NS).set("extension", author.organization_idnat)
    name = org.find("h:name", NS)
    if name is not None:
        name.text = author.organization_name
    if org.find("h:telecom", NS) is not None:
        _replace(org, "telecom", _tel(author.phone, "WP"))
    if org.find("h:addr", NS) is not None:
        _replace(org, "addr", _addr(author.address))
    setting = org.find("h:standardIndustryClassCode", NS)
    if setting is not None:
        code, display, system = PRACTICE_SETTING
        setting.attrib.clear()
        setting.attrib.update({"code": code, "displayName": display, "codeSystem": system})


def _encounter(root: Any, author: Author, when: datetime) -> None:
    enc = root.find("h:componentOf/h:encompassingEncounter", NS)
    if enc is None:
        return
    code = enc.find("h:code", NS)
    if code is not None:
        value, display, system = ENCOUNTER
        code.attrib.clear()
        code.attrib.update({"code": value, "displayName": display, "codeSystem": system})
    period = enc.find("h:effectiveTime", NS)
    if period is not None:
        period.attrib.pop("value", None)
        for child in list(period):
            period.remove(child)
        _sub(period, "low", value=ts(when - timedelta(minutes=20)))
        _sub(period, "high", value=ts(when))
    facility = enc.find("h:location/h:healthCareFacility", NS)
    if facility is not None:
        fcode = facility.find("h:code", NS)
        if fcode is not None:
            value, display, system = FACILITY
            fcode.attrib.clear()
            fcode.attrib.update({"code": value, "displayName": display, "codeSystem": system})
        place = facility.find("h:location", NS)
        if place is not None:
            name = place.find("h:name", NS)
            if name is not None:
                name.text = author.organization_name
            if place.find("h:addr", NS) is not None:
                _replace(place, "addr", _addr(author.address))


def _indent(root: Any) -> None:
    """Lay the header out again (elements were replaced); the body is left as it was."""
    last_line = (root.text or "\n").rsplit("\n", 1)[-1]
    space = last_line if last_line.strip() == "" and last_line else "\t"
    root.text = "\n" + space
    for child in root:
        if child.tag == _h("component"):
            child.tail = "\n"
            break
        etree.indent(child, space=space, level=1)
        child.tail = "\n" + space


def build(template: str, person: Person, ins: tuple[str, str], author: Author, *, document_id: uuid.UUID,
          set_id: uuid.UUID, when: datetime, guardian: Guardian | None = None) -> bytes:
    """The template's document for ``person`` (INS ``(oid, matricule)``), written by ``author`` at
    ``when`` (timezone-aware), as UTF-8 XML bytes."""
    root = cda.parse(_template(template))
    _replace(root, "id", [_new("id", root=str(document_id).upper())])
    _replace(root, "setId", [_new("setId", root=str(set_id).upper())])
    _replace(root, "versionNumber", [_new("versionNumber", value="1")])
    for informant in root.findall("h:informant", NS):
        root.remove(informant)
    header = [el for el in root if isinstance(el.tag, str) and el.tag != _h("component")]
    stamp = ts(when)
    for top in header:
        for el in top.iter(*(_h(t) for t in _TIMES)):
            if el.get("value"):
                el.set("value", stamp)
    root.find("h:effectiveTime", NS).set("value", stamp)
    for top in header:
        for el in top.iter():
            ident = el.find("h:id", NS) if isinstance(el.tag, str) else None
            if ident is None:
                continue
            if ident.get("root") == keys.PS_IDNAT_OID:
                _professional(el, author)
            elif ident.get("root") == keys.STRUCTURE_IDNAT_OID:
                _organization(el, author)
    _encounter(root, author, when)
    _patient_role(root.find("h:recordTarget/h:patientRole", NS), person, ins, guardian)
    _indent(root)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
