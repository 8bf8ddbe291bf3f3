"""CDA R2 documents published through ITI-105 (the ANS CI-SIS examples), the size limit, the
production identity rule, and the MHD actors in the CapabilityStatement. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from carnet.config import Mode
from carnet.documents import cda
from carnet.documents.cda_checks import metadata_from_header
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import Traits
from tests.conftest import FIXTURES, Fhir, LiveServer

CDA_DIR = FIXTURES / "cda-r2"
VALID_KEY = ["BIO-TROD_2024.01_COVID-19.xml", "DOC_NON_STRUCTURE_CDA-R2-N1.xml", "VSM_1.4_2022.01.xml"]
WRONG_KEY = {"CSE-MDE_2023.01.xml": "47", "CSE-CS9_2025.01.xml": "83"}


def bare_cda(data: bytes) -> dict[str, Any]:
    """ITI-105 of a bare CDA: everything else comes from its header."""
    return {"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": "text/xml", "data": base64.b64encode(data).decode()}}]}


def patient_of(header: cda.CdaHeader, pid: str) -> dict[str, Any]:
    p = header.patient
    assert p is not None and p.name is not None and p.birth_time is not None and header.ins is not None
    traits = Traits(p.name.family or "", p.name.given, p.birth_time.to_date(), p.fhir_gender or "unknown",
                    p.birthplace.insee_code if p.birthplace else None)
    return insfhir.build_patient(traits, matricule=header.ins.value, oid=header.ins.oid.oid, resource_id=pid)


@pytest.mark.parametrize("name", VALID_KEY)
def test_cda_is_published_with_metadata_from_its_header(fhir: Fhir, name: str) -> None:
    data = (CDA_DIR / name).read_bytes()
    header = cda.read_header(data)
    r = fhir.put("Patient/cda-patient", json=patient_of(header, "cda-patient"))
    assert r.status_code == 201, r.text
    r = fhir.post("DocumentReference", json=bare_cda(data))
    assert r.status_code == 201, r.text
    doc = r.json()
    derived = metadata_from_header(header)
    assert doc["subject"]["reference"] == "Patient/cda-patient"
    for key in ("masterIdentifier", "type", "category", "date", "securityLabel"):
        assert doc[key] == derived[key], key
    for key, value in derived.get("context", {}).items():
        assert doc["context"][key] == value, key
    for key, value in derived["content"][0]["attachment"].items():
        assert doc["content"][0]["attachment"][key] == value, key
    assert fhir.get(doc["content"][0]["attachment"]["url"]).content == data
    if header.non_xml_body is not None:  # level 1: the embedded PDF is a content of its own
        pdf = doc["content"][1]["attachment"]
        assert pdf["contentType"] == "application/pdf"
        got = fhir.get(pdf["url"])
        assert got.content == header.non_xml_body.content
        assert got.content.startswith(b"%PDF")
    else:
        assert len(doc["content"]) == 1
    # the same CDA again: idempotent, the existing entry
    again = fhir.post("DocumentReference", json=bare_cda(data))
    assert again.status_code == 200, again.text
    assert again.json()["id"] == doc["id"]


@pytest.mark.parametrize("name", sorted(WRONG_KEY))
def test_cda_with_a_wrong_ins_key_is_refused_naming_the_key(fhir: Fhir, name: str) -> None:
    fhir.put("Patient/p1", json={"resourceType": "Patient", "id": "p1", "name": [{"family": "X"}]})
    body = bare_cda((CDA_DIR / name).read_bytes())
    body["subject"] = {"reference": "Patient/p1"}
    r = fhir.post("DocumentReference", json=body)
    assert r.status_code == 422, r.text
    text = json.dumps(r.json(), ensure_ascii=False)
    assert WRONG_KEY[name] in text and "cl" in text.lower()
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 0


def test_cda_contradicting_its_metadata_is_refused_naming_the_fields(fhir: Fhir) -> None:
    data = (CDA_DIR / "BIO-TROD_2024.01_COVID-19.xml").read_bytes()
    header = cda.read_header(data)
    fhir.put("Patient/cda-patient", json=patient_of(header, "cda-patient"))
    body = bare_cda(data)
    body["type"] = {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]}
    body["date"] = "1999-01-01T00:00:00Z"
    r = fhir.post("DocumentReference", json=body)
    assert r.status_code == 422, r.text
    expressions = {e for i in r.json()["issue"] for e in i.get("expression", [])}
    assert any("type" in e for e in expressions), r.text
    assert any("date" in e for e in expressions), r.text


def test_hostile_xml_is_refused(fhir: Fhir) -> None:
    fhir.put("Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            b'<ClinicalDocument xmlns="urn:hl7-org:v3">&b;</ClinicalDocument>')
    body = bare_cda(bomb)
    body["subject"] = {"reference": "Patient/p1"}
    r = fhir.post("DocumentReference", json=body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_declares_the_mhd_actors(fhir: Fhir) -> None:
    ours = fhir.get("metadata").json()
    base = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD"
    assert {f"{base}.DocumentRecipient", f"{base}.DocumentResponder"} <= set(ours["instantiates"])
    by_type = {r["type"]: r for r in ours["rest"][0]["resource"]}
    responder = json.loads((FIXTURES / "ihe-mhd-capabilities/CapabilityStatement-IHE.MHD.DocumentResponder.json")
                           .read_text())
    for res in responder["rest"][0]["resource"]:
        mine = by_type[res["type"]]
        assert {i["code"] for i in res.get("interaction", [])} <= {i["code"] for i in mine["interaction"]}
        names = {p["name"].lower() for p in mine["searchParam"]}
        for p in res.get("searchParam", []):
            head = p["name"].split(".")[0].lower()  # chains: the reference parameter they start from
            assert head in names, (res["type"], p["name"])
    recipient = json.loads((FIXTURES / "ihe-mhd-capabilities/"
                            "CapabilityStatement-IHE.MHD.DocumentRecipient.Generate.json").read_text())
    assert {i["code"] for i in recipient["rest"][0]["interaction"]} <= {
        i["code"] for i in ours["rest"][0]["interaction"]}


@pytest.fixture
def strict(fhir: Fhir) -> Iterator[httpx.Client]:
    """A second server on the same database: production mode, 1 KiB document limit."""
    settings = fhir.backend.settings.model_copy(update={"mode": Mode.PRODUCTION, "max_document_bytes": 1024})
    server = LiveServer(settings)
    try:
        with httpx.Client(base_url=server.url + "/fhir/", timeout=60) as client:
            client.issuer = server.app.state.issuer  # type: ignore[attr-defined]  # tokens for this server
            yield client
    finally:
        server.stop()


def test_production_requires_a_qualified_identity_and_limits_size(fhir: Fhir, strict: httpx.Client) -> None:
    from carnet.auth.principal import Principal

    token = strict.issuer.issue(Principal.system("hospital-it"))  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    matricule = nir.make_matricule("1840375056123")
    traits = Traits("DURAND", ("PAUL",), date(1984, 3, 1), "male", "75056")
    fhir.put("Patient/prov", json=insfhir.build_patient(traits, matricule=matricule, oid=nir.OID_INS_NIR,
                                                        resource_id="prov"))
    doc = {"resourceType": "DocumentReference", "status": "current",
           "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4.77"},
           "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
           "subject": {"reference": "Patient/prov"},
           "content": [{"attachment": {"contentType": "application/pdf",
                                       "data": base64.b64encode(b"%PDF small").decode()}}]}
    r = strict.post("DocumentReference", json=doc, headers=headers)
    assert r.status_code == 422, r.text
    assert "qualif" in r.text
    big = json.loads(json.dumps(doc))
    big["content"][0]["attachment"]["data"] = base64.b64encode(b"x" * 2048).decode()
    r = strict.post("DocumentReference", json=big, headers=headers)
    assert r.status_code == 413, r.text
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 0
