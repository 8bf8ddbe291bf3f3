"""Directory extracts to resources: the ANS CSV layout, FHIR Bundles, batching and idempotence (with an
in-memory store; the same through the server is in tests/functional/test_directory_import.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from carnet.directory import fhir as d
from carnet.directory import importer, keys
from carnet.directory.importer import Key, Record
from carnet.errors import Invalid

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "directory" / "annuaire-extrait.txt"


def sample_lines() -> list[str]:
    return SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)


class Store:
    """What the server would hold: resources by (type, id), written by applying batches."""

    def __init__(self) -> None:
        self.resources: dict[Key, dict[str, Any]] = {}
        self.writes = 0

    def lookup(self, wanted: Sequence[Key]) -> Mapping[Key, dict[str, Any]]:
        return {k: self.resources[k] for k in wanted if k in self.resources}

    def run(self, records: list[Record], batch_size: int = 200) -> importer.ImportReport:
        job = importer.import_rows(records, self.lookup, batch_size=batch_size)
        for batch in job.batches():
            for entry in (batch.bundle or {}).get("entry", []):
                resource = {**entry["resource"], "meta": {"versionId": "x"}}
                self.resources[(resource["resourceType"], resource["id"])] = resource
                self.writes += 1
            job.applied(batch)
        return job.report


def test_sample_extract_converts_and_rejects_bad_rows_with_their_reason() -> None:
    records = list(importer.csv_records(sample_lines()))
    assert [r.line for r in records] == list(range(2, 12))
    rejected = {r.line: r.reason for r in records if r.reason}
    assert sorted(rejected) == [7, 8, 9]
    assert "RPPS invalide « 10995292230 »" in rejected[7] and "expected Luhn check digit 1" in rejected[7]
    assert "FINESS invalide « 690134342 »" in rejected[8]
    assert "Code profession TRE_G15 inconnu « 26 »" in rejected[9]
    martin = records[0]
    kinds = [r["resourceType"] for r in martin.resources]
    assert kinds == ["Practitioner", "Organization", "PractitionerRole"]
    practitioner, organization, role = martin.resources
    assert practitioner["identifier"][0]["value"] == "810858224123"
    assert practitioner["name"] == [{"use": "usual", "family": "MARTIN", "given": ["CLAIRE"], "prefix": ["MME"],
                                     "suffix": ["DR"]}]
    assert organization["identifier"][0]["value"] == "321668732700124"  # 3 + SIRET
    assert organization["address"][0]["city"] == "Bordeaux"
    assert role["organization"]["reference"] == f"Organization/{organization['id']}"
    assert role["specialty"][0]["coding"][0]["code"] == "SM54"
    nurse = next(r for r in records if r.identifier == "0759124168")
    assert [r["resourceType"] for r in nurse.resources] == ["Practitioner", "PractitionerRole"]


def test_second_import_of_the_same_extract_changes_nothing() -> None:
    store = Store()
    first = store.run(list(importer.csv_records(sample_lines())))
    assert dict(first.created) == {"Practitioner": 6, "PractitionerRole": 7, "Organization": 4}
    assert first.rejected_rows == 3 and first.rows == 10
    writes = store.writes
    second = store.run(list(importer.csv_records(sample_lines())))
    assert dict(second.unchanged) == dict(first.created)
    assert not second.created and not second.updated and store.writes == writes


@pytest.mark.parametrize("batch_size", [1, 2, 200])
def test_rows_of_the_same_resource_in_other_batches_add_up(batch_size: int) -> None:
    store = Store()
    report = store.run(list(importer.csv_records(sample_lines())), batch_size=batch_size)
    assert dict(report.created) == {"Practitioner": 6, "PractitionerRole": 7, "Organization": 4}
    assert sum(report.updated.values()) == 0  # a resource counts once, under its first outcome
    assert len(store.resources) == 17
    again = store.run(list(importer.csv_records(sample_lines())), batch_size=batch_size)
    assert sum(again.unchanged.values()) == 17


def test_a_changed_row_updates_only_its_resources() -> None:
    store = Store()
    store.run(list(importer.csv_records(sample_lines())))
    lines = sample_lines()
    lines[3] = lines[3].replace("PHARMACIE DE LA GARE|PHARMACIE DE LA GARE", "GRANDE PHARMACIE|PHARMACIE DE LA GARE")
    report = store.run(list(importer.csv_records(lines)))
    assert dict(report.updated) == {"Organization": 1, "PractitionerRole": 1}  # the role shows its name
    assert sum(report.unchanged.values()) == 15


def test_a_second_profession_is_added_not_replaced() -> None:
    store = Store()
    lines = sample_lines()
    store.run(list(importer.csv_records(lines)))
    pharmacist = lines[3].replace("|21|Pharmacien|", "|10|Médecin|")
    report = store.run(list(importer.csv_records([lines[0], pharmacist])))
    assert report.updated["Practitioner"] == 1 and report.created["PractitionerRole"] == 1
    stored = next(r for (t, _), r in store.resources.items() if t == "Practitioner" and "DUBOIS" in str(r))
    assert sorted(d.professions_of(stored)) == ["10", "21"]


def test_headers_match_whatever_the_case_accents_and_separator() -> None:
    text = ("identification nationale pp;NOM D'EXERCICE;Prenom d'exercice;Code Profession;Numero FINESS site\n"
            f"8{keys.make_rpps('1000000001')};DURAND;ANNE;60;{keys.make_finess('75000001')}\n")
    [record] = importer.csv_records(text.splitlines(keepends=True))
    assert record.reason is None
    assert [r["resourceType"] for r in record.resources] == ["Practitioner", "Organization", "PractitionerRole"]


def test_a_file_without_the_directory_columns_is_refused() -> None:
    with pytest.raises(Invalid, match="En-tête non reconnu"):
        list(importer.csv_records(["nom,prenom\n", "a,b\n"]))


def test_identifier_type_and_national_identifier_must_agree() -> None:
    rpps = keys.make_rpps("1000000001")
    text = ("Type d'identifiant PP|Identifiant PP|Identification nationale PP|Nom d'exercice|Code profession|\n"
            f"8|{rpps}|8{keys.make_rpps('1000000002')}|DURAND|60|\n"
            f"8|{rpps}||DURAND|60|\n")
    first, second = importer.csv_records(text.splitlines(keepends=True))
    assert first.reason is not None and "ne correspond pas" in first.reason
    assert second.reason is None and second.identifier == "8" + rpps


def test_invalid_resources_are_rejected_by_the_validator_with_the_row() -> None:
    def validator(resource: dict[str, Any]) -> list[Any]:
        from carnet.errors import Issue
        return [Issue("error", "value", "bad phone", ["Organization.telecom[0]"])] if (
            resource["resourceType"] == "Organization") else []

    job = importer.import_rows(importer.csv_records(sample_lines()), Store().lookup, validator=validator)
    list(job.batches())
    reasons = [r.reason for r in job.report.rejections]
    assert job.report.rejected_rows == 3 + 6  # every row naming a structure
    assert "Organization : bad phone (Organization.telecom[0])" in reasons


def test_a_refused_transaction_rejects_its_rows() -> None:
    job = importer.import_rows(importer.csv_records(sample_lines()), Store().lookup, batch_size=3)
    batches = list(job.batches())
    job.failed(batches[0], "transaction refused: conflict")
    assert [r.line for r in job.report.rejections if "conflict" in r.reason] == [2, 3, 4]


# -- FHIR Bundles --------------------------------------------------------------------------------------

def foreign_bundle() -> dict[str, Any]:
    rpps = keys.make_rpps("1000000003")
    finess = keys.make_finess("33000001")
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {
            "resourceType": "Practitioner", "id": "abc",
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + rpps},
                           {"system": "https://rpps.esante.gouv.fr", "value": rpps}],
            "name": [{"family": "BLANC", "given": ["EMILIE"]}]}},
        {"fullUrl": "http://other.example/fhir/Organization/o1", "resource": {
            "resourceType": "Organization", "id": "o1", "meta": {"versionId": "7"},
            "identifier": [{"system": "https://finess.esante.gouv.fr", "value": finess}], "name": "CLINIQUE"}},
        {"resource": {"resourceType": "PractitionerRole", "practitioner": {"reference": "urn:uuid:p1"},
                      "organization": {"reference": "Organization/o1"},
                      "code": [{"coding": [{"system": d.profession_system(), "code": "60"}]}]}},
        {"resource": {"resourceType": "Patient", "id": "x"}},
        {"resource": {"resourceType": "Practitioner", "identifier": [
            {"system": "https://rpps.esante.gouv.fr", "value": "10000000030"}]}},
    ]}


def test_bundle_resources_get_our_ids_and_references_follow() -> None:
    records = list(importer.bundle_records(foreign_bundle()))
    practitioner, organization, role = (r.resources[0] for r in records[:3])
    rpps = keys.make_rpps("1000000003")
    assert practitioner["id"] == d.practitioner_id(keys.PsIdNat(keys.IdNatKind.RPPS, rpps))
    assert organization["id"] == d.organization_id(d.structure_idnat(finess=keys.make_finess("33000001")))
    assert "meta" not in organization
    assert role["practitioner"]["reference"] == f"Practitioner/{practitioner['id']}"
    assert role["organization"]["reference"] == f"Organization/{organization['id']}"
    assert records[3].reason is not None and "Patient" in records[3].reason
    assert records[4].reason is not None and "RPPS invalide" in records[4].reason


def test_bundle_import_is_idempotent() -> None:
    store = Store()
    first = store.run(list(importer.bundle_records(foreign_bundle())))
    assert dict(first.created) == {"Practitioner": 1, "Organization": 1, "PractitionerRole": 1}
    assert first.rejected_rows == 2
    second = store.run(list(importer.bundle_records(foreign_bundle())))
    assert dict(second.unchanged) == dict(first.created) and not second.created


def test_role_whose_practitioner_was_rejected_is_rejected_too() -> None:
    bundle = foreign_bundle()
    other = keys.make_rpps("1000000004")
    bundle["entry"][0]["resource"]["identifier"][1]["value"] = other  # RPPS disagrees with PS_IdNat
    records = list(importer.bundle_records(bundle))
    assert records[0].reason is not None and "ne correspond pas" in records[0].reason
    assert records[2].reason is not None and "praticien" in records[2].reason


def test_not_a_bundle() -> None:
    with pytest.raises(Invalid, match="Bundle"):
        list(importer.bundle_records({"resourceType": "Patient"}))
