"""CDA R2 header reading on ANS CI-SIS examples: every value read is checked against the XML itself
(XPath in the test), the metadata derived from the header says what the header says, contradictions
with supplied metadata are named, wrong INS keys are reported with the expected key."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from carnet.documents import cda
from carnet.documents.cda_model import CdaTime

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "cda-r2"
DATA = json.loads((ROOT / "src/carnet/documents/data/valuesets.json").read_text(encoding="utf-8"))
NS = {"h": "urn:hl7-org:v3"}
INS_OIDS = {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
PS_IDNAT = "1.2.250.1.71.4.2.1"
URL_OF_OID = {s["oid"]: s["url"] for s in DATA["code_systems"]}
CLASS_OF_TYPE = {(c["system"], c["code"]): c["class"] for c in DATA["value_sets"]["type"]["concepts"]}
KEY_OF_OID = {s["oid"]: s["key"] for s in DATA["code_systems"]}
A03_URL = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"

# What each example is chosen for (see tests/fixtures/cda-r2/PROVENANCE.md), read by hand.
EXAMPLES = {
    "DOC_NON_STRUCTURE_CDA-R2-N1.xml": {"type": "11502-2", "class": "10", "key_valid": True, "body": "application/pdf"},
    "VSM_1.4_2022.01.xml": {"type": "SYNTH", "class": "11", "key_valid": True, "body": None},
    "BIO-TROD_2024.01_COVID-19.xml": {"type": "96173-0", "class": "52", "key_valid": True, "body": None},
    "CSE-MDE_2023.01.xml": {"type": "29274-8", "class": "10", "key_valid": False, "body": None},
    "CSE-CS9_2025.01.xml": {"type": "CERT_DECL", "class": "52", "key_valid": False, "body": None},
}
FILES = sorted(EXAMPLES)


def _load(name: str) -> tuple[bytes, Any]:
    data = (FIXTURES / name).read_bytes()
    return data, etree.fromstring(data)


def _xp(doc: Any, path: str) -> list[Any]:
    return list(doc.xpath(path, namespaces=NS))


def _one(doc: Any, path: str) -> str | None:
    found = _xp(doc, path)
    if not found:
        return None
    value = found[0]
    return " ".join(str(value).split()) if isinstance(value, str) else " ".join("".join(value.itertext()).split())


def _fhir_ts(ts: str) -> str:
    """A CI-SIS timestamp as FHIR writes it, by string surgery (not by the code under test)."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?(?:([+-])(\d{1,2})(\d{2}))?", ts)
    assert m, ts
    y, mo, d, h, mi, s, sign, oh, om = m.groups()
    if h is None:
        return f"{y}-{mo}-{d}"
    assert sign is not None, "the examples give offsets"
    return f"{y}-{mo}-{d}T{h}:{mi}:{s or '00'}{sign}{oh.zfill(2)}:{om}"


def _expected_key(matricule: str) -> str:
    return f"{97 - int(matricule[:13]) % 97:02d}"


@pytest.fixture(scope="module", params=FILES)
def example(request: pytest.FixtureRequest) -> tuple[str, bytes, Any, cda.CdaHeader]:
    data, doc = _load(request.param)
    return request.param, data, doc, cda.read_header(data)


# -- The header is what the XML says ---------------------------------------------------------------

def test_header_matches_the_xml(example: tuple[str, bytes, Any, cda.CdaHeader]) -> None:
    name, _, doc, h = example
    assert h.id is not None and h.id.root == _one(doc, "/h:ClinicalDocument/h:id/@root")
    assert h.id.extension == _one(doc, "/h:ClinicalDocument/h:id/@extension")
    assert h.unique_id == h.id.root  # none of these examples has an extension on its id
    assert h.code is not None and h.code.code == _one(doc, "/h:ClinicalDocument/h:code/@code") == EXAMPLES[name]["type"]
    assert h.code.code_system == _one(doc, "/h:ClinicalDocument/h:code/@codeSystem")
    assert h.title == _one(doc, "/h:ClinicalDocument/h:title")
    assert h.effective_time is not None
    assert h.effective_time.text == _one(doc, "/h:ClinicalDocument/h:effectiveTime/@value")
    assert h.confidentiality is not None
    assert h.confidentiality.code == _one(doc, "/h:ClinicalDocument/h:confidentialityCode/@code")
    assert h.language == _one(doc, "/h:ClinicalDocument/h:languageCode/@code")
    assert h.set_id is not None and h.set_id.root == _one(doc, "/h:ClinicalDocument/h:setId/@root")
    assert str(h.version_number) == _one(doc, "/h:ClinicalDocument/h:versionNumber/@value")
    assert [t.root for t in h.template_ids] == _xp(doc, "/h:ClinicalDocument/h:templateId/@root")

    role = "/h:ClinicalDocument/h:recordTarget/h:patientRole"
    patient = h.patient
    assert patient is not None
    assert [(i.root, i.extension) for i in patient.ids] == [
        (e.get("root"), e.get("extension")) for e in _xp(doc, f"{role}/h:id")]
    assert [(i.oid.oid, i.value) for i in patient.ins] == [
        (e.get("root"), e.get("extension")) for e in _xp(doc, f"{role}/h:id") if e.get("root") in INS_OIDS]
    assert patient.gender == _one(doc, f"{role}/h:patient/h:administrativeGenderCode/@code")
    assert patient.birth_time is not None
    assert patient.birth_time.text == _one(doc, f"{role}/h:patient/h:birthTime/@value")
    assert patient.birthplace is not None
    assert patient.birthplace.insee_code == _one(doc, f"{role}/h:patient/h:birthplace/h:place/h:addr/h:county")
    assert patient.name is not None
    assert patient.name.birth_family == _one(doc, f"{role}/h:patient/h:name/h:family[@qualifier='BR']")
    assert patient.name.first_birth_given == _one(doc, f"{role}/h:patient/h:name/h:given[@qualifier='BR']")
    assert patient.name.used_given == _one(doc, f"{role}/h:patient/h:name/h:given[@qualifier='CL']")
    assert " ".join(patient.name.birth_given_names) == _one(doc, f"{role}/h:patient/h:name/h:given[not(@qualifier)]")

    authors = _xp(doc, "/h:ClinicalDocument/h:author")
    assert len(h.authors) == len(authors)
    for author, el in zip(h.authors, authors, strict=True):
        assert [(i.root, i.extension) for i in author.ids] == [
            (e.get("root"), e.get("extension")) for e in el.xpath("h:assignedAuthor/h:id", namespaces=NS)]
        assert author.ps_idnat == _one(el, f"h:assignedAuthor/h:id[@root='{PS_IDNAT}']/@extension")
        assert author.profession is not None
        assert author.profession.code == _one(el, "h:assignedAuthor/h:code/@code")
        assert author.time is not None and author.time.text == _one(el, "h:time/@value")
        assert author.organization is not None
        assert author.organization.name == _one(el, "h:assignedAuthor/h:representedOrganization/h:name")
    custodian = "/h:ClinicalDocument/h:custodian/h:assignedCustodian/h:representedCustodianOrganization"
    assert h.custodian is not None and h.custodian.ids[0].extension == _one(doc, f"{custodian}/h:id/@extension")
    legal = h.legal_authenticator
    assert legal is not None
    assert legal.ids[0].extension == _one(doc, "/h:ClinicalDocument/h:legalAuthenticator/h:assignedEntity/h:id/@extension")

    event = "/h:ClinicalDocument/h:documentationOf/h:serviceEvent"
    low, high = h.service_period
    assert low is not None and low.text == _one(doc, f"{event}/h:effectiveTime/h:low/@value")
    assert (high.text if high else None) == _one(doc, f"{event}/h:effectiveTime/h:high/@value")
    assert h.practice_setting is not None
    assert h.practice_setting.code == _one(
        doc, f"{event}/h:performer/h:assignedEntity/h:representedOrganization/h:standardIndustryClassCode/@code")
    facility = "/h:ClinicalDocument/h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility"
    assert h.encounter is not None and h.encounter.facility_type is not None
    assert h.encounter.facility_type.code == _one(doc, f"{facility}/h:code/@code")
    assert h.encounter.facility_type.code_system == _one(doc, f"{facility}/h:code/@codeSystem")
    assert h.structured == bool(_xp(doc, "/h:ClinicalDocument/h:component/h:structuredBody"))
    assert (h.non_xml_body.media_type if h.non_xml_body else None) == EXAMPLES[name]["body"]


def test_metadata_from_header_says_what_the_header_says(example: tuple[str, bytes, Any, cda.CdaHeader]) -> None:
    name, _, doc, h = example
    md = cda.metadata_from_header(h)
    assert md["masterIdentifier"] == {"system": "urn:ietf:rfc:3986",
                                      "value": "urn:oid:" + str(_one(doc, "/h:ClinicalDocument/h:id/@root"))}
    code_system = str(_one(doc, "/h:ClinicalDocument/h:code/@codeSystem"))
    type_code = str(_one(doc, "/h:ClinicalDocument/h:code/@code"))
    assert md["type"]["coding"][0]["code"] == type_code
    assert md["type"]["coding"][0]["system"] == URL_OF_OID[code_system]
    assert md["category"] == [{"coding": [{"system": A03_URL, "code": EXAMPLES[name]["class"],
                                           "display": md["category"][0]["coding"][0]["display"]}]}]
    assert CLASS_OF_TYPE[(KEY_OF_OID[code_system], type_code)] == EXAMPLES[name]["class"]
    effective = str(_one(doc, "/h:ClinicalDocument/h:effectiveTime/@value"))
    assert md["date"] == _fhir_ts(effective)
    assert md["content"][0]["attachment"]["creation"] == _fhir_ts(effective)
    assert md["content"][0]["attachment"]["language"] == _one(doc, "/h:ClinicalDocument/h:languageCode/@code")
    assert md["content"][0]["attachment"]["title"] == _one(doc, "/h:ClinicalDocument/h:title")
    conf = md["securityLabel"][0]["coding"][0]
    assert conf["code"] == _one(doc, "/h:ClinicalDocument/h:confidentialityCode/@code")
    assert conf["system"] == "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    ins = _xp(doc, "/h:ClinicalDocument/h:recordTarget/h:patientRole/h:id")
    first_ins = next(e for e in ins if e.get("root") in INS_OIDS)
    assert md["subject"] == {"identifier": {"system": "urn:oid:" + first_ins.get("root"),
                                            "value": first_ins.get("extension")}}
    ps = _xp(doc, f"/h:ClinicalDocument/h:author/h:assignedAuthor/h:id[@root='{PS_IDNAT}']/@extension")
    assert [a["identifier"] for a in md["author"]] == [{"system": f"urn:oid:{PS_IDNAT}", "value": v} for v in ps]
    legal = _one(doc, "/h:ClinicalDocument/h:legalAuthenticator/h:assignedEntity/h:id/@extension")
    assert md["authenticator"]["identifier"]["value"] == legal
    event = "/h:ClinicalDocument/h:documentationOf/h:serviceEvent/h:effectiveTime"
    period: dict[str, str] = {"start": _fhir_ts(str(_one(doc, f"{event}/h:low/@value")))}
    if _one(doc, f"{event}/h:high/@value"):
        period["end"] = _fhir_ts(str(_one(doc, f"{event}/h:high/@value")))
    assert md["context"]["period"] == period
    facility = "/h:ClinicalDocument/h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code"
    assert md["context"]["facilityType"]["coding"][0]["code"] == _one(doc, f"{facility}/@code")
    assert md["context"]["facilityType"]["coding"][0]["system"] == URL_OF_OID[str(_one(doc, f"{facility}/@codeSystem"))]
    setting = ("/h:ClinicalDocument/h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/"
               "h:representedOrganization/h:standardIndustryClassCode")
    assert md["context"]["practiceSetting"]["coding"][0]["code"] == _one(doc, f"{setting}/@code")
    assert md["context"]["practiceSetting"]["coding"][0]["system"] == URL_OF_OID[str(_one(doc, f"{setting}/@codeSystem"))]


def test_metadata_from_header_agrees_with_the_header(example: tuple[str, bytes, Any, cda.CdaHeader]) -> None:
    _, _, _, h = example
    assert cda.check_against_metadata(h, cda.metadata_from_header(h)) == []


# -- INS --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in FILES if not EXAMPLES[n]["key_valid"]])
def test_wrong_ins_key_is_reported_with_the_expected_key(name: str) -> None:
    data, doc = _load(name)
    h = cda.read_header(data)
    ins = h.ins
    assert ins is not None and not ins.key_valid and ins.matricule is not None
    value = _xp(doc, "/h:ClinicalDocument/h:recordTarget/h:patientRole/h:id/@extension")[0]
    assert ins.value == value
    expected = _expected_key(value)
    assert expected != value[13:]
    issues = [i for i in cda.check_header(h) if i.severity == "error"]
    assert len(issues) == 1
    fr, _, en = issues[0].diagnostics.partition(" / ")
    assert f"attendue {expected}, trouvée {value[13:]}" in fr and value in fr
    assert f"expected {expected}, found {value[13:]}" in en and "INS matricule of the CDA document" in en
    assert issues[0].expression == ["DocumentReference.content[0].attachment"]


@pytest.mark.parametrize("name", [n for n in FILES if EXAMPLES[n]["key_valid"]])
def test_valid_ins_has_no_issue(name: str) -> None:
    h = cda.read_header(_load(name)[0])
    assert h.ins is not None and h.ins.key_valid and h.ins.issues == ()
    assert [i for i in cda.check_header(h) if i.severity == "error"] == []


def test_test_oid_is_refused_in_production() -> None:
    h = cda.read_header(_load("DOC_NON_STRUCTURE_CDA-R2-N1.xml")[0])
    assert h.ins is not None and h.ins.oid.oid == "1.2.250.1.213.1.4.10"
    assert cda.check_header(h) == []
    issues = cda.check_header(h, production=True)
    assert len(issues) == 1 and "1.2.250.1.213.1.4.10" in issues[0].diagnostics


def test_nir_used_as_social_security_number_is_not_an_ins() -> None:
    h = cda.read_header(_load("CSE-CS9_2025.01.xml")[0])
    assert h.patient is not None
    assert ("1.2.250.1.213.1.4.13", "221042545611404") in [(i.root, i.extension) for i in h.patient.ids]
    assert [i.oid.oid for i in h.patient.ins] == ["1.2.250.1.213.1.4.10"]


def test_minor_patient_names_follow_the_ci_sis_qualifiers() -> None:
    h = cda.read_header(_load("CSE-MDE_2023.01.xml")[0])
    assert h.patient is not None and h.patient.name is not None
    name = h.patient.name
    assert (name.birth_family, name.used_family) == ("DECOURCY", "DECOURCY")
    assert name.birth_given_names == ("Ruth", "Isabelle") and name.first_birth_given == "Ruth"
    assert h.patient.fhir_gender == "female" and h.patient.birth_time is not None
    assert h.patient.birth_time.to_fhir() == "2022-12-25"


# -- Body -------------------------------------------------------------------------------------------

def test_non_xml_body_gives_the_embedded_pdf() -> None:
    data, doc = _load("DOC_NON_STRUCTURE_CDA-R2-N1.xml")
    h = cda.read_header(data)
    body = h.non_xml_body
    assert body is not None and not h.structured
    text = "".join(_xp(doc, "/h:ClinicalDocument/h:component/h:nonXMLBody/h:text/text()"))
    expected = base64.b64decode("".join(text.split()))
    assert body.content.startswith(b"%PDF-")
    assert body.content == expected and len(body.content) == len(expected) > 100_000
    assert (body.media_type, body.representation) == ("application/pdf", "B64")
    md = cda.metadata_from_header(h)
    assert md["content"][0]["format"]["code"] == "urn:ihe:iti:xds-sd:pdf:2008"


def test_structured_document_has_no_embedded_content() -> None:
    h = cda.read_header(_load("VSM_1.4_2022.01.xml")[0])
    assert h.structured and h.non_xml_body is None
    assert "format" not in cda.metadata_from_header(h)["content"][0]


def test_bad_base64_is_reported() -> None:
    data = _load("DOC_NON_STRUCTURE_CDA-R2-N1.xml")[0].replace(b'representation="B64">JVBER', b'representation="B64">*JVBER')
    issues = cda.check_header(cda.read_header(data))
    assert [i.code for i in issues] == ["structure"] and "base64" in issues[0].diagnostics


# -- Type and date problems in the header ---------------------------------------------------------

def test_retired_type_in_a_cda_is_refused() -> None:
    data = _load("CSE-MDE_2023.01.xml")[0].replace(b'code="29274-8"', b'code="11528-7"', 1)
    issues = cda.check_header(cda.read_header(data))
    retired = [i for i in issues if i.code == "business-rule"]
    assert len(retired) == 1 and "11528-7" in retired[0].diagnostics and "retired" in retired[0].diagnostics


def test_three_digit_offsets_of_published_examples_are_read() -> None:
    data, doc = _load("BIO-TROD_2024.01_COVID-19.xml")
    written = _one(doc, "/h:ClinicalDocument/h:legalAuthenticator/h:time/@value")
    assert written == "20240106113623+100"
    h = cda.read_header(data)
    assert h.legal_authenticator is not None and h.legal_authenticator.time is not None
    assert h.legal_authenticator.time.to_fhir() == "2024-01-06T11:36:23+01:00"
    assert cda.check_header(h) == []


def test_unreadable_dates_are_errors_where_metadata_needs_them() -> None:
    data = _load("VSM_1.4_2022.01.xml")[0]
    effective = str(_one(etree.fromstring(data), "/h:ClinicalDocument/h:effectiveTime/@value"))
    broken = data.replace(f'<effectiveTime value="{effective}"'.encode(), b'<effectiveTime value="2020-03-12"', 1)
    h = cda.read_header(broken)
    assert h.effective_time is None
    issues = cda.check_header(h)
    assert any(i.severity == "error" and "2020-03-12" in i.diagnostics for i in issues)
    assert any(i.code == "required" and "effectiveTime" in i.diagnostics for i in issues)


def test_bare_clinical_document_reports_what_is_missing() -> None:
    h = cda.read_header(b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    assert h.patient is None and h.authors == () and h.ins is None
    assert cda.metadata_from_header(h) == {}
    missing = [i.diagnostics.split(" / ")[1] for i in cda.check_header(h)]
    assert missing == [f"CDA header: ClinicalDocument/{e} is missing" for e in ("id", "code", "effectiveTime")]


# -- Contradictions with supplied metadata ----------------------------------------------------------

def _mutated(path: list[Any], value: Any) -> tuple[cda.CdaHeader, dict[str, Any]]:
    h = cda.read_header(_load("DOC_NON_STRUCTURE_CDA-R2-N1.xml")[0])
    md = copy.deepcopy(cda.metadata_from_header(h))
    node: Any = md
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return h, md


@pytest.mark.parametrize(("path", "value", "expression", "words"), [
    (["type", "coding", 0, "code"], "11488-4", "DocumentReference.type.coding[0].code", ("11488-4", "11502-2")),
    (["category", 0, "coding", 0, "code"], "31", "DocumentReference.category[0].coding[0].code", ("31", "10")),
    (["securityLabel", 0, "coding", 0, "code"], "R", "DocumentReference.securityLabel[0].coding[0].code",
     ("« R »", "« N »")),
    (["subject", "identifier", "value"], "279035121518990", "DocumentReference.subject",
     ("279035121518990", "279035121518989")),
    (["author", 0, "identifier", "value"], "810000000001", "DocumentReference.author", ("810000000001", "801234534765")),
    (["date"], "2021-04-02T13:47:45+01:00", "DocumentReference.date", ("2021-04-02", "2021-04-01")),
    (["content", 0, "attachment", "creation"], "2020-04-01", "DocumentReference.content[0].attachment.creation",
     ("2020-04-01",)),
    (["context", "period", "start"], "2021-01-05", "DocumentReference.context.period.start", ("2021-01-05",)),
    (["context", "period", "end"], "2021-01-04T14:55:00+01:00", "DocumentReference.context.period.end",
     ("14:55",)),
    (["masterIdentifier", "value"], "urn:oid:1.2.3.4", "DocumentReference.masterIdentifier.value",
     ("1.2.3.4", "1.3.6.1.4.1.19376.1.2.20.12345.1.1")),
])
def test_each_contradiction_is_named(path: list[Any], value: Any, expression: str, words: tuple[str, ...]) -> None:
    h, md = _mutated(path, value)
    issues = cda.check_against_metadata(h, md)
    assert [i.expression for i in issues] == [[expression]], issues
    fr, sep, en = issues[0].diagnostics.partition(" / ")
    assert sep and "incohérent" in fr and "mismatch" in en
    for word in words:
        if word.startswith("«"):
            assert word in fr and f'"{word[2:-2]}"' in en
        else:
            assert word in fr and word in en


def test_consistent_variants_are_not_contradictions() -> None:
    h, md = _mutated(["date"], "2021-04-01T12:47:45Z")  # the same instant in UTC
    md["type"]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.6.1"
    md["context"]["period"]["start"] = "2021-01-04"  # the day of the service start
    md["type"]["coding"].append({"system": "http://snomed.info/sct", "code": "4241000179101"})
    md["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.3.6.1.4.1.19376.1.2.20.12345.1.1"}
    assert cda.check_against_metadata(h, md) == []
    del md["date"], md["subject"], md["author"]
    assert cda.check_against_metadata(h, md) == []


def test_contained_and_resolved_references_are_compared() -> None:
    h = cda.read_header(_load("DOC_NON_STRUCTURE_CDA-R2-N1.xml")[0])
    md: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "contained": [{"resourceType": "Practitioner", "id": "a1",
                       "identifier": [{"system": f"urn:oid:{PS_IDNAT}", "value": "801234534765"}]}],
        "author": [{"reference": "#a1"}], "subject": {"reference": "Patient/p1"}}
    right = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10",
                                                        "value": "279 03 51 215 189 89"}]}
    wrong = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10",
                                                        "value": "279035121518990"}]}
    assert cda.check_against_metadata(h, md, patient=right) == []
    assert [i.expression for i in cda.check_against_metadata(h, md, patient=wrong)] == [["DocumentReference.subject"]]
    assert cda.check_against_metadata(h, md, resolve={"Patient/p1": right}.get) == []
    assert cda.check_against_metadata(h, md, resolve={"Patient/p1": wrong}.get) != []
    md["contained"][0]["identifier"][0]["value"] = "899999999999"
    assert [i.expression for i in cda.check_against_metadata(h, md)] == [["DocumentReference.author"]]
    md["author"] = [{"reference": "#a2"}, {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1120459876"}}]
    assert cda.check_against_metadata(h, md) == []  # the author's organisation


# -- Timestamps ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "precision", "fhir", "instant"), [
    ("2021", "year", "2021", "2021-01-01T00:00:00+01:00"),
    ("202107", "month", "2021-07", "2021-07-01T00:00:00+02:00"),
    ("20210401", "day", "2021-04-01", "2021-04-01T00:00:00+02:00"),
    ("2021040113", "hour", "2021-04-01T13:00:00+02:00", "2021-04-01T13:00:00+02:00"),
    ("202101040735+0100", "minute", "2021-01-04T07:35:00+01:00", "2021-01-04T07:35:00+01:00"),
    ("20210401134745+0100", "second", "2021-04-01T13:47:45+01:00", "2021-04-01T13:47:45+01:00"),
    ("20210401134745.25-0530", "fraction", "2021-04-01T13:47:45.25-05:30", "2021-04-01T13:47:45.25-05:30"),
    ("20200701134745", "second", "2020-07-01T13:47:45+02:00", "2020-07-01T13:47:45+02:00"),
])
def test_cda_timestamps(text: str, precision: str, fhir: str, instant: str) -> None:
    t = CdaTime.parse(text)
    assert t is not None and t.precision == precision
    assert t.value.tzinfo is not None and t.value.utcoffset() is not None
    assert t.to_fhir() == fhir and t.to_fhir_instant() == instant
    assert t.offset_given == ("+" in text or "-" in text)
    assert t.value < t.end


@pytest.mark.parametrize("text", ["2021-04-01", "20211301", "20210230", "202104011", "20210401134745+1500",
                                  "20210401134745+0160", "2021040113.5", "", "now"])
def test_invalid_cda_timestamps(text: str) -> None:
    assert CdaTime.parse(text) is None


def test_timestamp_period_covers_its_precision() -> None:
    day = CdaTime.parse("20210104")
    minute = CdaTime.parse("202101040735+0100")
    assert day is not None and minute is not None
    assert day.covers(minute.value, minute.end)
    assert (day.end - day.value).days == 1 and (minute.end - minute.value).seconds == 60
