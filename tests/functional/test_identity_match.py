"""Patient/$match, Patient/$merge and duplicate detection, over HTTP on both databases."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from carnet.auth.principal import Kind, Principal
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade
from carnet.fhir.store import Repository
from carnet.fhir.validation import validate
from carnet.identity import nir
from carnet.identity.duplicates import DuplicateKind, find_duplicates
from carnet.identity.fhir import birthplace_extension, build_patient
from carnet.identity.matching import MATCH_GRADE_EXTENSION
from carnet.identity.status import Traits
from tests.conftest import Fhir, LiveServer
from tests.support.cli import run_carnet


def run(*args: str, data: Path) -> Result:
    return run_carnet(*args, "--data", str(data), env={})


DEMO = f"urn:oid:{nir.OID_INS_NIR_DEMO}"


@pytest.fixture
def client(fhir: Fhir) -> Fhir:
    return fhir


def ins_patient(family: str, given: tuple[str, ...], born: str, sex: str, place: str | None = "76451",
                matricule13: str | None = None) -> dict[str, Any]:
    traits = Traits(birth_family_name=family, birth_given_names=given, birth_date=date.fromisoformat(born),
                    sex=sex, birthplace_code=place)
    matricule = nir.make_matricule(matricule13) if matricule13 else None
    return build_patient(traits, matricule=matricule, oid=nir.OID_INS_NIR_DEMO)


def plain_patient(family: str, given: list[str], born: str, sex: str | None = None) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family, "given": given}],
                               "birthDate": born}
    if sex:
        patient["gender"] = sex
    return patient


def match(fhir: Fhir, patient: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}
    if "only_certain" in params:
        body["parameter"].append({"name": "onlyCertainMatches", "valueBoolean": params["only_certain"]})
    if "count" in params:
        body["parameter"].append({"name": "count", "valueInteger": params["count"]})
    r = fhir.post("Patient/$match", json=body)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return list(bundle.get("entry") or [])


def grade(entry: dict[str, Any]) -> str:
    (ext,) = [e for e in entry["search"]["extension"] if e["url"] == MATCH_GRADE_EXTENSION]
    return str(ext["valueCode"])


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]


HELENE = ("HÉLÈNE", "MARIE")
QUERY = plain_patient("martin dupont", ["helene"], "1984-12-03", "female") | {
    "extension": [birthplace_extension("76451")]}


def test_match_tolerates_accents_case_hyphens_and_compound_names_ordered_by_score(client: Fhir) -> None:
    fr_core = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female",
                                        matricule13="2841276451123"))
    generic = client.create(plain_patient("Martin Dupont", ["Helene"], "1984-12-03", "female"))
    part = client.create(ins_patient("DUPONT", ("HELENE",), "1984-12-03", "female"))
    client.create(ins_patient("BERNARD", ("PAUL",), "1984-12-03", "male"))  # same day, someone else
    client.create(ins_patient("MARTIN-DUPONT", ("LUC",), "1950-01-01", "male"))  # same name, someone else
    entries = match(client, QUERY)
    # MARTIN-DUPONT HÉLÈNE MARIE, same birthplace: every trait agrees; DUPONT is part of the compound
    # name; the generic record has no birthplace
    assert ids(entries) == [fr_core["id"], part["id"], generic["id"]]
    assert [grade(e) for e in entries] == ["certain", "probable", "probable"]
    scores = [e["search"]["score"] for e in entries]
    assert scores[0] > scores[1] > scores[2]
    assert all(0 < s <= 1 for s in scores)
    assert all(e["search"]["mode"] == "match" for e in entries)
    assert entries[0]["fullUrl"].endswith(f"/Patient/{fr_core['id']}")
    assert entries[0]["resource"]["name"][0]["family"] == "MARTIN-DUPONT"


def test_a_typo_in_the_birth_date_or_the_name_is_still_found(client: Fhir) -> None:
    stored = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    date_typo = plain_patient("Martin-Dupont", ["Hélène"], "1984-12-08", "female")  # found by name
    entries = match(client, date_typo)
    assert ids(entries) == [stored["id"]]
    assert grade(entries[0]) == "possible"
    name_typo = plain_patient("MARTNI-DUPONT", ["HELENE"], "1984-12-03", "female")  # found by date
    entries = match(client, name_typo)
    assert ids(entries) == [stored["id"]] and grade(entries[0]) in ("probable", "possible")
    first_part = plain_patient("MARTIN", ["Helene"], "1984-12-30", "female")  # the compound's first part
    assert ids(match(client, first_part)) == [stored["id"]]
    year_typo = plain_patient("Martin Dupont", ["Hélène"], "1948-12-03", "female")  # same day, other year
    assert ids(match(client, year_typo)) == [stored["id"]]
    assert match(client, plain_patient("DURAND", ["Helene"], "1984-11-30", "female")) == []


def test_only_certain_matches_and_count(client: Fhir) -> None:
    certain = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    client.create(plain_patient("Martin Dupont", ["Helene"], "1984-12-03", "female"))
    client.create(ins_patient("DUPONT", ("HELENE",), "1984-12-03", "female"))
    assert len(match(client, QUERY)) == 3
    only = match(client, QUERY, only_certain=True)
    assert ids(only) == [certain["id"]] and grade(only[0]) == "certain"
    assert ids(match(client, QUERY, count=1)) == [certain["id"]]
    assert len(match(client, QUERY, count=2)) == 2
    assert len(match(client, QUERY, only_certain=False)) == 3
    # two certain matches: the operation returns none of them, and says why
    client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    entries = match(client, QUERY, only_certain=True)
    assert ids(entries) == []
    assert [e["search"]["mode"] for e in entries] == ["outcome"]
    assert entries[0]["resource"]["resourceType"] == "OperationOutcome"


def test_the_input_itself_and_deleted_patients_are_not_proposed(client: Fhir) -> None:
    kept = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    gone = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    assert client.delete(f"Patient/{gone['id']}").status_code == 204
    assert ids(match(client, kept)) == []
    assert ids(match(client, QUERY)) == [kept["id"]]


def test_a_bare_patient_body_is_accepted(client: Fhir) -> None:
    stored = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    r = client.post("Patient/$match", json=QUERY)
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [stored["id"]]


@pytest.mark.parametrize(("body", "why"), [
    (None, "no body"),
    ({"resourceType": "Parameters", "parameter": []}, "resource"),
    ({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
        "resourceType": "Observation", "status": "final", "code": {"text": "x"}}}]}, "Observation"),
    ({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
        "resourceType": "Patient", "name": [{"family": "MARTIN"}]}}]}, "birth date"),
    ({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": QUERY},
                                                  {"name": "count", "valueInteger": 0}]}, "count"),
    ({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": QUERY},
                                                  {"name": "onlyCertainMatches", "valueString": "yes"}]},
     "onlyCertainMatches"),
    ({"resourceType": "Observation"}, "Parameters"),
])
def test_bad_input_is_400_with_an_operation_outcome(client: Fhir, body: Any, why: str) -> None:
    r = client.post("Patient/$match", json=body) if body is not None else client.post("Patient/$match")
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["resourceType"] == "OperationOutcome"
    assert why in " ".join(i.get("diagnostics", "") for i in out["issue"])


def test_match_is_post_only_and_declared(client: Fhir) -> None:
    assert client.get("Patient/$match").status_code == 405
    rest = client.get("metadata").json()["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {"match", "merge"} <= {o["name"] for o in patient.get("operation", [])}


# -- $merge -------------------------------------------------------------------------------------------

def merge_params(source: str, target: str, *extra: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}}, *extra]}


def observation(patient: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": {"value": 70, "unit": "kg"}}


def test_merge_moves_references_and_links_the_records(client: Fhir) -> None:
    source = client.create(plain_patient("Martin Dupont", ["Helene"], "1984-12-03", "female"))
    target = client.create(ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female"))
    moved = [client.create(observation(source["id"], c)) for c in ("29463-7", "8302-2")]
    stays = client.create(observation(target["id"], "8867-4"))
    absolute = client.create({"resourceType": "Condition", "subject": {
        "reference": f"{client.base}/Patient/{source['id']}"}, "code": {"text": "asthme"}})
    preview = client.post("Patient/$merge", json=merge_params(
        source["id"], target["id"], {"name": "preview", "valueBoolean": True}))
    assert preview.status_code == 200, preview.text
    assert client.search_ids(f"Observation?subject=Patient/{source['id']}") != []

    r = client.post("Patient/$merge", json=merge_params(source["id"], target["id"]))
    assert r.status_code == 200, r.text
    out = {p["name"]: p for p in r.json()["parameter"]}
    assert out["moved"]["valueInteger"] == 3
    assert "3" in out["outcome"]["resource"]["issue"][0]["diagnostics"]
    assert out["result"]["resource"]["id"] == target["id"]
    assert client.search_ids(f"Observation?subject=Patient/{source['id']}") == []
    assert sorted(client.search_ids(f"Observation?subject=Patient/{target['id']}")) == sorted(
        o["id"] for o in [*moved, stays])
    assert client.search_ids(f"Condition?subject=Patient/{target['id']}") == [absolute["id"]]
    condition = client.get(f"Condition/{absolute['id']}").json()
    assert condition["subject"]["reference"] == f"{client.base}/Patient/{target['id']}"
    obs = client.get(f"Observation/{moved[0]['id']}").json()
    assert obs["meta"]["versionId"] == "2"  # an ordinary update: history keeps where it was
    old = client.get(f"Observation/{moved[0]['id']}/_history/1").json()
    assert old["subject"]["reference"] == f"Patient/{source['id']}"

    merged = client.get(f"Patient/{source['id']}").json()
    assert merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{target['id']}"}, "type": "replaced-by"}]
    survivor = client.get(f"Patient/{target['id']}").json()
    assert survivor["link"] == [{"other": {"reference": f"Patient/{source['id']}"}, "type": "replaces"}]
    assert client.search_ids(f"Patient?link=Patient/{source['id']}") == [target["id"]]
    # the merged record is no longer proposed as a match
    assert ids(match(client, QUERY)) == [target["id"]]


def test_merge_by_identifier(client: Fhir) -> None:
    source = client.create(ins_patient("MARTIN", ("JEAN",), "1970-05-01", "male", matricule13="1700576451001"))
    target = client.create(ins_patient("MARTIN", ("JEAN",), "1970-05-01", "male", matricule13="1700576451002"))
    client.create(observation(source["id"], "29463-7"))
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient-identifier", "valueIdentifier": {
            "system": DEMO, "value": nir.make_matricule("1700576451001")}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{target['id']}"}}]}
    r = client.post("Patient/$merge", json=body)
    assert r.status_code == 200, r.text
    assert client.get(f"Patient/{source['id']}").json()["active"] is False
    unknown = body | {"parameter": [{"name": "source-patient-identifier", "valueIdentifier": {
        "system": DEMO, "value": nir.make_matricule("1700576451009")}}, body["parameter"][1]]}
    assert client.post("Patient/$merge", json=unknown).status_code == 422


@pytest.mark.parametrize("kind", [Kind.PRACTITIONER, Kind.PATIENT])
def test_only_an_operator_may_merge(client: Fhir, live: LiveServer, kind: Kind) -> None:
    source = client.create(plain_patient("MARTIN", ["Jean"], "1970-05-01", "male"))
    target = client.create(plain_patient("MARTIN", ["Jean"], "1970-05-01", "male"))
    client.create(observation(source["id"], "29463-7"))
    token = live.app.state.issuer.issue(Principal(kind, "someone", frozenset({"system/*.cruds"})))
    r = client.post("Patient/$merge", json=merge_params(source["id"], target["id"]),
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"Patient/{source['id']}").json().get("active") is not False
    assert len(client.search_ids(f"Observation?subject=Patient/{source['id']}")) == 1
    operator = live.app.state.issuer.issue(
        Principal(Kind.OPERATOR, "operator", frozenset({"system/*.cruds"})))
    r = client.post("Patient/$merge", json=merge_params(source["id"], target["id"]),
                    headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 200, r.text
    # the operator reads no clinical content, yet the merge moves it all
    assert client.get(f"Observation?subject=Patient/{target['id']}",
                      headers={"Authorization": f"Bearer {operator}"}).json().get("entry") in (None, [])
    assert len(client.search_ids(f"Observation?subject=Patient/{target['id']}")) == 1


def test_merge_refuses_itself_a_merged_or_inactive_target_and_bad_input(client: Fhir) -> None:
    a = client.create(plain_patient("MARTIN", ["Jean"], "1970-05-01", "male"))
    b = client.create(plain_patient("MARTIN", ["Jean"], "1970-05-01", "male"))
    c = client.create(plain_patient("MARTIN", ["Jean"], "1970-05-01", "male"))
    inactive = client.create(plain_patient("MARTIN", ["Jean"], "1970-05-01", "male") | {"active": False})
    assert client.post("Patient/$merge", json=merge_params(a["id"], a["id"])).status_code == 422
    assert client.post("Patient/$merge", json=merge_params(a["id"], inactive["id"])).status_code == 422
    assert client.post("Patient/$merge", json=merge_params(a["id"], b["id"])).status_code == 200
    assert client.post("Patient/$merge", json=merge_params(c["id"], a["id"])).status_code == 422  # merged
    assert client.post("Patient/$merge", json=merge_params(a["id"], c["id"])).status_code == 422  # again
    assert client.post("Patient/$merge", json=merge_params(c["id"], "no-such-patient")).status_code == 404
    missing = {"resourceType": "Parameters", "parameter": merge_params(a["id"], b["id"])["parameter"][:1]}
    assert client.post("Patient/$merge", json=missing).status_code == 400
    wrong_type = merge_params(c["id"], b["id"])
    wrong_type["parameter"][1]["valueReference"]["reference"] = "Practitioner/x"
    assert client.post("Patient/$merge", json=wrong_type).status_code == 400
    assert client.post("Patient/$merge").status_code == 400
    assert client.get(f"Patient/{c['id']}").json().get("active") is not False


# -- duplicates ---------------------------------------------------------------------------------------

def _duplicate_patients() -> dict[str, dict[str, Any]]:
    return {
        "a": ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female", matricule13="2841276451123"),
        "b": ins_patient("Martin Dupont", ("Hélène",), "1984-12-03", "female", matricule13="2841276451124"),
        "c": ins_patient("LEROY", ("PAUL",), "1961-02-20", "male", matricule13="1610275056001"),
        "d": ins_patient("LEROY", ("PAUL",), "1961-02-21", "male", matricule13="1610275056001"),
        "e": ins_patient("PETIT", ("LUC",), "1990-07-14", "male", matricule13="1900775056002"),
        "f": ins_patient("PETIT", ("LUC",), "1990-07-14", "male", matricule13="1900775056002"),
        "g": plain_patient("Garcia", ["Ana"], "2001-03-04", "female"),
        "h": plain_patient("GARCIA", ["ANA"], "2001-03-04", "female"),
        "unique": ins_patient("MOREAU", ("ZOE",), "2010-10-10", "female"),
        "merged": ins_patient("MARTIN-DUPONT", HELENE, "1984-12-03", "female") | {"active": False},
    }


def test_find_duplicates_reports_both_kinds_by_set_based_queries(client: Fhir) -> None:
    made = {k: client.create(p)["id"] for k, p in _duplicate_patients().items()}
    names = {v: k for k, v in made.items()}
    with client.backend.engine.connect() as conn:
        pairs = find_duplicates(conn, 50)
    found = {(tuple(sorted((names[p.first], names[p.second])))): p for p in pairs}
    assert set(found) == {("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")}
    assert found[("a", "b")].kind is DuplicateKind.SAME_TRAITS
    assert "≠" in found[("a", "b")].reason and len(found[("a", "b")].matricules) == 2
    assert found[("c", "d")].kind is DuplicateKind.SAME_MATRICULE
    assert "birth date" in found[("c", "d")].reason and "birth name" not in found[("c", "d")].reason
    assert found[("e", "f")].kind is DuplicateKind.IDENTICAL
    assert found[("g", "h")].kind is DuplicateKind.SAME_TRAITS and "no matricule" in found[("g", "h")].reason
    assert all(p.first < p.second for p in pairs)
    assert found[("a", "b")].grade is not None
    with client.backend.engine.connect() as conn:
        assert len(find_duplicates(conn, 2)) == 2


def test_the_commands_list_duplicates_and_merge(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings)
    upgrade(engine)
    made: dict[str, str] = {}
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        repo = Repository(conn, Principal.system(), validator=validate)
        for key, patient in _duplicate_patients().items():
            made[key] = repo.create(patient).id
        obs = repo.create(observation(made["g"], "29463-7")).id
    engine.dispose()
    r = run("identity", "duplicates", data=tmp_path)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("4 ")
    ab = next(line for line in lines if made["a"] in line)
    assert made["b"] in ab and "same traits, different matricule" in ab
    cd = next(line for line in lines if made["c"] in line)
    assert "same matricule, different traits" in cd and "birth date" in cd
    assert len(run("identity", "duplicates", "--limit", "1", data=tmp_path).stdout.splitlines()) == 2

    r = run("identity", "merge", made["g"], made["h"], "--preview", data=tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "1 resources would move" in r.stdout
    r = run("identity", "merge", made["g"], f"Patient/{made['h']}", data=tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "1 resources moved" in r.stdout
    r = run("identity", "duplicates", data=tmp_path)
    assert r.stdout.splitlines()[-1].startswith("3 ") and made["g"] not in r.stdout
    again = run("identity", "merge", made["g"], made["h"], data=tmp_path)
    assert again.exit_code != 0 and "already merged" in again.stderr
    engine = make_engine(settings)
    with engine.connect() as conn:
        repo = Repository(conn, Principal.system())
        stored = repo.read("Observation", obs).resource()
    engine.dispose()
    assert stored["subject"]["reference"] == f"Patient/{made['h']}"
