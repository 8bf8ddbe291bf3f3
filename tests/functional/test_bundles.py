"""Batch and transaction Bundles: atomicity, reference rewriting, conditional references, and the
real-world bundles of the FHIR spec examples and Synthea."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, Fhir

EXAMPLES = FIXTURES / "fhir-r4-examples" / "Bundle"
SYNTHEA = FIXTURES / "synthea-r4"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def entry(resource: dict[str, Any], method: str = "POST", url: str | None = None,
          full_url: str | None = None, **request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resource": resource,
                           "request": {"method": method, "url": url or resource["resourceType"], **request}}
    if full_url:
        out["fullUrl"] = full_url
    return out


def test_transaction_rewrites_urn_uuid_references(fhir: Fhir) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry({"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
               "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}}),
        entry({"resourceType": "Patient", "name": [{"family": "Roux"}]},
              full_url="urn:uuid:11111111-1111-4111-8111-111111111111"),
    ]}
    resp = fhir.bundle(bundle)
    assert resp["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in resp["entry"]] == ["201", "201"]
    patient_loc = resp["entry"][1]["response"]["location"]
    assert patient_loc.startswith("Patient/")
    obs = fhir.get(resp["entry"][0]["response"]["location"]).json()
    assert obs["subject"]["reference"] == "/".join(patient_loc.split("/")[:2])
    pid = patient_loc.split("/")[1]
    assert len(fhir.search_ids(f"Observation?subject=Patient/{pid}")) == 1


def test_transaction_is_atomic(fhir: Fhir) -> None:
    fhir.create({"resourceType": "Patient", "id": "x", "name": [{"family": "Avant"}]})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry({"resourceType": "Patient", "name": [{"family": "Nouveau"}]}),
        entry({"resourceType": "Patient", "id": "p9", "name": [{"family": "Remplacé"}]}, "PUT", "Patient/p9",
              ifMatch='W/"7"'),
    ]}
    r = fhir.post("", json=bundle)
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "entry 1" in r.json()["issue"][0]["diagnostics"]
    assert fhir.search_ids("Patient?family=nouveau") == []
    assert fhir.get("Patient").json()["total"] == 1


def test_transaction_processing_order_and_conditional_references(fhir: Fhir) -> None:
    fhir.create({"resourceType": "Patient", "identifier": [{"system": "urn:ipp", "value": "42"}]})
    doomed = fhir.create({"resourceType": "Organization", "name": "Ancienne"})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        # GET runs last, so it sees the new Observation; DELETE runs first.
        {"request": {"method": "GET", "url": "Observation?subject:Patient.identifier=urn:ipp|42"}},
        entry({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": "Patient?identifier=urn:ipp|42"}}),
        {"request": {"method": "DELETE", "url": f"Organization/{doomed['id']}"}},
    ]}
    resp = fhir.bundle(bundle)
    statuses = [e["response"]["status"][:3] for e in resp["entry"]]
    assert statuses == ["200", "201", "204"]
    assert resp["entry"][0]["resource"]["total"] == 1
    assert fhir.get(f"Organization/{doomed['id']}").status_code == 410


def test_unresolvable_conditional_reference_fails_the_transaction(fhir: Fhir) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": "Patient?identifier=urn:ipp|none"}})]}
    r = fhir.post("", json=bundle)
    assert r.status_code == 412
    assert fhir.get("Observation").json()["total"] == 0


def test_conditional_create_inside_a_transaction(fhir: Fhir) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:ipp", "value": "7"}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(patient, full_url="urn:uuid:22222222-2222-4222-8222-222222222222", ifNoneExist="identifier=urn:ipp|7"),
        entry({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"}})]}
    first = fhir.bundle(bundle)
    second = fhir.bundle(bundle)
    assert first["entry"][0]["response"]["status"].startswith("201")
    assert second["entry"][0]["response"]["status"].startswith("200")
    assert len(fhir.search_ids("Patient")) == 1
    pid = fhir.search_ids("Patient")[0]
    assert len(fhir.search_ids(f"Observation?subject=Patient/{pid}")) == 2


def test_batch_entries_fail_independently(fhir: Fhir) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        entry({"resourceType": "Patient", "name": [{"family": "Un"}]}),
        {"request": {"method": "GET", "url": "Patient/absent"}},
        entry({"resourceType": "Patient", "name": [{"family": "Deux"}]}),
    ]}
    resp = fhir.bundle(bundle)
    assert resp["type"] == "batch-response"
    assert [e["response"]["status"][:3] for e in resp["entry"]] == ["201", "404", "201"]
    assert resp["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert fhir.get("Patient").json()["total"] == 2


def test_bundle_shape_errors(fhir: Fhir) -> None:
    for body in [{"resourceType": "Bundle", "type": "collection"},
                 {"resourceType": "Patient"},
                 {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]}]:
        r = fhir.post("", json=body)
        assert r.status_code == 400, body
        assert r.json()["resourceType"] == "OperationOutcome"


def _expected_counts(bundles: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["resource"]["resourceType"] for b in bundles for e in b["entry"]
                   if e["request"]["method"] in ("POST", "PUT"))


def _external(bundles: list[dict[str, Any]]) -> set[str]:
    """References that name no entry of the bundles (the examples point at outside resources)."""
    internal = set()
    for b in bundles:
        for e in b["entry"]:
            url = e.get("fullUrl", "")
            internal.add(url)
            if "://" in url:
                internal.add("/".join(url.split("/")[-2:]))
    return {r for b in bundles for r in _refs(b) if r not in internal}


def _dangling_references(fhir: Fhir, types: set[str], external: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Every literal reference stored in these types points at a stored resource."""
    missing = []
    for rtype in types:
        page: dict[str, Any] | None = fhir.get(f"{rtype}?_count=1000").json()
        while page:
            for e in page.get("entry", []):
                for ref in _refs(e["resource"]):
                    if ref.startswith(("#", "http", "urn:")):
                        assert not ref.startswith("urn:uuid:"), ref
                        continue
                    if ref not in external and fhir.get(ref).status_code != 200:
                        missing.append(ref)
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            page = fhir.get(nxt[0]).json() if nxt else None
    return missing


def _refs(node: Any) -> list[str]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                out.append(v)
            else:
                out += _refs(v)
    elif isinstance(node, list):
        for v in node:
            out += _refs(v)
    return out


def test_documents_outside_mhd_are_refused_and_nothing_is_stored(fhir: Fhir) -> None:
    """The spec's XDS example posts a DocumentReference without a SubmissionSet: documents enter a
    record only through an MHD publication (ITI-65/ITI-105), where the French rules are checked."""
    bundle = load(EXAMPLES / "Bundle-xds.json")
    resp = fhir.post("", json=bundle)
    assert resp.status_code == 422, resp.text
    assert "ITI-65" in resp.json()["issue"][0]["diagnostics"]
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 0
    assert fhir.get("Patient?_summary=count").json()["total"] == 0


@pytest.mark.parametrize("name", ["Bundle-hla-1.json", "Bundle-ussg-fht.json"])
def test_spec_transaction_examples_load(fhir: Fhir, name: str) -> None:
    bundle = load(EXAMPLES / name)
    resp = fhir.bundle(bundle)
    assert len(resp["entry"]) == len(bundle["entry"])
    assert all(e["response"]["status"][:3] in ("200", "201") for e in resp["entry"])
    counts = {t: fhir.get(f"{t}?_summary=count").json()["total"] for t in _expected_counts([bundle])}
    assert counts == dict(_expected_counts([bundle]))
    assert _dangling_references(fhir, set(counts), _external([bundle])) == []


@pytest.mark.parametrize("name", ["Bundle-bundle-request-simplesummary.json",
                                  "Bundle-bundle-request-medsallergies.json"])
def test_spec_batch_examples_answer_every_entry(fhir: Fhir, name: str) -> None:
    fhir.put("Patient/example", json={"resourceType": "Patient", "id": "example"})
    bundle = load(EXAMPLES / name)
    resp = fhir.bundle(bundle)
    assert len(resp["entry"]) == len(bundle["entry"])
    assert resp["entry"][0]["resource"]["id"] == "example"
    for sent, got in zip(bundle["entry"], resp["entry"], strict=True):
        status = got["response"]["status"][:3]
        # The $current-* lists and MedicationStatement.notgiven are not R4 search parameters:
        # those entries are refused one by one, with an OperationOutcome saying why.
        if "_list=" in sent["request"]["url"] or "notgiven" in sent["request"]["url"]:
            assert status == "400"
            assert got["response"]["outcome"]["resourceType"] == "OperationOutcome"
        else:
            assert status == "200", got


def test_synthea_bundles_load_after_their_directory(fhir: Fhir) -> None:
    directory = [load(p) for p in sorted((SYNTHEA / "directory").glob("*.json"))]
    patients = [load(p) for p in sorted((SYNTHEA / "patients").glob("*.json"))]
    for bundle in directory + patients:
        resp = fhir.bundle(bundle)
        assert all(e["response"]["status"][:3] in ("200", "201") for e in resp["entry"])
    expected = _expected_counts(directory + patients)
    got = {t: fhir.get(f"{t}?_summary=count").json()["total"] for t in expected}
    assert got == dict(expected)
    assert _dangling_references(fhir, {"Encounter", "Observation", "Condition"}) == []
    # References were rewritten into searchable links: every Encounter belongs to a Patient.
    patient_ids = fhir.search_ids("Patient?_count=100")
    per_patient = [fhir.get(f"Encounter?patient={pid}&_summary=count").json()["total"] for pid in patient_ids]
    assert sum(per_patient) == expected["Encounter"]
