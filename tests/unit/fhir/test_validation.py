"""Structural validation of FHIR R4 resources: the HL7 validator test cases, the official examples,
and rule by rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from carnet.errors import Invalid, Issue
from carnet.fhir import jsonio
from carnet.fhir.validation import validate
from carnet.fhir.xml import parse_xml

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CASES = FIXTURES / "fhir-validation-cases"
EXAMPLES = FIXTURES / "fhir-r4-examples"

# Cases whose verdict from the reference validator depends on something this validator does not do
# (terminology server, validator settings). Each is still run; its outcome must be the one stated.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "bundle-id-5": ("valid", "terminology: its only error is a CVX display-name check against a terminology server"),
    "ips-nz-pj": ("valid", "terminology: its only errors are LOINC display names checked for the en-NZ language"),
    "uk-msg": ("valid", "terminology: its only errors are SNOMED CT display names and unknown SNOMED CT codes"),
    "contained-resource-bad-id-ignore": (
        "invalid", "validator setting: same input as contained-resource-bad-id, judged with contained-resource "
                   "checks switched off; contained resources are always checked here (65-character id)"),
}


def _index() -> list[dict[str, Any]]:
    return json.loads((CASES / "index.json").read_text(encoding="utf-8"))


def _errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def _judge(case: dict[str, Any]) -> list[Issue]:
    """Parse (JSON or XML) then validate; the error and fatal issues found on the way."""
    data = (CASES / case["input"]).read_bytes()
    try:
        resource = parse_xml(data) if case["input"].endswith(".xml") else jsonio.loads(data)
    except Invalid as exc:
        return _errors(exc.issues)
    return _errors(validate(resource))


@pytest.mark.parametrize("case", _index(), ids=lambda c: c["name"])
def test_validation_case(case: dict[str, Any]) -> None:
    errors = _judge(case)
    outcome = "invalid" if errors else "valid"
    if case["name"] in DOCUMENTED:
        expected, _reason = DOCUMENTED[case["name"]]
        assert case["verdict"] != expected, "documented cases are the ones judged differently"
        assert outcome == expected, [e.diagnostics for e in errors]
        return
    if case["verdict"] == "invalid":
        assert errors, "expected at least one error or fatal issue"
    else:
        assert not errors, [f"{e.expression}: {e.diagnostics}" for e in errors]


def test_documented_cases_exist() -> None:
    names = {c["name"] for c in _index()}
    assert set(DOCUMENTED) <= names


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("**/*.json"))


def test_example_fixtures_present() -> None:
    assert len(_example_files()) > 100


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_official_example_is_valid(path: Path) -> None:
    resource = jsonio.loads(path.read_bytes())
    errors = _errors(validate(resource))
    assert not errors, [f"{e.expression}: {e.diagnostics}" for e in errors]


# ----------------------------------------------------------------------------------------------
# Rule by rule
# ----------------------------------------------------------------------------------------------

NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Some text</p></div>'}


def patient(**extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": "p1", "text": copy.deepcopy(NARRATIVE),
                           "name": [{"family": "Martin", "given": ["Anne"]}], "birthDate": "1980-05-17"}
    res.update(extra)
    return res


def observation(**extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    res.update(extra)
    return res


def errors_of(resource: dict[str, Any]) -> list[Issue]:
    return _errors(validate(resource))


def assert_error(resource: dict[str, Any], expression: str, *words: str) -> Issue:
    """The first error located at (or under) ``expression`` whose text has all ``words``."""
    found = errors_of(resource)
    for issue in found:
        located = any(e.startswith(expression) for e in issue.expression)
        if located and all(w in issue.diagnostics for w in words):
            return issue
    raise AssertionError(f"no error at {expression} mentioning {words}: "
                         f"{[(i.expression, i.diagnostics) for i in found]}")


def test_valid_resources_have_no_errors() -> None:
    assert validate(patient()) == []
    assert errors_of(observation()) == []


def test_unknown_resource_type_and_missing_resource_type() -> None:
    assert_error({"resourceType": "Patientt"}, "Patientt", "unknown resource type")
    assert errors_of({"id": "x"})
    assert errors_of({"resourceType": "DomainResource"})


def test_unknown_element() -> None:
    issue = assert_error(patient(nickname="Annie"), "Patient.nickname", "unknown element 'nickname'")
    assert issue.code == "structure"


def test_unknown_element_in_nested_backbone() -> None:
    res = observation(component=[{"code": {"text": "x"}, "valueString": "a"},
                                 {"code": {"text": "y"}, "colour": "blue"}])
    assert_error(res, "Observation.component[1].colour", "unknown element")


def test_missing_required_element() -> None:
    res = observation()
    del res["code"]
    issue = assert_error(res, "Observation", "Observation.code is required")
    assert issue.code == "required"


def test_required_choice_element() -> None:
    res = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
           "subject": {"reference": "Patient/p1"}}
    assert_error(res, "MedicationRequest", "medication[x] is required")


def test_two_types_of_one_choice_element() -> None:
    assert_error(observation(valueString="72"), "Observation", "value[x] can only have one type")


def test_cardinality_maximum() -> None:
    res = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "referenceRange": [{"low": {"value": 1}, "appliesTo": [{"text": "a"}]}]}
    assert errors_of(res) == []
    assert_error(res | {"issued": ["2020-01-01T00:00:00Z"]}, "Observation.issued", "must not be a JSON array")
    assert_error(patient(deceasedDateTime=["2020-01-01"]), "Patient.deceasedDateTime", "must not be a JSON array")


def test_array_for_repeating_element() -> None:
    assert_error(patient(name={"family": "Martin"}), "Patient.name", "must be a JSON array")
    assert_error(patient(name=[{"family": "Martin", "given": "Anne"}]), "Patient.name[0].given",
                 "must be a JSON array")


def test_single_value_not_array() -> None:
    assert_error(patient(gender=["female"]), "Patient.gender", "must not be a JSON array")


def test_empty_array_null_and_empty_object() -> None:
    assert_error(patient(identifier=[]), "Patient.identifier", "empty array")
    assert_error(patient(gender=None), "Patient.gender", "null")
    assert_error(patient(maritalStatus={}), "Patient.maritalStatus", "ele-1")


@pytest.mark.parametrize("value", ["not a date", "2019-13-01", "2019-02-30", "19-01-01", "2019-1-1", 20190101])
def test_bad_date(value: Any) -> None:
    assert_error(patient(birthDate=value), "Patient.birthDate")


@pytest.mark.parametrize("value", ["2019", "2019-02", "2019-02-28", "2024-02-29"])
def test_good_date(value: str) -> None:
    assert errors_of(patient(birthDate=value)) == []


def test_datetime_needs_time_zone_and_instant_format() -> None:
    assert_error(observation(effectiveDateTime="2020-11-11T10:58:14"), "Observation.effectiveDateTime",
                 "time zone")
    assert errors_of(observation(effectiveDateTime="2020-11-11T10:58:14+01:00")) == []
    assert_error(observation(issued="2020-11-11"), "Observation.issued", "not a valid instant")


@pytest.mark.parametrize("value", ["%%%2@()()", "...", "abc", "YWJj=ZA=="])
def test_bad_base64(value: str) -> None:
    res = {"resourceType": "Binary", "contentType": "text/plain", "data": value}
    assert_error(res, "Binary.data", "base64")


def test_good_base64_and_attachment_size() -> None:
    res = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="}
    assert errors_of(res) == []
    media = {"resourceType": "Media", "status": "completed",
             "content": {"contentType": "text/plain", "data": "aGVsbG8=", "size": 5}}
    assert errors_of(media) == []
    media["content"]["size"] = 6
    assert_error(media, "Media.content.size", "5 bytes")


@pytest.mark.parametrize(("value", "ok"), [
    (1, True), (0, False), (-3, False), (2_147_483_648, False), (1.5, False), ("2", False), (True, False),
])
def test_positive_int(value: Any, ok: bool) -> None:
    res = {"resourceType": "ImmunizationRecommendation", "patient": {"reference": "Patient/p"},
           "date": "2020-01-01",
           "recommendation": [{"vaccineCode": [{"text": "x"}], "forecastStatus": {"text": "due"},
                               "doseNumberPositiveInt": value}]}
    assert (errors_of(res) == []) is ok


@pytest.mark.parametrize(("value", "ok"), [
    (0, True), (-5, True), (2_147_483_647, True), (2_147_483_648, False), (2.0, False), ("1", False),
])
def test_integer(value: Any, ok: bool) -> None:
    assert (errors_of(patient(multipleBirthInteger=value)) == []) is ok


def test_decimal_types() -> None:
    assert errors_of(observation(valueQuantity={"value": jsonio.FhirDecimal("1.50")})) == []
    assert_error(observation(valueQuantity={"value": "1.5"}), "Observation.valueQuantity.value", "JSON number")
    assert_error(observation(valueQuantity={"value": True}), "Observation.valueQuantity.value")


def test_boolean_must_be_json_boolean() -> None:
    assert_error(patient(active="true"), "Patient.active", "JSON boolean")


@pytest.mark.parametrize("value", ["bad-id_1", "", "a" * 65, "with space"])
def test_bad_resource_id(value: str) -> None:
    assert_error(patient(id=value), "Patient.id")


def test_good_resource_id() -> None:
    assert errors_of(patient(id="A-1.b")) == []
    assert errors_of(patient(id="a" * 64)) == []


def test_code_whitespace_and_string_empty() -> None:
    assert_error(patient(gender=" female"), "Patient.gender", "not a valid code")
    assert_error(patient(name=[{"family": ""}]), "Patient.name[0].family", "must not be empty")


def test_uri_without_whitespace() -> None:
    assert_error(patient(implicitRules="http://example.org/a b"), "Patient.implicitRules", "whitespace")


def test_required_binding_on_code() -> None:
    issue = assert_error(patient(gender="woman"), "Patient.gender", "required value set")
    assert issue.code == "code-invalid"


def test_required_binding_on_codeable_concept() -> None:
    res = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
           "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                          "code": "active"}]}}
    assert errors_of(res) == []
    res["clinicalStatus"]["coding"][0]["code"] = "ongoing"
    assert_error(res, "Condition.clinicalStatus", "required value set")


def test_primitive_extensions() -> None:
    ext = {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}
    assert errors_of(patient(_birthDate=ext)) == []
    res = patient()
    res["name"][0]["given"] = ["Anne", None]
    res["name"][0]["_given"] = [None, ext]
    assert errors_of(res) == []
    res["name"][0]["_given"] = [None]
    assert_error(res, "Patient.name[0]._given", "as many items")
    assert_error(patient(_birthDate={"id": "x"}) | {"birthDate": None}, "Patient")
    res = patient()
    del res["birthDate"]
    res["_birthDate"] = {"id": "only-id"}
    assert_error(res, "Patient._birthDate", "ele-1")
    assert_error(patient(_birthDate={"value": "1980-05-17"}), "Patient._birthDate.value", "unknown element")
    assert_error(patient(_gender=[ext]), "Patient._gender", "must not be a JSON array")


def test_extension_value_or_children() -> None:
    both = {"url": "http://example.org/x", "valueString": "a",
            "extension": [{"url": "http://example.org/y", "valueString": "b"}]}
    assert_error(patient(extension=[both]), "Patient.extension[0]", "ext-1")
    assert_error(patient(extension=[{"valueString": "a"}]), "Patient.extension[0]", "url is required")


def test_core_extension_value_type() -> None:
    ext = {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueString": "Lyon"}
    assert_error(patient(extension=[ext]), "Patient.extension[0].valueString", "Address")
    ext = {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {"city": "Lyon"}}
    assert errors_of(patient(extension=[ext])) == []


def test_fhir_comments_rejected() -> None:
    assert_error(patient(fhir_comments=["a comment"]), "Patient.fhir_comments", "DSTU2")


def test_contained_resources() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Durand"}]}
    res = observation(contained=[practitioner], performer=[{"reference": "#pr1"}])
    assert errors_of(res) == []
    res["performer"] = [{"reference": "#pr2"}]
    assert_error(res, "Observation.performer[0].reference", "ref-1")
    assert_error(res, "Observation.contained[0]", "dom-3")
    bad = observation(contained=[dict(practitioner, id="x" * 65)], performer=[{"reference": "#" + "x" * 65}])
    assert_error(bad, "Observation.contained[0].id", "too long")
    nested = observation(contained=[dict(practitioner, contained=[{"resourceType": "Organization", "id": "o"}])],
                         performer=[{"reference": "#pr1"}])
    assert_error(nested, "Observation.contained[0]", "dom-2")
    versioned = observation(contained=[dict(practitioner, meta={"versionId": "2"})],
                            performer=[{"reference": "#pr1"}])
    assert_error(versioned, "Observation.contained[0]", "dom-4")
    inner = observation(contained=[dict(practitioner, gender="unknown-gender")], performer=[{"reference": "#pr1"}])
    assert_error(inner, "Observation.contained[0].gender", "required value set")


def test_contained_resource_referenced_from_narrative() -> None:
    res = observation(contained=[{"resourceType": "Binary", "id": "img", "contentType": "image/png",
                                  "data": "aGVsbG8="}],
                      text={"status": "generated",
                            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><img src="#img" alt="x"/></div>'})
    assert errors_of(res) == []


@pytest.mark.parametrize(("div", "words"), [
    ("<div>text</div>", "XHTML namespace"),
    ('<p xmlns="http://www.w3.org/1999/xhtml">text</p>', "root element"),
    ('<div xmlns="http://www.w3.org/1999/xhtml"><p>text</div>', "well-formed"),
    ('<div xmlns="http://www.w3.org/1999/xhtml">   <p> </p></div>', "non-whitespace"),
    ('<div xmlns="http://www.w3.org/1999/xhtml">x<script>alert(1)</script></div>', "<script>"),
    ('<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="alert(1)">x</p></div>', "onclick"),
    ('<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:alert(1)">x</a></div>', "javascript"),
    ('<div xmlns="http://www.w3.org/1999/xhtml"><p>a<div>b</div></p></div>', "inside a paragraph"),
    ('<div xmlns="http://www.w3.org/1999/xhtml"><form>x</form></div>', "<form>"),
    ('<div xmlns="http://www.w3.org/1999/xhtml">&notanentity;</div>', "well-formed"),
    ('<!DOCTYPE div [<!ENTITY a "b">]><div xmlns="http://www.w3.org/1999/xhtml">&a;</div>', "DTD"),
])
def test_bad_narrative(div: str, words: str) -> None:
    assert_error(patient(text={"status": "generated", "div": div}), "Patient.text.div", words)


def test_good_narrative() -> None:
    div = ('<div xmlns="http://www.w3.org/1999/xhtml" xml:lang="fr"><p class="x">A <b>b</b> &amp; '
           '<a href="https://example.org/?a=1&amp;b=2">link</a></p><table><tr><td colspan="2">c</td></tr>'
           '</table><!-- a comment --><p>&nbsp;&reg;&#160;</p></div>')
    assert errors_of(patient(text={"status": "generated", "div": div})) == []


def test_reference_target_type_is_a_warning() -> None:
    res = observation(subject={"reference": "Medication/m1"})
    issues = validate(res)
    assert not _errors(issues)
    assert any("Medication" in i.diagnostics for i in issues if i.severity == "warning")
    assert_error(observation(subject={"reference": "Patient/p1", "type": "Group"}), "Observation.subject.type")


def test_invariants() -> None:
    assert_error(patient(telecom=[{"value": "0102030405"}]), "Patient.telecom[0]", "cpt-2")
    period = {"start": "2020-02-01", "end": "2020-01-01"}
    assert_error(patient(name=[{"family": "M", "period": period}]), "Patient.name[0].period", "per-1")
    period = {"start": "2020-01-01T10:00:00+01:00", "end": "2020-01-01T09:30:00Z"}
    assert errors_of(patient(name=[{"family": "M", "period": period}])) == []
    absent = observation(dataAbsentReason={"text": "lost"})
    assert_error(absent, "Observation", "obs-6")
    assert_error(observation(valueQuantity={"value": 1, "code": "kg"}), "Observation.valueQuantity", "qty-3")
    assert_error(patient(contact=[{"gender": "female"}]), "Patient.contact[0]", "pat-1")
    assert_error({"resourceType": "Organization", "active": True}, "Organization", "org-1")


def test_invariant_in_backbone_element() -> None:
    res = observation(referenceRange=[{"appliesTo": [{"text": "adults"}]}])
    assert_error(res, "Observation.referenceRange[0]", "obs-3")


def test_bundle_entries_are_validated() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:3c1c5fd4-5f3e-4e2b-9a5c-1a2b3c4d5e6f", "resource": patient(birthDate="1980-13-01")},
    ]}
    assert_error(bundle, "Bundle.entry[0].resource.birthDate", "not a valid date")


def test_bundle_full_url_rules() -> None:
    entry = {"fullUrl": "Patient/p1", "resource": patient()}
    assert_error({"resourceType": "Bundle", "type": "collection", "entry": [entry]}, "Bundle.entry[0]", "absolute")
    entry = {"fullUrl": "http://example.org/fhir/Patient/p1", "resource": patient()}
    assert errors_of({"resourceType": "Bundle", "type": "collection", "entry": [entry]}) == []
    no_id = patient()
    del no_id["id"]
    entry = {"fullUrl": "http://example.org/fhir/Patient/p1", "resource": no_id}
    assert_error({"resourceType": "Bundle", "type": "collection", "entry": [entry]}, "Bundle.entry[0]", "no id")


def test_bundle_duplicate_full_url() -> None:
    entry = {"fullUrl": "http://example.org/fhir/Patient/p1", "resource": patient()}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [entry, copy.deepcopy(entry)]}
    assert_error(bundle, "Bundle", "bdl-7")
    history = dict(bundle, type="history")
    for item in history["entry"]:
        item["request"] = {"method": "PUT", "url": "Patient/p1"}
    assert not [e for e in errors_of(history) if "bdl-7" in e.diagnostics]


def test_search_set_rules() -> None:
    no_id = patient()
    del no_id["id"]
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "link": [{"relation": "self", "url": "http://example.org/fhir/Patient?name=m"}],
              "entry": [{"fullUrl": "urn:uuid:3c1c5fd4-5f3e-4e2b-9a5c-1a2b3c4d5e6f", "resource": no_id,
                         "search": {"mode": "match"}},
                        {"fullUrl": "http://example.org/fhir/Observation/o1", "resource": observation(),
                         "search": {"mode": "match"}}]}
    assert_error(bundle, "Bundle.entry[0].resource", "must have an id")
    assert_error(bundle, "Bundle.entry[1].resource", "does not match the search")
    bundle["link"].append({"relation": "self", "url": "http://example.org/fhir/Patient?name=m"})
    assert_error(bundle, "Bundle.link[1]", "only occur once")


def test_document_bundle() -> None:
    composition = {"resourceType": "Composition", "id": "c1", "status": "final", "type": {"text": "note"},
                   "date": "2024-01-01", "author": [{"reference": "Patient/p1"}], "title": "Note",
                   "subject": {"reference": "Patient/p1"}}
    bundle = {"resourceType": "Bundle", "type": "document", "timestamp": "2024-01-01T10:00:00Z",
              "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1f9c5b5e-4f0a-4a54-9d71-0a1b2c3d4e5f"},
              "entry": [{"fullUrl": "http://example.org/fhir/Composition/c1", "resource": composition},
                        {"fullUrl": "http://example.org/fhir/Patient/p1", "resource": patient()}]}
    assert errors_of(bundle) == []
    first_patient = copy.deepcopy(bundle)
    first_patient["entry"].reverse()
    assert_error(first_patient, "Bundle", "bdl-11")
    no_date = copy.deepcopy(bundle)
    del no_date["timestamp"]
    assert_error(no_date, "Bundle", "bdl-10")
    orphan = copy.deepcopy(bundle)
    orphan["entry"].append({"fullUrl": "http://example.org/fhir/Observation/o1", "resource": observation(
        subject={"reference": "Group/g1"})})
    assert_error(orphan, "Bundle.entry[2]", "not reachable")
    missing = copy.deepcopy(bundle)
    missing["entry"][0]["resource"]["author"] = [{"reference": "Practitioner/nobody"}]
    assert_error(missing, "Bundle.entry[0].resource.author[0]", "cannot be found")


def test_bundle_reference_resolving_to_wrong_type() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://example.org/fhir/Observation/o1",
         "resource": observation(subject={"reference": "Patient/p1"})},
        {"fullUrl": "http://example.org/fhir/Patient/p1",
         "resource": {"resourceType": "Group", "id": "p1", "type": "person", "actual": True}},
    ]}
    assert errors_of(bundle)


def test_issue_shape() -> None:
    issue = assert_error(patient(birthDate="yesterday"), "Patient.birthDate")
    assert issue.severity == "error"
    assert issue.expression == ["Patient.birthDate"]
    assert issue.diagnostics.endswith(".")
    assert issue.to_fhir()["expression"] == ["Patient.birthDate"]


def test_validation_does_not_modify_the_resource() -> None:
    res = observation(contained=[{"resourceType": "Practitioner", "id": "pr1"}], performer=[{"reference": "#pr1"}])
    before = copy.deepcopy(res)
    validate(res)
    assert res == before
