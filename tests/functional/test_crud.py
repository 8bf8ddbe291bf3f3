"""The FHIR REST interactions a client relies on, over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir


def patient(family: str = "Durand", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Marie"]}],
            "gender": "female", "birthDate": "1980-04-12", **extra}


def test_create_then_read_returns_the_stored_resource_with_headers(fhir: Fhir) -> None:
    r = fhir.post("Patient", json=patient())
    assert r.status_code == 201
    body = r.json()
    rid = body["id"]
    assert len(rid) == 36  # an opaque UUID, not a sequence
    assert body["meta"]["versionId"] == "1"
    assert r.headers["location"] == f"{fhir.base}/Patient/{rid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in r.headers
    got = fhir.get(f"Patient/{rid}")
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["etag"] == 'W/"1"'


def test_create_ignores_a_client_supplied_id(fhir: Fhir) -> None:
    body = fhir.create(patient(id="chosen-by-client"))
    assert body["id"] != "chosen-by-client"


def test_update_makes_a_new_version_and_vread_returns_each(fhir: Fhir) -> None:
    created = fhir.create(patient())
    rid = created["id"]
    changed = dict(created, gender="other")
    r = fhir.put(f"Patient/{rid}", json=changed)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert fhir.get(f"Patient/{rid}/_history/1").json()["gender"] == "female"
    assert fhir.get(f"Patient/{rid}/_history/2").json()["gender"] == "other"
    assert fhir.get(f"Patient/{rid}/_history/3").status_code == 404


def test_search_follows_updates_of_every_kind_of_indexed_value(fhir: Fhir) -> None:
    subject = fhir.create(patient("Lefebvre"))["id"]
    other = fhir.create(patient("Moreau"))["id"]
    obs = fhir.create({
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{subject}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "effectiveDateTime": "2024-05-01", "valueQuantity": {"value": 70, "unit": "kg",
                                                             "system": "http://unitsofmeasure.org", "code": "kg"}})
    rid = obs["id"]
    changed = dict(obs, subject={"reference": f"Patient/{other}"}, effectiveDateTime="2025-06-02",
                   valueQuantity=dict(obs["valueQuantity"], value=72.5),
                   code={"coding": [{"system": "http://loinc.org", "code": "29463-7"},
                                    {"system": "http://snomed.info/sct", "code": "27113001"}]})
    assert fhir.put(f"Observation/{rid}", json=changed).status_code == 200
    assert fhir.search_ids(f"Observation?subject=Patient/{subject}") == []
    assert fhir.search_ids(f"Observation?subject=Patient/{other}") == [rid]
    assert fhir.search_ids("Observation?date=2024-05-01") == []
    assert fhir.search_ids("Observation?date=2025-06-02") == [rid]
    assert fhir.search_ids("Observation?value-quantity=70") == []
    assert fhir.search_ids("Observation?value-quantity=72.5") == [rid]
    assert fhir.search_ids("Observation?code=http://loinc.org|29463-7") == [rid]  # kept
    assert fhir.search_ids("Observation?code=http://snomed.info/sct|27113001") == [rid]  # added
    # the same body again changes nothing that search sees
    assert fhir.put(f"Observation/{rid}", json=changed).status_code == 200
    assert fhir.search_ids("Observation?code=29463-7") == [rid]
    assert fhir.get("Observation?code=29463-7&_summary=count").json()["total"] == 1
    back = dict(changed, code=obs["code"])
    assert fhir.put(f"Observation/{rid}", json=back).status_code == 200
    assert fhir.search_ids("Observation?code=http://snomed.info/sct|27113001") == []


def test_update_as_create_with_a_client_id(fhir: Fhir) -> None:
    r = fhir.put("Patient/mon-id-1", json=patient(id="mon-id-1"))
    assert r.status_code == 201
    assert r.headers["location"].endswith("/Patient/mon-id-1/_history/1")
    assert fhir.get("Patient/mon-id-1").json()["name"][0]["family"] == "Durand"


def test_update_rejects_an_id_mismatch_and_a_missing_id(fhir: Fhir) -> None:
    r = fhir.put("Patient/a", json=patient(id="b"))
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    r = fhir.put("Patient/a", json=patient())
    assert r.status_code == 400
    assert fhir.get("Patient/a").status_code == 404


def test_if_match_gives_optimistic_locking(fhir: Fhir) -> None:
    rid = fhir.create(patient())["id"]
    ok = fhir.put(f"Patient/{rid}", json=patient(id=rid, gender="male"), headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = fhir.put(f"Patient/{rid}", json=patient(id=rid, gender="other"), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert fhir.get(f"Patient/{rid}").json()["gender"] == "male"


def test_delete_is_logical_read_answers_410_and_history_keeps_versions(fhir: Fhir) -> None:
    rid = fhir.create(patient())["id"]
    assert fhir.delete(f"Patient/{rid}").status_code == 204
    gone = fhir.get(f"Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert fhir.get(f"Patient/{rid}/_history/1").status_code == 200
    history = fhir.get(f"Patient/{rid}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert fhir.search_ids(f"Patient?_id={rid}") == []
    # Deleting again is harmless; a new PUT brings it back as a new version.
    assert fhir.delete(f"Patient/{rid}").status_code == 204
    back = fhir.put(f"Patient/{rid}", json=patient(id=rid))
    assert back.status_code == 200
    assert back.json()["meta"]["versionId"] == "3"


def test_read_of_unknown_resource_and_type(fhir: Fhir) -> None:
    r = fhir.get("Patient/does-not-exist")
    assert r.status_code == 404
    assert r.json()["issue"][0]["code"] == "not-found"
    r = fhir.get("Unicorn/1")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_history_type_and_system_levels(fhir: Fhir) -> None:
    a = fhir.create(patient("A"))
    fhir.put(f"Patient/{a['id']}", json=dict(a, gender="male"))
    fhir.create({"resourceType": "Organization", "name": "Clinique"})
    type_history = fhir.get("Patient/_history").json()
    assert type_history["type"] == "history"
    assert len(type_history["entry"]) == 2
    system = fhir.get("_history").json()
    assert {e["fullUrl"].split("/")[-2] for e in system["entry"]} == {"Patient", "Organization"}
    assert len(system["entry"]) == 3
    first = fhir.get("_history?_count=2").json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    rest = fhir.get(nxt).json()
    assert len(rest["entry"]) == 1


def test_conditional_create_with_if_none_exist(fhir: Fhir) -> None:
    p = patient(identifier=[{"system": "urn:oid:1.2.250.1.999.1.1", "value": "MRN-180047"}])
    cond = {"If-None-Exist": "identifier=urn:oid:1.2.250.1.999.1.1|MRN-180047"}
    first = fhir.post("Patient", json=p, headers=cond)
    assert first.status_code == 201
    again = fhir.post("Patient", json=p, headers=cond)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(fhir.search_ids("Patient")) == 1


def test_conditional_update(fhir: Fhir) -> None:
    ident = {"system": "http://hopital.example/ipp", "value": "IPP-1"}
    r = fhir.put("Patient?identifier=http://hopital.example/ipp|IPP-1", json=patient(identifier=[ident]))
    assert r.status_code == 201
    rid = r.json()["id"]
    r = fhir.put("Patient?identifier=http://hopital.example/ipp|IPP-1",
                 json=patient("Martin", identifier=[ident]))
    assert r.status_code == 200
    assert r.json()["id"] == rid
    assert r.json()["name"][0]["family"] == "Martin"
    fhir.create(patient(identifier=[ident]))
    r = fhir.put("Patient?identifier=http://hopital.example/ipp|IPP-1", json=patient(identifier=[ident]))
    assert r.status_code == 412


def test_json_patch(fhir: Fhir) -> None:
    rid = fhir.create(patient())["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"},
           {"op": "add", "path": "/active", "value": True}]
    r = fhir.patch(f"Patient/{rid}", json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "male"
    assert r.json()["meta"]["versionId"] == "2"
    assert fhir.search_ids("Patient?active=true") == [rid]
    bad = fhir.patch(f"Patient/{rid}", json=[{"op": "replace", "path": "/nope/x", "value": 1}],
                     headers={"Content-Type": "application/json-patch+json"})
    assert bad.status_code == 422
    assert fhir.get(f"Patient/{rid}").json()["meta"]["versionId"] == "2"
    stale = fhir.patch(f"Patient/{rid}", json=ops,
                       headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'})
    assert stale.status_code == 412


def test_prefer_return(fhir: Fhir) -> None:
    minimal = fhir.post("Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    oo = fhir.post("Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201
    assert oo.json()["resourceType"] == "OperationOutcome"
    full = fhir.post("Patient", json=patient(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


def test_bad_input_answers_an_operation_outcome_and_stores_nothing(fhir: Fhir) -> None:
    r = fhir.post("Patient", content=b'{"resourceType": "Patient", ')
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    r = fhir.post("Patient", json={"resourceType": "Patient", "birthDate": "12/04/1980"})
    assert r.status_code in (400, 422)
    assert any("birthDate" in " ".join(i.get("expression", [])) for i in r.json()["issue"])
    r = fhir.post("Patient", json={"resourceType": "Observation", "status": "final",
                                   "code": {"text": "x"}})
    assert r.status_code == 400
    r = fhir.post("Patient", json=[1, 2])
    assert r.status_code == 400
    assert fhir.get("Patient").json()["total"] == 0


def test_every_error_under_fhir_is_an_operation_outcome(fhir: Fhir) -> None:
    for method, path in [("GET", "Patient?unknown-param=1"), ("DELETE", ""), ("GET", "Patient/x/_history/y"),
                         ("POST", "Patient/x"), ("GET", "Patient?birthdate=not-a-date")]:
        r = fhir.request(method, path)
        assert r.status_code >= 400, (method, path)
        assert r.json()["resourceType"] == "OperationOutcome", (method, path)


def test_decimals_keep_their_precision(fhir: Fhir) -> None:
    body = (b'{"resourceType":"Observation","status":"final","code":{"text":"poids"},'
            b'"valueQuantity":{"value":72.50,"unit":"kg"}}')
    r = fhir.post("Observation", content=body)
    assert r.status_code == 201
    assert b'"value":72.50' in fhir.get(f"Observation/{r.json()['id']}").content


def test_capability_statement_lists_what_is_implemented(fhir: Fhir) -> None:
    cs = fhir.get("metadata").json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    patient_cap = next(r for r in rest["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient_cap["searchParam"]}
    assert {"family", "identifier", "birthdate", "_id", "_lastUpdated"} <= names
    assert patient_cap["conditionalCreate"] is True


def test_concurrent_writes_with_refusals_among_them_store_each_accepted_write_once(fhir: Fhir) -> None:
    """Writes arriving together share a commit (on SQLite, a group commit that may run them twice
    when one is refused): every acknowledged create is there once, with the body it was answered
    with, every refused update changed nothing, and every accepted one made exactly one version."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    targets = [fhir.create(patient(f"Cible{i}"))["id"] for i in range(4)]

    def client(n: int) -> list[tuple[str, int, dict[str, Any]]]:
        out = []
        with httpx.Client(base_url=fhir.base + "/", headers={"Content-Type": "application/fhir+json"},
                          timeout=60) as c:
            for k in range(6):
                if k % 3 == 2:  # an update that names a version that never was: 412, nothing changes
                    rid = targets[(n + k) % len(targets)]
                    r = c.put(f"Patient/{rid}", json=patient("Refusé", id=rid), headers={"If-Match": 'W/"99"'})
                    out.append(("refused", r.status_code, {}))
                elif k % 3 == 1:
                    rid = targets[n % len(targets)]
                    for _ in range(20):  # on PostgreSQL two updates of one resource at once: 409, retry
                        r = c.put(f"Patient/{rid}", json=patient(f"Maj{n}-{k}", id=rid))
                        if r.status_code != 409:
                            break
                    out.append(("updated", r.status_code, r.json()))
                else:
                    r = c.post("Patient", json=patient(f"Nouveau{n}-{k}"))
                    out.append(("created", r.status_code, r.json()))
        return out

    with ThreadPoolExecutor(12) as pool:
        results = [x for chunk in pool.map(client, range(12)) for x in chunk]
    assert {(kind, status) for kind, status, _ in results} == {("refused", 412), ("updated", 200), ("created", 201)}
    created = [body for kind, _, body in results if kind == "created"]
    for body in created:
        assert fhir.get(f"Patient/{body['id']}").json() == body
    found = fhir.get("Patient", params={"family": "Nouveau", "_count": "500", "_total": "accurate"}).json()
    assert found["total"] == len(created) == 24
    updates = sum(1 for kind, _, _ in results if kind == "updated")
    versions = sum(int(fhir.get(f"Patient/{rid}").json()["meta"]["versionId"]) for rid in targets)
    assert versions == len(targets) + updates  # one version per accepted update, none per refusal
    assert not fhir.search_ids("Patient?family=Refusé")
