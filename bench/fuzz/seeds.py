"""Seed inputs of the fuzz harnesses, from which the committed corpora were grown and minimised.

* matricule: every matricule of ``tests/fixtures/fr-ins-nir`` (fictitious test identities of the ANS
  examples and python-stdnum's vectors), written as given, formatted, in lower case, with no-break
  spaces, cut short; and made-up ones for each layout rule (Corsica, overseas, born abroad,
  provisional, incomplete civil records).
* search: the search strings of the test suite and of the benchmarks, and a few more for the
  modifiers, prefixes, chains, includes and escapes they do not cover.
* cda and cda_html: small CDA R2 documents written here (no published example is copied): a full
  CI-SIS header, structured and unstructured bodies, a narrative with every element of the CDA
  narrative block and hostile content (script, event handlers, ``javascript:`` links, XHTML and
  SVG), and the refusals (DOCTYPE, entities, other roots, encodings).

``.venv/bin/python bench/fuzz/run.py TARGET --reseed`` adds them to the run's corpus.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INS_FIXTURES = REPO / "tests" / "fixtures" / "fr-ins-nir"

# -- matricule ------------------------------------------------------------------------------------


def _key(first13: str) -> str:
    digits = first13[:5] + {"2A": "19", "2B": "18"}.get(first13[5:7], first13[5:7]) + first13[7:]
    return f"{97 - int(digits) % 97:02d}"


def matricules() -> Iterator[bytes]:
    values: list[str] = []
    ids = json.loads((INS_FIXTURES / "ins-identities.json").read_text(encoding="utf-8"))
    values += [i["matricule"] for i in ids["identities"]]
    vectors = json.loads((INS_FIXTURES / "nir-vectors.json").read_text(encoding="utf-8"))
    values += [v["input"] for v in vectors["vectors"]]
    made = ["1841276451089", "2850399100001", "18412761230", "284022A00412", "17501971231",
            "280129912312", "2920998401234", "8990375056012", "7052275056001", "1843399123456",
            "1992233123123", "2009950001001"]
    values += [m + _key(m) for m in made if len(m) == 13]
    values += made
    for v in list(values):
        if len(v) == 15:
            values += [" ".join((v[0], v[1:3], v[3:5], v[5:7], v[7:10], v[10:13], v[13:])), v.lower(),
                       v[:7] + "\u00a0" + v[7:], v[:13], v[:13] + "00", "\t" + v + "\n"]
    for value in dict.fromkeys(values):
        yield value.encode("utf-8")


# -- search ---------------------------------------------------------------------------------------

SEARCHES = """
AuditEvent?_id=forged
DocumentReference?_count=100
DocumentReference?_summary=count
DocumentReference?author.family=martin&author.given=jean
DocumentReference?author.given:below=jo
DocumentReference?patient=Patient/ex-patient&status=current
DocumentReference?patient=Patient/p1&type=http://loinc.org|11488-4&date=ge2025-01-01
DocumentReference?status.given=x
Encounter?_id=e1&_include=Encounter:subject
List?source:Device.family=x
List?sourceId:exact=urn:oid:1.2.3.4
Observation?_count=1&_total=accurate
Observation?_count=2&_sort=_id
Observation?_id=o1&_include=Observation:subject
Observation?code:text=frequence
Observation?code=http://loinc.org|29463-7
Observation?date=2024-01-15T09:00:00Z
Observation?date=ge2025-01-15&date=le2025-01-20
Observation?date=gt2025-02-01
Observation?date=ap2025-03
Observation?status=final,preliminary
Observation?subject.gender=female
Observation?subject.name=lefevre&code=29463-7
Observation?subject:Patient.identifier=urn:ipp|42
Observation?subject:Patient=p3
Observation?subject=Patient/p1&code=http://loinc.org|29463-7&_sort=-date
Observation?subject=Patient/p1&date=ge2025-01-01&_count=50
Observation?subject=http://127.0.0.1/fhir/Patient/p1/_history/2
Observation?value-quantity:missing=true
Observation?value-quantity=60|http://unitsofmeasure.org|kg
Observation?value-quantity=72||/min
Observation?value-quantity=ap79
Observation?value-quantity=le6.0e1
Organization?address-postalcode=76
Patient?_count=-1
Patient?_id=p1&_elements=gender
Patient?_id=p1&_revinclude=Observation:subject
Patient?_id:not=p1,p3
Patient?_include=Nope:subject
Patient?_include:iterate=*
Patient?_revinclude:iterate=PractitionerRole:practitioner:Practitioner
Patient?_lastUpdated=gt2000-01-01
Patient?_sort=-birthdate,family
Patient?_summary=count
Patient?_summary=true
Patient?_total=estimate
Patient?_offset=20&_snapshot=1700000000000000
Patient?_contained=true
Patient?active:missing=false
Patient?birthdate=eb1975-06-30
Patient?birthdate=ne1975
Patient?birthdate=sa1975-12-31
Patient?birthdate=1980-04-12T10:30:00+02:00
Patient?family:exact=Martin
Patient?family:sounds=x
Patient?family=mart&given=jean
Patient?family=martin,lefevre
Patient?family=l%C3%A9f%C3%A8vre
Patient?family=a\\,b&given=c\\|d
Patient?gender:not=male
Patient?gender:text=fem
Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NH|280047512345612
Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518989
Patient?identifier=|IPP-2
Patient?identifier=http://hopital.example/ipp|
Patient?name:contains=arti
Patient?general-practitioner:Practitioner.family=durand
Patient?general-practitioner.identifier=urn:oid:1.2.250.1.71.4.2.1|810000000001
Patient?link:Patient=p2
Practitioner?family=martin&family=martinez&given=jean
Practitioner?name=helene&family=durand
PractitionerRole?practitioner:Practitioner.name=helene&practitioner:Practitioner.family=durand
PractitionerRole?organization.address-city=rouen
PractitionerRole?role=60&specialty=SM04
ValueSet?url:below=http://hl7.org/fhir
ValueSet?url:above=http://hl7.org/fhir/ValueSet/x
RiskAssessment?probability=gt0.5
"""


def searches() -> Iterator[bytes]:
    for line in SEARCHES.split():
        yield line.replace("\\\\", "\\").encode("utf-8")


# -- CDA ------------------------------------------------------------------------------------------

HL7 = "urn:hl7-org:v3"


def _person(family: str, given: str, extra: str = "") -> str:
    return (f'<name><prefix>M</prefix><given>{given}</given><family qualifier="BR">{family}</family>'
            f'<family qualifier="CL">{family}</family><suffix>DR</suffix>{extra}</name>')


def _header(*, ins: str = "279035121518989", oid: str = "1.2.250.1.213.1.4.10",
            time: str = "20240312101500+0100", code: str = "11488-4") -> str:
    author = ('<author><time value="20240312100000+0100"/><assignedAuthor>'
              '<id root="1.2.250.1.71.4.2.1" extension="810000000001"/>'
              '<code code="10" codeSystem="1.2.250.1.71.1.2.7" displayName="Médecin"/>'
              f'<assignedPerson>{_person("MARTIN", "Jean")}</assignedPerson>'
              '<representedOrganization><id root="1.2.250.1.71.4.2.2" extension="10000000001"/>'
              '<name>Centre de soins</name>'
              '<standardIndustryClassCode code="ETABLISSEMENT" codeSystem="1.2.250.1.213.1.1.4.9"/>'
              '</representedOrganization></assignedAuthor></author>')
    return (
        '<realmCode code="FR"/><typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
        '<templateId root="2.16.840.1.113883.2.8.2.1"/>'
        '<id root="1.2.250.1.999.1.1" extension="DOC-1"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1" displayName="Compte rendu"/>'
        '<title>Compte rendu &amp; synthèse</title>'
        f'<effectiveTime value="{time}"/>'
        '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>'
        '<languageCode code="fr-FR"/><setId root="1.2.250.1.999.1.2" extension="SET-1"/>'
        '<versionNumber value="1"/>'
        '<recordTarget><patientRole>'
        f'<id root="{oid}" extension="{ins}"/><id root="1.2.250.1.999.2" extension="IPP-1"/>'
        '<patient><name><given qualifier="BR">Dominique</given><given>Dominique Marie</given>'
        '<given qualifier="CL">Dom</given><family qualifier="BR">PAT-TROIS</family>'
        '<family qualifier="SP">DUPONT</family></name>'
        '<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
        '<birthTime value="19790328"/><birthplace><place><addr><county>51215</county>'
        '<city>Reims</city></addr></place></birthplace></patient></patientRole></recordTarget>'
        f'{author}'
        '<custodian><assignedCustodian><representedCustodianOrganization>'
        '<id root="1.2.250.1.71.4.2.2" extension="10000000001"/><name>Centre de soins</name>'
        '</representedCustodianOrganization></assignedCustodian></custodian>'
        '<legalAuthenticator><time value="20240312"/><signatureCode code="S"/><assignedEntity>'
        '<id root="1.2.250.1.71.4.2.1" extension="810000000001"/>'
        f'<assignedPerson>{_person("MARTIN", "Jean")}</assignedPerson></assignedEntity>'
        '</legalAuthenticator>'
        '<documentationOf><serviceEvent><code code="GLQP012" codeSystem="1.2.250.1.213.2.5"/>'
        '<effectiveTime><low value="20240312"/><high value="202403121030+100"/></effectiveTime>'
        '<performer typeCode="PRF"><assignedEntity><id root="1.2.250.1.71.4.2.1" extension="1"/>'
        '<representedOrganization><standardIndustryClassCode code="MEDECINE_GENERALE" '
        'codeSystem="1.2.250.1.213.1.1.4.9"/></representedOrganization></assignedEntity></performer>'
        '</serviceEvent></documentationOf>'
        '<componentOf><encompassingEncounter><effectiveTime><low value="20240311"/>'
        '<high value="20240312"/></effectiveTime><location><healthCareFacility>'
        '<code code="SA01" codeSystem="1.2.250.1.71.4.2.4"/><location><name>Service</name></location>'
        '</healthCareFacility></location></encompassingEncounter></componentOf>')


NARRATIVE = (
    '<paragraph styleCode="Bold Italics">Texte <content styleCode="Underline" revised="insert">inséré'
    '</content><content revised="delete">retiré</content><sub>2</sub><sup>3</sup><br/>'
    '<footnoteRef IDREF="n1"/><footnote ID="n1">note</footnote></paragraph>'
    '<list listType="ordered"><caption>Liste</caption><item>un</item><item>deux</item></list>'
    '<list><item styleCode="Emphasis">trois</item></list>'
    '<table border="1" onclick="alert(1)"><caption>Tableau</caption><thead><tr><th colspan="2">A'
    '</th></tr></thead><tbody><tr><td rowspan="1">1</td><td colspan="9999" style="x">2</td></tr>'
    '</tbody><tfoot><tr><td>fin</td></tr></tfoot></table>'
    '<linkHtml href="https://example.org/cr">le compte rendu</linkHtml>'
    '<linkHtml href="javascript:alert(1)">clic</linkHtml>'
    '<renderMultiMedia referencedObject="img1"><caption>Image</caption></renderMultiMedia>'
    '<script>alert("x")</script><style>p{}</style>'
    '<x:a xmlns:x="http://www.w3.org/1999/xhtml" href="javascript:alert(2)" onmouseover="x()">lien</x:a>'
    '<s:svg xmlns:s="http://www.w3.org/2000/svg"><s:script>alert(3)</s:script></s:svg>'
    '<paragraph>&lt;script&gt;alert(4)&lt;/script&gt; &amp; "quotes" \'single\'</paragraph>')


def _structured(narrative: str = NARRATIVE) -> str:
    return ('<component><structuredBody><component><section><code code="x"/><title>Motif</title>'
            f'<text>{narrative}</text><entry><observation classCode="OBS"/></entry>'
            '<component><section><title>Sous-section</title><text>détail</text></section></component>'
            '</section></component></structuredBody></component>')


def _non_xml(content: str, representation: str = "B64", media: str = "application/pdf") -> str:
    return (f'<component><nonXMLBody><text mediaType="{media}" representation="{representation}">'
            f'{content}</text></nonXMLBody></component>')


def _doc(header: str, body: str, prolog: str = '<?xml version="1.0" encoding="UTF-8"?>') -> bytes:
    return (f'{prolog}<ClinicalDocument xmlns="{HL7}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f'{header}{body}</ClinicalDocument>').encode()


def cdas() -> Iterator[bytes]:
    pdf = base64.b64encode(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n").decode()
    header = _header()
    yield _doc(header, _structured())
    yield _doc(header, _non_xml(pdf))
    yield _doc(header, _non_xml("pas du base64 !"))
    yield _doc(header, _non_xml("Texte brut", "TXT", "text/plain"))
    yield _doc(_header(ins="2840122A004123", oid="1.2.250.1.213.1.4.8", time="2024"), _structured("x"))
    yield _doc(_header(ins="184127645108946", oid="1.2.250.1.213.1.4.9", time="202403121015"), "")
    yield _doc(_header(ins="253072B07300470", oid="1.2.250.1.213.1.4.11", time="20241301"), _structured(""))
    yield _doc(_header(ins="1 84 12 76 451 089 46", time="20240312101530.123-0500", code="99999-9"), "")
    yield _doc(_header(time="not a time", code=""), _structured("<paragraph/>"))
    yield _doc("<id/><code/><versionNumber value='x'/>", "")
    yield _doc("", "")
    yield b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>'
    yield b"<ClinicalDocument/>"
    yield (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
           b'<ClinicalDocument xmlns="urn:hl7-org:v3">&a;</ClinicalDocument>')
    yield b'<!-- c --><?pi x?><!DOCTYPE ClinicalDocument SYSTEM "http://127.0.0.1/x.dtd"><ClinicalDocument/>'
    yield b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&ext;</title></ClinicalDocument>'
    yield b'<x:include xmlns:x="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>'
    yield _doc(header, _structured(), '<?xml version="1.0" encoding="ISO-8859-1"?>').replace(
        "è".encode(), b"\xe8")
    yield '<?xml version="1.0" encoding="UTF-16"?>'.encode("utf-16") + _doc(header, "", "").decode().encode(
        "utf-16")[2:]
    yield b"\xef\xbb\xbf" + _doc(header, _structured("<paragraph>BOM</paragraph>"), "")
    yield b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title>" + b"<a>" * 300 + b"</title></ClinicalDocument>"
    yield b"not xml at all"


TARGETS = {"matricule": matricules, "search": searches, "cda": cdas, "cda_html": cdas}


def write(target: str, folder: Path) -> int:
    """Write the seeds of ``target`` into ``folder`` (named by their SHA-1, as libFuzzer names
    its units); returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for data in TARGETS[target]():
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        n += 1
    return n
