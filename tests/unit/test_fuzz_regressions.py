"""Inputs that broke a parser under fuzzing (``bench/fuzz/``), each kept as it was found: the exact
input, what it must give now, and, where a server was reached, the answer over HTTP on both
databases."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy.dialects import postgresql

from carnet.documents import cda
from carnet.documents.cda_model import CdaTime
from carnet.errors import Invalid
from carnet.fhir import search
from carnet.fhir.values import number_range
from tests.conftest import FIXTURES, Fhir

# -- numbers whose exponent is beyond the decimal context ------------------------------------------
# number_range("1e1000001") raised decimal.Overflow (and "1e-999999999" InvalidOperation) from the
# implicit precision's half unit: a search on a number or quantity parameter answered 500, and so
# did the indexing of a resource holding such a value.


def test_a_number_beyond_the_decimal_range_is_not_a_number() -> None:
    for text in ("1e1000001", "1e-999999999", "9e999999999999999999"):
        assert number_range(text) is None
    assert number_range("1e999999") == (float("inf"), float("inf"), float("inf"))


def test_a_search_on_a_number_beyond_the_decimal_range_is_refused(fhir: Fhir) -> None:
    for query in ("Observation?value-quantity=1e1000001", "RiskAssessment?probability=gt1e-999999999"):
        r = fhir.get(query)
        assert r.status_code == 400, (query, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"


def test_a_resource_holding_such_a_number_is_stored(fhir: Fhir) -> None:
    body = (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"},'
            b' "valueQuantity": {"value": 1e1000001, "unit": "kg"}}')
    r = fhir.post("Observation", content=body)
    assert r.status_code in (201, 400, 422), (r.status_code, r.text)
    if r.status_code == 201:
        assert fhir.get(f"Observation/{r.json()['id']}").status_code == 200


# -- CDA times whose period ends past year 9999 ------------------------------------------------------
# CdaTime.parse accepted "9999" and "99991231235959", whose period ends beyond datetime's range:
# comparing the header with the DocumentReference's date (CdaTime.end) raised ValueError or
# OverflowError, and publishing such a CDA with a date answered 500. Now they are invalid times.

CDA_9999 = (b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.250.1.999.1.1" extension="DOC-1"/>'
            b'<code code="11488-4" codeSystem="2.16.840.1.113883.6.1"/><effectiveTime value="9999"/>'
            b'<recordTarget><patientRole><id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>'
            b'</patientRole></recordTarget></ClinicalDocument>')


def test_a_cda_time_ending_past_year_9999_is_an_invalid_time() -> None:
    for text in ("9999", "99991231", "99991231235959", "999912312359"):
        assert CdaTime.parse(text) is None, text
        header = cda.read_header(CDA_9999.replace(b"9999", text.encode(), 1))
        assert header.effective_time is None
        assert cda.check_against_metadata(header, cda.metadata_from_header(header)) == []
        assert cda.check_against_metadata(header, {"date": "2024-03-12T10:15:00+01:00"}) == []
        assert any(text in p.diagnostics and p.severity == "error" for p in header.problems)
    assert CdaTime.parse("99981231235959") is not None


def test_publishing_a_cda_dated_9999_is_refused(fhir: Fhir) -> None:
    fhir.put("Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    r = fhir.post("DocumentReference", json={
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": "Patient/p1"},
        "date": "2024-03-12T10:15:00+01:00",
        "content": [{"attachment": {"contentType": "text/xml", "data": base64.b64encode(CDA_9999).decode()}}]})
    assert r.status_code == 422, (r.status_code, r.text)
    assert "9999" in r.text


# -- NUL characters in search values ----------------------------------------------------------------
# The parser holds an escaped pipe ("\|") as NUL while it splits token values, and left it there in
# every other kind of value (given=c\|d searched for "c<NUL>d"); a literal NUL (%00) went through
# too. PostgreSQL refuses NUL in text: those searches answered 500 on PostgreSQL. Now an escaped
# pipe is a plain "|" wherever "|" separates nothing, and a NUL in a value is refused (400).

ESCAPED_PIPES = ("Patient?family=a\\,b&given=c\\|d", "Patient?_id=a\\|b", "Patient?name:contains=x\\|y",
                 "Observation?code=http://x\\|y|z", "Patient?identifier:of-type=a|b|c\\|d",
                 "Patient?gender:text=f\\|m", "Observation?subject=Patient/p\\|1",
                 "Observation?value-quantity=5|http://unitsofmeasure.org\\|x|kg",
                 "Practitioner?family=mart\\|in&given=je\\|an")


def _statements(query: str) -> list[Any]:
    rtype, _, qs = query.partition("?")
    req = search.parse(rtype, parse_qsl(qs, keep_blank_values=True), max_terms=100)
    compiler = search.Compiler()
    return [compiler.page(req, []), compiler.count(req, [])]


def test_an_escaped_pipe_reaches_no_statement_as_nul() -> None:
    for query in ESCAPED_PIPES:
        for stmt in _statements(query):
            params = stmt.compile(dialect=postgresql.dialect()).params
            values = [x for v in params.values() for x in (v if isinstance(v, list) else [v])]
            assert not any(isinstance(v, str) and "\x00" in v for v in values), (query, params)
    params = _statements("Patient?given=c\\|d")[0].compile().params
    assert "c|d" in params.values()


def test_a_nul_in_a_search_value_is_refused() -> None:
    for query in ("Patient?family=a\x00b", "Patient?_id=\x00", "Observation?subject.family=\x00"):
        rtype, _, qs = query.partition("?")
        with pytest.raises(Invalid) as caught:
            search.parse(rtype, parse_qsl(qs, keep_blank_values=True))
        assert " / " in caught.value.message and "NUL" in caught.value.message


def test_searches_with_escaped_pipes_and_nul_over_http(fhir: Fhir) -> None:
    fhir.create({"resourceType": "Patient", "name": [{"family": "Pipe", "given": ["c|d"]}]})
    assert len(fhir.search_ids("Patient?given=c\\|d")) == 1
    for query in ESCAPED_PIPES:
        r = fhir.get(query)
        assert r.status_code == 200, (query, r.status_code, r.text)
    for query in ("Patient?family=a%00b", "Patient?_id=%00", "Patient?given=c%00d&family=x"):
        r = fhir.get(query)
        assert r.status_code == 400, (query, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"


# -- an author identified by a root alone ------------------------------------------------------------
# metadata_from_header gives an author whose id has no extension as the identifier
# urn:ietf:rfc:3986 | urn:oid:<root>, but check_against_metadata compared only the header's ids with
# an extension: the metadata derived from the header contradicted it ("Author mismatch"), and a
# publication whose metadata named the author that way was refused (422).

AUTHOR_ROOT_ONLY = FIXTURES / "fuzz" / "cda-crash-72bf5569f89a9016de3aae38c750b794952b6abf"


def test_an_author_identified_by_a_root_alone_agrees_with_its_derived_metadata() -> None:
    data = AUTHOR_ROOT_ONLY.read_bytes()  # the fuzzer's input: extension="..." garbled into extesupnsion
    assert b'<id root="1.2.250.1.71.4.2.1" extesupnsion="810000000001"/>' in data
    header = cda.read_header(data)
    metadata = cda.metadata_from_header(header)
    assert metadata["author"][0]["identifier"] == {"system": "urn:ietf:rfc:3986",
                                                   "value": "urn:oid:1.2.250.1.71.4.2.1"}
    assert cda.check_against_metadata(header, metadata) == []
    other = {"author": [{"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}}]}
    assert [i.expression for i in cda.check_against_metadata(header, other)] == [["DocumentReference.author"]]


# -- an author id with a blank in it ----------------------------------------------------------------
# The metadata's identifiers are compared without their blanks, the header's were not: an author id
# written "8100 0000001" in the header contradicted the metadata derived from that very header.

AUTHOR_ID_WITH_BLANK = FIXTURES / "fuzz" / "cda-crash-bc9171b150b8ec7ddd01c0ba9075d0a1960cdf0a"


def test_an_author_id_with_a_blank_agrees_with_its_derived_metadata() -> None:
    data = AUTHOR_ID_WITH_BLANK.read_bytes()  # the fuzzer's input: a bit flipped a digit into a blank
    assert b'extension="8100 0000001"' in data
    header = cda.read_header(data)
    assert cda.check_against_metadata(header, cda.metadata_from_header(header)) == []
    written = {"author": [{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "81000000001"}}]}
    assert cda.check_against_metadata(header, written) == []
    other = {"author": [{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "81000000002"}}]}
    assert [i.expression for i in cda.check_against_metadata(header, other)] == [["DocumentReference.author"]]
