"""The INS identity workflow over HTTP (C1): matricule checks, the status the server computes from
INSi (I) and document (C) facts, trait edits, flags, history, INSi's four kinds of answer, and the
production rules. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from carnet.auth.principal import Principal
from carnet.config import Mode
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import Traits
from tests.conftest import Fhir, LiveServer

DEMO = nir.OID_INS_NIR_DEMO
# a woman born in March 1984 in Rouen (INSEE 76540), order 123
MARIE_NIR = nir.make_matricule("2840376540123")
MARIE = Traits("MARTIN-DUPONT", ("MARIE", "HÉLÈNE"), date(1984, 3, 12), "female", "76540")


def insi_file(fhir: Fhir) -> Path:
    return fhir.backend.settings.data_dir / "insi" / "identities.json"


def write_insi(fhir: Fhir, *identities: tuple[str, Traits]) -> None:
    path = insi_file(fhir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identities": [
        {"matricule": m, "oid": DEMO, "traits": {
            "birth_family_name": t.birth_family_name, "birth_given_names": list(t.birth_given_names),
            "birth_date": t.birth_date.isoformat(), "sex": t.sex, "birthplace_code": t.birthplace_code}}
        for m, t in identities]}), encoding="utf-8")


@pytest.fixture
def insi(fhir: Fhir) -> Iterator[Fhir]:
    write_insi(fhir, (MARIE_NIR, MARIE))
    yield fhir
    insi_file(fhir).unlink(missing_ok=True)


def status_of(patient: dict[str, Any]) -> str:
    [ext] = [e for e in patient["extension"] if e["url"] == insfhir.IDENTITY_RELIABILITY]
    return str(next(p["valueCoding"]["code"] for p in ext["extension"] if p["url"] == "identityStatus"))


def local_patient(traits: Traits = MARIE, matricule: str | None = MARIE_NIR, **extra: Any) -> dict[str, Any]:
    """The identity as a hospital typed it (in lower case, accents and all), declared QUAL."""
    typed = Traits(traits.birth_family_name.title(), tuple(g.title() for g in traits.birth_given_names),
                   traits.birth_date, traits.sex, traits.birthplace_code)
    p = insfhir.build_patient(typed, matricule=matricule, oid=DEMO, status=insfhir.IdentityStatus.QUAL)
    p.update(extra)
    return p


def check_document(fhir: Fhir, pid: str, code: str) -> httpx.Response:
    return fhir.post(f"Patient/{pid}/$identity-check", json={"resourceType": "Parameters", "parameter": [
        {"name": "documentType", "valueCode": code}]})


def test_a_bad_matricule_is_refused_with_what_and_where(fhir: Fhir) -> None:
    wrong_key = MARIE_NIR[:13] + ("01" if MARIE_NIR[13:] != "01" else "02")
    p = local_patient(matricule=None)
    p["identifier"] = [dict(insfhir.ins_identifier(MARIE_NIR, DEMO), value=wrong_key)]
    r = fhir.post("Patient", json=p)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Patient.identifier[0].value"]
    assert f"attendue {MARIE_NIR[13:]}" in issue["diagnostics"]
    assert f"expected {MARIE_NIR[13:]}" in issue["diagnostics"]
    assert "14" in issue["diagnostics"]  # the key's position
    p["identifier"][0]["value"] = MARIE_NIR[:5] + "X" + MARIE_NIR[6:]
    r = fhir.post("Patient", json=p)
    assert r.status_code == 422 and "position 6" in r.json()["issue"][0]["diagnostics"]
    assert fhir.get("Patient?_summary=count").json()["total"] == 0  # nothing was stored


def test_fr_core_shape_is_required_once_an_ins_is_present(fhir: Fhir) -> None:
    p = local_patient()
    p["name"][0]["given"] = ["Marie", "Hélène"]  # the official name carries only the first given name
    r = fhir.post("Patient", json=p)
    assert r.status_code == 422
    assert any(i["expression"][0].startswith("Patient.name[0]") for i in r.json()["issue"])
    generic = {"resourceType": "Patient", "name": [{"use": "official", "family": "Doe", "given": ["J", "K"]}]}
    assert fhir.post("Patient", json=generic).status_code == 201  # without an INS: plain FHIR


def test_the_server_computes_the_status_and_each_fact_moves_it(insi: Fhir) -> None:
    fhir = insi
    created = fhir.create(local_patient())
    pid = created["id"]
    assert status_of(created) == "PROV"  # declared QUAL, but nothing was verified yet
    verified = fhir.post(f"Patient/{pid}/$ins-verify")
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert status_of(body) == "RECUP"
    assert body["name"][0]["family"] == "MARTIN-DUPONT"  # INSi's strict traits replace the typed ones
    assert body["name"][0]["given"] == ["MARIE"]
    assert insfhir.read_traits(body) == MARIE
    checked = check_document(fhir, pid, "PA")
    assert checked.status_code == 200, checked.text
    assert status_of(checked.json()) == "QUAL"
    assert status_of(fhir.get(f"Patient/{pid}").json()) == "QUAL"
    # a client cannot write the status itself
    again = fhir.get(f"Patient/{pid}").json()
    again["extension"] = [e for e in again["extension"] if e["url"] != insfhir.IDENTITY_RELIABILITY]
    again["extension"].append(insfhir.reliability_extension(insfhir.IdentityStatus.PROV))
    assert status_of(fhir.put(f"Patient/{pid}", json=again).json()) == "QUAL"
    # editing a strict trait drops I: QUAL -> VALI
    edited = fhir.get(f"Patient/{pid}").json()
    edited["birthDate"] = "1984-03-13"
    r = fhir.put(f"Patient/{pid}", json=edited)
    assert r.status_code == 200, r.text
    assert status_of(r.json()) == "VALI"
    history = fhir.get(f"Patient/{pid}/$identity-history").json()
    steps = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in t["part"]}
             for t in history["parameter"] if t["name"] == "transition"]
    assert [(s["what"], s["from"], s["to"]) for s in steps] == [
        ("insi-verification", "PROV", "RECUP"), ("document-check", "RECUP", "QUAL"),
        ("strict-traits-edit", "QUAL", "VALI")]
    assert steps[2]["detail"] == "birth_date"
    assert all(s["who"] == "system:development" for s in steps)
    assert history["parameter"][0] == {"name": "status", "valueCode": "VALI"}
    # the Patient's own versions show each status too
    versions = fhir.get(f"Patient/{pid}/_history").json()["entry"]
    assert [status_of(e["resource"]) for e in reversed(versions)] == ["PROV", "RECUP", "QUAL", "QUAL", "VALI"]


def test_flags_forbid_the_document_check_and_keep_the_identity_provisional(insi: Fhir) -> None:
    fhir = insi
    pid = fhir.create(local_patient())["id"]
    assert fhir.post(f"Patient/{pid}/$ins-verify").status_code == 200
    r = fhir.post(f"Patient/{pid}/$identity-flag", json={"resourceType": "Parameters", "parameter": [
        {"name": "flag", "valueCode": "douteuse"}]})
    assert r.status_code == 200, r.text
    assert status_of(r.json()) == "PROV"
    refused = check_document(fhir, pid, "CN")
    assert refused.status_code == 422
    assert "douteuse" in refused.json()["issue"][0]["diagnostics"]
    assert fhir.post(f"Patient/{pid}/$ins-verify").status_code == 422
    assert status_of(fhir.get(f"Patient/{pid}").json()) == "PROV"
    assert check_document(fhir, pid, "XX").status_code == 422  # unknown document type
    r = fhir.post(f"Patient/{pid}/$identity-flag", json={"resourceType": "Parameters", "parameter": [
        {"name": "flag", "valueCode": "douteuse"}, {"name": "value", "valueString": "false"}]})
    assert r.status_code == 400 and "valueBoolean" in r.json()["issue"][0]["diagnostics"]
    assert status_of(fhir.get(f"Patient/{pid}").json()) == "PROV"


def test_insi_lookup_by_traits_several_none_and_unavailable(insi: Fhir) -> None:
    fhir = insi
    # no matricule yet: INSi is asked by traits and supplies it
    pid = fhir.create(local_patient(matricule=None))["id"]
    found = fhir.post(f"Patient/{pid}/$ins-verify").json()
    assert [i["value"] for i in found["identifier"]] == [MARIE_NIR]
    # several identities answer the same traits: nothing changes
    twin = nir.make_matricule("2840376540124")
    write_insi(fhir, (MARIE_NIR, MARIE), (twin, MARIE))
    other = fhir.create(local_patient(matricule=None))
    r = fhir.post(f"Patient/{other['id']}/$ins-verify")
    assert r.status_code == 409 and r.json()["issue"][0]["code"] == "multiple-matches"
    # none
    write_insi(fhir, (twin, Traits("DURAND", ("LEA",), date(1990, 1, 2), "female", "75056")))
    r = fhir.post(f"Patient/{other['id']}/$ins-verify")
    assert r.status_code == 422 and r.json()["issue"][0]["code"] == "not-found"
    # the service is down: a clear 503 and the record is untouched
    insi_file(fhir).unlink()
    r = fhir.post(f"Patient/{other['id']}/$ins-verify")
    assert r.status_code == 503
    assert r.json()["issue"][0]["code"] == "transient" and "INSi" in r.json()["issue"][0]["diagnostics"]
    assert fhir.get(f"Patient/{other['id']}").json() == other
    assert fhir.get(f"Patient/{other['id']}/$identity-history").json()["parameter"] == [
        {"name": "status", "valueCode": "PROV"}]


def test_operations_are_declared_and_unknown_ones_refused(fhir: Fhir) -> None:
    cap = fhir.get("metadata").json()
    [patient] = [r for r in cap["rest"][0]["resource"] if r["type"] == "Patient"]
    names = {o["name"] for o in patient["operation"]}
    assert {"ins-verify", "identity-check", "identity-flag", "identity-history"} <= names
    pid = fhir.create({"resourceType": "Patient"})["id"]
    assert fhir.post(f"Patient/{pid}/$nope").status_code == 400
    assert fhir.post("Patient/unknown-id/$ins-verify").status_code == 404


@pytest.fixture
def production(fhir: Fhir) -> Iterator[httpx.Client]:
    settings = fhir.backend.settings.model_copy(update={"mode": Mode.PRODUCTION})
    server = LiveServer(settings)
    token = server.app.state.issuer.issue(Principal.system("hospital-it"))
    with httpx.Client(base_url=server.url + "/fhir/", timeout=60, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}) as client:
        yield client
    server.stop()


def test_production_refuses_test_and_demo_ins(production: httpx.Client) -> None:
    r = production.post("Patient", json=local_patient())
    assert r.status_code == 422
    issue = next(i for i in r.json()["issue"] if i["expression"] == ["Patient.identifier[0].system"])
    assert "production" in issue["diagnostics"]
    real = local_patient(matricule=None)
    real["identifier"] = [insfhir.ins_identifier(MARIE_NIR, nir.OID_INS_NIR)]
    assert production.post("Patient", json=real).status_code == 201
