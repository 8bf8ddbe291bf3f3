"""FHIR XML reading: the JSON shape it produces, strictness, and safety."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest

from carnet.errors import Invalid
from carnet.fhir import jsonio
from carnet.fhir.validation import validate
from carnet.fhir.validation.definitions import TypeDef, definitions
from carnet.fhir.xml import parse_xml

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "fhir-r4-examples"


def parse(text: str) -> dict[str, Any]:
    return parse_xml(text.encode())


def invalid(text: str | bytes) -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse_xml(text.encode() if isinstance(text, str) else text)
    return caught.value


OBSERVATION = """<?xml version="1.0" encoding="UTF-8"?>
<Observation xmlns="http://hl7.org/fhir">
  <!-- a comment -->
  <id value="o1"/>
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"><p>Weight <b>72.50</b> kg &amp; more</p></div>
  </text>
  <status value="final"/>
  <category>
    <coding>
      <system value="http://terminology.hl7.org/CodeSystem/observation-category"/>
      <code value="vital-signs"/>
    </coding>
  </category>
  <code id="c1">
    <coding>
      <system value="http://loinc.org"/>
      <code value="29463-7"/>
    </coding>
    <text value="Body weight"/>
  </code>
  <subject>
    <reference value="Patient/p1"/>
  </subject>
  <effectiveDateTime value="2024-01-15T10:00:00+01:00"/>
  <valueQuantity>
    <value value="72.50"/>
    <unit value="kg"/>
    <system value="http://unitsofmeasure.org"/>
    <code value="kg"/>
  </valueQuantity>
</Observation>
"""


def test_observation_to_json_shape() -> None:
    res = parse(OBSERVATION)
    assert res["resourceType"] == "Observation"
    assert res["id"] == "o1"
    assert res["status"] == "final"
    assert isinstance(res["category"], list)
    assert res["code"]["id"] == "c1"
    assert isinstance(res["code"]["coding"], list)
    assert res["code"]["text"] == "Body weight"
    assert res["subject"] == {"reference": "Patient/p1"}
    assert res["effectiveDateTime"] == "2024-01-15T10:00:00+01:00"
    div = res["text"]["div"]
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert "&amp; more" in div
    assert validate(res) == []


def test_decimals_are_kept_exactly() -> None:
    value = parse(OBSERVATION)["valueQuantity"]["value"]
    assert isinstance(value, jsonio.FhirDecimal)
    assert value == Decimal("72.5")
    assert value.text == "72.50"
    assert b'"value":72.50' in jsonio.dumps(parse(OBSERVATION))


def test_schema_location_on_the_root_is_accepted() -> None:
    res = parse('<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xsi:schemaLocation="http://hl7.org/fhir ../../schema/fhir-single.xsd"><id value="p"/></Patient>')
    assert res == {"resourceType": "Patient", "id": "p"}


def test_booleans_and_integers() -> None:
    res = parse('<Patient xmlns="http://hl7.org/fhir"><active value="true"/>'
                '<multipleBirthInteger value="2"/></Patient>')
    assert res["active"] is True
    assert res["multipleBirthInteger"] == 2
    assert type(res["multipleBirthInteger"]) is int


@pytest.mark.parametrize(("element", "value"), [
    ("active", "yes"), ("multipleBirthInteger", "2.0"), ("multipleBirthInteger", "02"),
])
def test_bad_primitive_values(element: str, value: str) -> None:
    error = invalid(f'<Patient xmlns="http://hl7.org/fhir"><{element} value="{value}"/></Patient>')
    assert error.issues[0].expression == [f"Patient.{element}"]


def test_bad_decimal_value() -> None:
    text = ('<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="x"/></code>'
            '<valueQuantity><value value="1,5"/></valueQuantity></Observation>')
    assert "decimal" in invalid(text).issues[0].diagnostics


def test_primitive_id_and_extensions_go_to_underscore_properties() -> None:
    res = parse("""<Patient xmlns="http://hl7.org/fhir">
      <name>
        <given value="Anne"/>
        <given id="g2">
          <extension url="http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier">
            <valueCode value="CL"/>
          </extension>
        </given>
        <given value="Marie"/>
      </name>
      <birthDate value="1980-05-17">
        <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
          <valueDateTime value="1980-05-17T10:15:00+02:00"/>
        </extension>
      </birthDate>
    </Patient>""")
    name = res["name"][0]
    assert name["given"] == ["Anne", None, "Marie"]
    assert name["_given"][0] is None
    assert name["_given"][1]["id"] == "g2"
    assert name["_given"][1]["extension"][0]["valueCode"] == "CL"
    assert name["_given"][2] is None
    assert res["birthDate"] == "1980-05-17"
    assert res["_birthDate"]["extension"][0]["url"].endswith("patient-birthTime")
    assert validate(res) == []


def test_element_without_value_or_children_is_reported_by_validation() -> None:
    res = parse('<Patient xmlns="http://hl7.org/fhir"><id value="p"/><implicitRules id="i1"/></Patient>')
    assert res["_implicitRules"] == {"id": "i1"}
    assert any("ele-1" in i.diagnostics for i in validate(res))


def test_contained_and_bundle_entries_are_nested() -> None:
    res = parse("""<Bundle xmlns="http://hl7.org/fhir">
      <type value="collection"/>
      <entry>
        <fullUrl value="http://example.org/fhir/Condition/c1"/>
        <resource>
          <Condition>
            <id value="c1"/>
            <contained>
              <Practitioner><id value="pr1"/><name><family value="Durand"/></name></Practitioner>
            </contained>
            <subject><reference value="Patient/p1"/></subject>
            <asserter><reference value="#pr1"/></asserter>
          </Condition>
        </resource>
      </entry>
    </Bundle>""")
    condition = res["entry"][0]["resource"]
    assert condition["resourceType"] == "Condition"
    assert condition["contained"][0]["resourceType"] == "Practitioner"
    assert condition["contained"][0]["name"] == [{"family": "Durand"}]
    assert not [i for i in validate(res) if i.severity == "error"]


def test_doctype_is_refused() -> None:
    error = invalid('<?xml version="1.0"?><!DOCTYPE Patient><Patient xmlns="http://hl7.org/fhir"/>')
    assert "DOCTYPE" in error.message
    assert error.issues[0].severity == "fatal"


def test_entity_expansion_is_refused() -> None:
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
              '<Patient xmlns="http://hl7.org/fhir"><gender value="&lol2;"/></Patient>')
    assert "DOCTYPE" in invalid(laughs).message


def test_external_entity_is_refused() -> None:
    text = ('<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<Patient xmlns="http://hl7.org/fhir"><gender value="&x;"/></Patient>')
    assert "DOCTYPE" in invalid(text).message


def test_undeclared_entity_is_malformed() -> None:
    error = invalid('<Patient xmlns="http://hl7.org/fhir"><gender value="&reg;"/></Patient>')
    assert "well-formed" in error.message


@pytest.mark.parametrize("text", [
    b"", b"not xml", b'<Patient xmlns="http://hl7.org/fhir">', b'<Patient xmlns="http://hl7.org/fhir"></Patien>',
    '<Patient xmlns="http://hl7.org/fhir"><name><family value="\u00e9"/></name></Patient>'.encode("latin-1"),
])
def test_malformed_xml(text: bytes) -> None:
    error = invalid(text)
    assert error.issues and error.issues[0].severity == "fatal"


def test_unknown_element_attribute_and_text() -> None:
    error = invalid("""<Observation xmlns="http://hl7.org/fhir">
      <status id="s" something="that" value="final"/>
      <code><text value="x"/></code>
      <valueInteger><value value="0"/></valueInteger>
      <colour value="blue"/>
      stray text
    </Observation>""")
    messages = " | ".join(i.diagnostics for i in error.issues)
    assert "attribute 'something'" in messages
    assert "unknown element 'value'" in messages
    assert "unknown element 'colour'" in messages
    assert "text is not allowed" in messages
    assert len(error.issues) == 4


def test_elements_out_of_order() -> None:
    error = invalid('<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><id value="p"/></Patient>')
    assert "out of order" in error.issues[0].diagnostics
    error = invalid('<Patient xmlns="http://hl7.org/fhir"><name><family value="A"/></name><gender value="male"/>'
                    '<name><family value="B"/><given value="x"/><family value="C"/></name></Patient>')
    assert [i.expression for i in error.issues[:2]] == [["Patient.name[1]"], ["Patient.name[1].family"]]
    assert "more than once" in error.issues[2].diagnostics


def test_single_element_repeated() -> None:
    error = invalid('<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="female"/></Patient>')
    assert "more than once" in error.issues[0].diagnostics


def test_root_must_be_a_fhir_resource() -> None:
    assert "namespace" in invalid("<Patient/>").issues[0].diagnostics
    assert "not a FHIR R4 resource type" in invalid('<Patientt xmlns="http://hl7.org/fhir"/>').issues[0].diagnostics


def test_narrative_must_be_xhtml_div() -> None:
    error = invalid('<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/>'
                    "<div>not xhtml</div></text></Patient>")
    assert error.issues[0].expression == ["Patient.text.div"]


# ----------------------------------------------------------------------------------------------
# Every official example, written as XML from its JSON, reads back to the same JSON.
# ----------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Decimal):
        return getattr(value, "text", None) or str(value)
    return str(value)


def to_xml(resource: dict[str, Any], out: list[str], root: bool = True) -> None:
    rtype = resource["resourceType"]
    out.append(f'<{rtype} xmlns="http://hl7.org/fhir">' if root else f"<{rtype}>")
    _members(resource, definitions().types[rtype], out)
    out.append(f"</{rtype}>")


def _members(obj: dict[str, Any], td: TypeDef, out: list[str]) -> None:
    extension_type = definitions().types["Extension"]
    for key, ed in td.elements.items():
        value, ext = obj.get(key), obj.get("_" + key)
        if value is None and ext is None:
            continue
        if ed.prim is not None:
            if ed.type == "xhtml":
                out.append(value)
                continue
            values = value if isinstance(value, list) else [value]
            exts = ext if isinstance(ext, list) else [ext]
            for index in range(max(len(values) if value is not None else 0, len(exts) if ext is not None else 0)):
                item = values[index] if value is not None and index < len(values) else None
                extra = (exts[index] if ext is not None and index < len(exts) else None) or {}
                attrs = (f" id={quoteattr(extra['id'])}" if "id" in extra else "") + \
                    (f" value={quoteattr(_text(item))}" if item is not None else "")
                out.append(f"<{key}{attrs}>")
                for extension in extra.get("extension", []):
                    _complex(extension, "extension", extension_type, out)
                out.append(f"</{key}>")
            continue
        for item in value if isinstance(value, list) else [value]:
            if ed.is_resource:
                out.append(f"<{key}>")
                to_xml(item, out, root=False)
                out.append(f"</{key}>")
            else:
                assert ed.typedef is not None
                _complex(item, key, ed.typedef, out)


def _complex(item: dict[str, Any], key: str, td: TypeDef, out: list[str]) -> None:
    attrs = f" id={quoteattr(item['id'])}" if "id" in item else ""
    if td.name == "Extension":
        attrs += f" url={quoteattr(item['url'])}"
    out.append(f"<{key}{attrs}>")
    _members({k: v for k, v in item.items() if k != "id" and not (td.name == "Extension" and k == "url")},
             td, out)
    out.append(f"</{key}>")


def _without_narrative(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_narrative(v) for k, v in value.items() if k != "div"}
    if isinstance(value, list):
        return [_without_narrative(v) for v in value]
    return value


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("**/*.json")), ids=lambda p: p.name)
def test_examples_read_back_from_xml(path: Path) -> None:
    resource = jsonio.loads(path.read_bytes())
    out: list[str] = []
    to_xml(resource, out)
    back = parse_xml("".join(out).encode())
    same = jsonio.loads(jsonio.dumps(back))
    assert _without_narrative(same) == _without_narrative(jsonio.loads(jsonio.dumps(resource)))
    assert not [i for i in validate(back) if i.severity in ("error", "fatal")]
