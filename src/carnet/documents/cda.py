"""Safe reading of CDA R2 documents: the header (:class:`CdaHeader`) and a ``nonXMLBody``'s content.

Safety. A CDA comes from outside and is parsed before anything else is known about it, so:

* the size is checked first (:data:`MAX_BYTES` by default): larger input raises
  :class:`carnet.errors.TooLarge` without being parsed;
* any document type declaration (``<!DOCTYPE``, hence any ``<!ENTITY``) is refused outright with
  :class:`UnsafeXml`: CDA R2 has no DTD, and refusing it closes external entities (XXE), entity
  expansion bombs ("billion laughs") and external DTD fetches at once. The prolog is checked before
  parsing, and the parsed tree again, so that no encoding trick lets one through;
* the lxml parser itself is locked down: no entity substitution, no DTD loading or validation, no
  network, libxml2's default limits (``huge_tree`` off: at most 10 MB per text node and 256 levels),
  and a resolver that refuses every external resource;
* nothing is fetched or executed: processing instructions (``xml-stylesheet``) and comments are
  dropped.

Header. The CI-SIS reading of the header, element by element, is in :func:`read_header`; the
DocumentReference metadata it gives, and the comparison with supplied metadata, are in
:mod:`carnet.documents.cda_checks` (re-exported here as :func:`metadata_from_header`,
:func:`check_against_metadata` and :func:`check_header`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from lxml import etree

from carnet.documents.cda_checks import check_against_metadata, check_header, metadata_from_header
from carnet.documents.cda_model import (
    CdaHeader,
    CdaTime,
    Code,
    Encounter,
    InsIdentifier,
    InstanceId,
    NonXmlBody,
    Organization,
    Participant,
    Patient,
    PersonName,
    Place,
    ServiceEvent,
)
from carnet.errors import Invalid, Issue, TooLarge, Unprocessable
from carnet.identity import nir

__all__ = ["MAX_BYTES", "CdaHeader", "UnsafeXml", "check_against_metadata", "check_header",
           "metadata_from_header", "parse", "read_header", "safe_parser"]

HL7 = "urn:hl7-org:v3"
NS = {"h": HL7}
MAX_BYTES = 50 * 1024 * 1024
CONTENT_EXPRESSION = "DocumentReference.content[0].attachment"

# The prolog: BOM, XML declaration, comments, processing instructions and white space.
_PROLOG = re.compile(r"\A\ufeff?(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.DOTALL)


class UnsafeXml(Invalid):
    """XML constructs a CDA never needs and that open attacks: DTD, entities, external resources."""

    code = "security"


class _RefuseResolver(etree.Resolver):
    """Refuses every external resource the parser might ask for (DTD, entity, XInclude)."""

    def resolve(self, url: str, pubid: str, context: Any) -> Any:
        raise UnsafeXml(f"Ressource externe refusée « {url} » / External resource refused \"{url}\"")


def _text(fr: str, en: str) -> str:
    return f"{fr} / {en}"


def _unsafe(expression: str | None) -> UnsafeXml:
    text = _text("Document XML refusé : les déclarations DOCTYPE et ENTITY ne sont pas acceptées (un CDA R2 "
                 "n'a pas de DTD ; elles ouvrent aux entités externes et aux bombes d'entités)",
                 "XML document refused: DOCTYPE and ENTITY declarations are not accepted (CDA R2 has no DTD; "
                 "they open the way to external entities and entity-expansion bombs)")
    return UnsafeXml(text, issues=[Issue("error", "security", text, [expression] if expression else [])])


def _prolog(data: bytes) -> str:
    """The start of the document as text, in its own encoding (UTF-8 and single-byte encodings read
    byte for byte; UTF-16/32 recognised by their BOM or their zero bytes)."""
    head = data[:1 << 16].removeprefix(b"\xef\xbb\xbf")
    for marks, codec in (((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"), "utf-32"),
                         ((b"\xff\xfe", b"\xfe\xff"), "utf-16"),
                         ((b"<\x00\x00\x00",), "utf-32-le"), ((b"\x00\x00\x00<",), "utf-32-be"),
                         ((b"<\x00",), "utf-16-le"), ((b"\x00<",), "utf-16-be")):
        if head.startswith(marks):
            return head.decode(codec, errors="replace")
    return head.decode("latin-1")


def safe_parser() -> Any:
    """A new lxml parser in the locked-down configuration: no entity substitution, no DTD loading or
    validation, no network, libxml2's default size and depth limits, comments and processing
    instructions dropped, every external resource refused by the resolver."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_comments=True, remove_pis=True, collect_ids=False)
    parser.resolvers.add(_RefuseResolver())
    return parser


def parse(data: bytes, *, max_bytes: int = MAX_BYTES, expression: str | None = CONTENT_EXPRESSION) -> Any:
    """The root element of a CDA R2 document, parsed safely (see the module docstring).

    Raises TooLarge, UnsafeXml (DOCTYPE/ENTITY, external resources) or Invalid (not well-formed, not
    a ``ClinicalDocument`` in the ``urn:hl7-org:v3`` namespace).
    """
    where = [expression] if expression else []
    if len(data) > max_bytes:
        text = _text(f"Document CDA de {len(data)} octets : au plus {max_bytes} acceptés",
                     f"CDA document of {len(data)} bytes: at most {max_bytes} accepted")
        raise TooLarge(text, issues=[Issue("error", "too-costly", text, where)])
    prolog = _prolog(data)
    start = _PROLOG.match(prolog)
    rest = prolog[start.end():] if start else prolog
    if rest.startswith(("<!DOCTYPE", "<!ENTITY")):
        raise _unsafe(expression)
    parser = safe_parser()
    try:
        # The parser above is the safe configuration (no entities, no DTD, no network, default libxml2
        # limits) and DOCTYPE declarations were refused before this call.
        root = etree.fromstring(data, parser)
    except UnsafeXml:  # raised by the resolver: an external DTD or entity was asked for
        raise _unsafe(expression) from None
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if any(limit in message for limit in ("Resource limit exceeded", "Huge input", "Excessive depth")):
            text = _text(f"Document CDA refusé : limite de l'analyseur XML dépassée ({message})",
                         f"CDA document refused: XML parser limit exceeded ({message})")
            raise TooLarge(text, issues=[Issue("error", "too-costly", text, where)]) from None
        text = _text(f"Document CDA mal formé : {message}", f"Malformed CDA document: {message}")
        raise Invalid(text, issues=[Issue("error", "structure", text, where)]) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise _unsafe(expression)
    if root.tag != f"{{{HL7}}}ClinicalDocument":
        text = _text(f"Pas un document CDA R2 : élément racine {root.tag}, attendu ClinicalDocument ({HL7})",
                     f"Not a CDA R2 document: root element {root.tag}, expected ClinicalDocument ({HL7})")
        raise Invalid(text, issues=[Issue("error", "structure", text, where)])
    return root


def read_header(data: bytes, *, max_bytes: int = MAX_BYTES,
                expression: str | None = CONTENT_EXPRESSION) -> CdaHeader:
    """Parse ``data`` safely and read its header (and its ``nonXMLBody`` content, if any)."""
    return _Reader(expression).header(parse(data, max_bytes=max_bytes, expression=expression))


# -- Reading --------------------------------------------------------------------------------------

def _words(el: Any) -> str | None:
    """The text of an element, white space collapsed."""
    if el is None:
        return None
    text = " ".join("".join(el.itertext()).split())
    return text or None


def _attr(el: Any, name: str) -> str | None:
    if el is None:
        return None
    value = el.get(name)
    return value.strip() if value and value.strip() else None


class _Reader:
    def __init__(self, expression: str | None) -> None:
        self.expression = expression
        self.problems: list[Issue] = []

    def problem(self, fr: str, en: str, code: str = "value", severity: str = "error") -> None:
        where = [self.expression] if self.expression else []
        self.problems.append(Issue(severity, code, _text(fr, en), where))

    def ii(self, el: Any) -> InstanceId | None:
        root = _attr(el, "root")
        return InstanceId(root, _attr(el, "extension")) if root else None

    def ids(self, parent: Any, path: str = "h:id") -> tuple[InstanceId, ...]:
        if parent is None:
            return ()
        found = (self.ii(el) for el in parent.findall(path, NS))
        return tuple(i for i in found if i is not None)

    def code(self, el: Any) -> Code | None:
        code = _attr(el, "code")
        if code is None:
            return None
        return Code(code, _attr(el, "codeSystem"), _attr(el, "displayName"))

    def ts(self, el: Any, where: str, *, essential: bool = False) -> CdaTime | None:
        """The time of ``el/@value``; an unreadable one is an error where the metadata needs it
        (document date, service start), a warning elsewhere."""
        value = _attr(el, "value")
        if value is None:
            return None
        parsed = CdaTime.parse(value)
        if parsed is None:
            self.problem(f"Date invalide « {value} » dans {where} : attendu AAAAMMJJ[hhmm[ss]][+ZZZZ]",
                         f'Invalid timestamp "{value}" in {where}: expected YYYYMMDD[hhmm[ss]][+ZZZZ]',
                         severity="error" if essential else "warning")
        return parsed

    def name(self, el: Any) -> PersonName | None:
        if el is None:
            return None
        families: dict[str, str] = {}
        given_list: list[str] = []
        given: dict[str, str] = {}
        for part in el:
            if not isinstance(part.tag, str):
                continue
            local = etree.QName(part).localname
            text = _words(part)
            if not text:
                continue
            qualifiers = set((part.get("qualifier") or "").split())
            if local == "family":
                key = "BR" if "BR" in qualifiers else "CL" if qualifiers & {"CL", "SP"} else ""
                families.setdefault(key, text)
            elif local == "given":
                key = "BR" if "BR" in qualifiers else "CL" if "CL" in qualifiers else ""
                if key:
                    given.setdefault(key, text)
                else:
                    given_list.extend(text.split())
        return PersonName(
            birth_family=families.get("BR") or families.get(""),
            used_family=families.get("CL") or families.get(""),
            birth_given_names=tuple(given_list),
            first_birth_given=given.get("BR") or (given_list[0] if given_list else None),
            used_given=given.get("CL"),
            prefixes=tuple(t for t in (_words(p) for p in el.findall("h:prefix", NS)) if t),
            suffixes=tuple(t for t in (_words(s) for s in el.findall("h:suffix", NS)) if t),
        )

    def ins(self, ident: InstanceId) -> InsIdentifier | None:
        known = nir.INS_OIDS.get(ident.root)
        if known is None:
            return None
        value = ident.extension or ""
        where = f"recordTarget/patientRole/id[@root='{ident.root}']/@extension « {value} »"
        where_en = f'recordTarget/patientRole/id[@root="{ident.root}"]/@extension "{value}"'
        issues: list[Issue] = []
        try:
            nir.parse_matricule(value, expression=self.expression)
        except Unprocessable as exc:
            for issue in exc.issues:
                fr, sep, en = issue.diagnostics.partition(" / ")
                text = _text(f"Matricule INS du document CDA ({where}) : {fr}",
                             f"INS matricule of the CDA document ({where_en}): {en if sep else fr}")
                issues.append(Issue(issue.severity, issue.code, text, list(issue.expression)))
        try:
            matricule = nir.parse_matricule(value, verify_key=False)
        except Unprocessable:
            matricule = None
        return InsIdentifier(value, known, matricule, tuple(issues))

    def organization(self, el: Any) -> Organization | None:
        if el is None:
            return None
        return Organization(self.ids(el), _words(el.find("h:name", NS)),
                            self.code(el.find("h:standardIndustryClassCode", NS)))

    def participant(self, el: Any, entity: str, where: str) -> Participant | None:
        if el is None:
            return None
        assigned = el.find(f"h:{entity}", NS)
        if assigned is None:
            return None
        person = assigned.find("h:assignedPerson/h:name", NS)
        device = assigned.find("h:assignedAuthoringDevice", NS)
        device_name = None
        if device is not None:
            parts = [_words(device.find("h:softwareName", NS)),
                     _words(device.find("h:manufacturerModelName", NS))]
            device_name = " ".join(p for p in parts if p) or None
        return Participant(
            ids=self.ids(assigned), name=self.name(person), profession=self.code(assigned.find("h:code", NS)),
            time=self.ts(el.find("h:time", NS), f"{where}/time"),
            organization=self.organization(assigned.find("h:representedOrganization", NS)),
            device=device_name, function=self.code(el.find("h:functionCode", NS)))

    def patient(self, doc: Any) -> Patient | None:
        role = doc.find("h:recordTarget/h:patientRole", NS)
        if role is None:
            return None
        ids = self.ids(role)
        ins = tuple(x for x in (self.ins(i) for i in ids) if x is not None)
        person = role.find("h:patient", NS)
        if person is None:
            return Patient(ids, ins, None, None, None, None)
        place = person.find("h:birthplace/h:place", NS)
        birthplace = None
        if place is not None:
            addr = place.find("h:addr", NS)
            birthplace = Place(
                insee_code=_words(addr.find("h:county", NS)) if addr is not None else None,
                city=_words(addr.find("h:city", NS)) if addr is not None else None,
                name=_words(place.find("h:name", NS)),
                country=_words(addr.find("h:country", NS)) if addr is not None else None)
        return Patient(ids, ins, self.name(person.find("h:name", NS)),
                       _attr(person.find("h:administrativeGenderCode", NS), "code"),
                       self.ts(person.find("h:birthTime", NS), "recordTarget/patientRole/patient/birthTime"),
                       birthplace)

    def service_events(self, doc: Any) -> tuple[ServiceEvent, ...]:
        events = []
        for ev in doc.findall("h:documentationOf/h:serviceEvent", NS):
            where = "documentationOf/serviceEvent/effectiveTime"
            setting = None
            for org in ev.findall("h:performer/h:assignedEntity/h:representedOrganization", NS):
                setting = setting or self.code(org.find("h:standardIndustryClassCode", NS))
            events.append(ServiceEvent(self.code(ev.find("h:code", NS)),
                                       self.ts(ev.find("h:effectiveTime/h:low", NS), f"{where}/low",
                                               essential=True),
                                       self.ts(ev.find("h:effectiveTime/h:high", NS), f"{where}/high"),
                                       setting))
        return tuple(events)

    def encounter(self, doc: Any) -> Encounter | None:
        enc = doc.find("h:componentOf/h:encompassingEncounter", NS)
        if enc is None:
            return None
        facility = enc.find("h:location/h:healthCareFacility", NS)
        where = "componentOf/encompassingEncounter/effectiveTime"
        low_el = enc.find("h:effectiveTime/h:low", NS)
        if low_el is None:
            low_el = enc.find("h:effectiveTime", NS)
        return Encounter(
            low=self.ts(low_el, f"{where}/low"),
            high=self.ts(enc.find("h:effectiveTime/h:high", NS), f"{where}/high"),
            facility_ids=self.ids(facility),
            facility_type=self.code(facility.find("h:code", NS)) if facility is not None else None,
            location_name=(_words(facility.find("h:location/h:name", NS))
                           or _words(facility.find("h:serviceProviderOrganization/h:name", NS)))
            if facility is not None else None)

    def non_xml_body(self, doc: Any) -> NonXmlBody | None:
        text = doc.find("h:component/h:nonXMLBody/h:text", NS)
        if text is None:
            return None
        media_type = _attr(text, "mediaType")
        representation = (_attr(text, "representation") or "TXT").upper()
        reference = _attr(text.find("h:reference", NS), "value")
        raw = "".join(t for t in (text.text, *(c.tail for c in text)) if t)
        content = b""
        if representation == "B64":
            try:
                content = base64.b64decode("".join(raw.split()), validate=True)
            except (binascii.Error, ValueError):
                self.problem("Contenu base64 invalide dans component/nonXMLBody/text",
                             "Invalid base64 content in component/nonXMLBody/text", "structure")
        else:
            content = raw.encode("utf-8")
        return NonXmlBody(media_type, representation, content, reference)

    def header(self, doc: Any) -> CdaHeader:
        version = _attr(doc.find("h:versionNumber", NS), "value")
        version_number = None
        if version is not None:
            if version.isdigit():
                version_number = int(version)
            else:
                self.problem(f"Numéro de version invalide « {version} » (versionNumber)",
                             f'Invalid version number "{version}" (versionNumber)')
        events = self.service_events(doc)
        legal = self.participant(doc.find("h:legalAuthenticator", NS), "assignedEntity", "legalAuthenticator")
        authors = tuple(p for p in (self.participant(a, "assignedAuthor", "author")
                                    for a in doc.findall("h:author", NS)) if p is not None)
        # practiceSettingCode: the service event performer's organisation (CI-SIS), else the legal
        # authenticator's, else an author's.
        orgs = [legal.organization if legal else None, *(a.organization for a in authors)]
        setting = next((e.practice_setting for e in events if e.practice_setting), None) or next(
            (o.industry_class for o in orgs if o is not None and o.industry_class), None)
        custodian = doc.find("h:custodian/h:assignedCustodian/h:representedCustodianOrganization", NS)
        return CdaHeader(
            id=self.ii(doc.find("h:id", NS)), code=self.code(doc.find("h:code", NS)),
            title=_words(doc.find("h:title", NS)),
            effective_time=self.ts(doc.find("h:effectiveTime", NS), "effectiveTime", essential=True),
            confidentiality=self.code(doc.find("h:confidentialityCode", NS)),
            language=_attr(doc.find("h:languageCode", NS), "code"),
            set_id=self.ii(doc.find("h:setId", NS)), version_number=version_number,
            patient=self.patient(doc), authors=authors, custodian=self.organization(custodian),
            legal_authenticator=legal, service_events=events, encounter=self.encounter(doc),
            practice_setting=setting, template_ids=self.ids(doc, "h:templateId"),
            structured=doc.find("h:component/h:structuredBody", NS) is not None,
            non_xml_body=self.non_xml_body(doc), problems=tuple(self.problems))
