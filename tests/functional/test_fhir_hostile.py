"""Inputs the FHIR fuzzer (tests/support/fhir_fuzz.py, bench/fuzz_http.py) found answered without an
OperationOutcome or with a 5xx, replayed exactly: each now gets its 4xx OperationOutcome."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Fhir


def outcome_of(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/fhir+json"), (r.status_code, r.text)
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] in ("error", "fatal")
    return dict(body)


@pytest.mark.parametrize(("method", "path"), [("PROPFIND", "Patient"), ("OPTIONS", "Patient"),
                                              ("TRACE", "Patient/fz-pat"), ("OPTIONS", "")])
def test_a_method_fhir_does_not_know_is_a_405_operation_outcome(fhir: Fhir, method: str, path: str) -> None:
    r = fhir.request(method, path, content=b"null")
    assert r.status_code == 405, r.text
    assert "not a supported interaction" in str(outcome_of(r)) or "not supported on the FHIR base" in r.text


@pytest.mark.parametrize("body", [b'{"op": "add", "path": "/active", "value": true}', b"{}"])
def test_a_json_patch_that_is_not_an_array_is_a_400(fhir: Fhir, body: bytes) -> None:
    fhir.put("Patient/fz-pat", json={"resourceType": "Patient", "id": "fz-pat"})
    r = fhir.patch("Patient/fz-pat", content=body, headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 400, r.text
    assert "array of operations" in outcome_of(r)["issue"][0]["diagnostics"]


@pytest.mark.parametrize("version", ["99999999999999999999", "9223372036854775808", "-9223372036854775809"])
def test_a_version_too_large_for_any_database_is_not_found(fhir: Fhir, version: str) -> None:
    fhir.put("Patient/fz-pat", json={"resourceType": "Patient", "id": "fz-pat"})
    r = fhir.get(f"Patient/fz-pat/_history/{version}")
    assert r.status_code == 404, r.text
    outcome_of(r)


@pytest.mark.parametrize(("path", "token", "status"), [
    ("Patient/" + "x" * 300, None, 404),
    ("Patient/" + "x" * 300, "Bearer x.y.z", 401),
    ("Patient/fz%00pat", None, 400),
    ("Patient%00/fz-prac/_history", None, 400),
])
def test_an_id_no_record_can_have_is_traced_and_answered(fhir: Fhir, path: str, token: str | None,
                                                         status: int) -> None:
    """The audit row of such a request named it as its patient: too long for the column (a 503 "could
    not be traced" on PostgreSQL, or a plain-text 500 for a bad token); a NUL in the path reached
    PostgreSQL, which refuses it in text (a 500): now a 400."""
    headers = {"authorization": token} if token else {}
    r = fhir.get(path, headers=headers)
    assert r.status_code == status, r.text
    outcome_of(r)


@pytest.mark.parametrize("query", ["_count=%C2%B2", "_offset=%C2%B2", "_offset=99999999999999999999"])
def test_audit_event_paging_with_a_number_no_database_takes_is_a_400(fhir: Fhir, query: str) -> None:
    r = fhir.get(f"AuditEvent?{query}")
    assert r.status_code == 400, r.text
    outcome_of(r)


@pytest.mark.parametrize("method", [{}, [], ["POST"], 1, None])
def test_a_bundle_entry_whose_method_is_not_a_string_is_a_400(fhir: Fhir, method: object) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": method, "url": "Patient"}}]}
    r = fhir.post("", json=bundle)
    assert r.status_code == 400, r.text
    assert "request needs a method" in outcome_of(r)["issue"][0]["diagnostics"]
