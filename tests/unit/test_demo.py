"""The French demo data, as generated: coherent INS, statuses, minors and their parent, a directory with
every profession. (Loading it through the server is tested in tests/functional/test_demo.py.)"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

import pytest

from carnet import demo, demo_people
from carnet.directory import fhir as directory_fhir
from carnet.directory import keys
from carnet.fhir.validation import validate
from carnet.identity import fhir as ins_fhir
from carnet.identity import nir
from carnet.identity.status import IdentityStatus, Traits

TODAY = date(2026, 6, 15)


@pytest.fixture(scope="module")
def batches() -> list[demo_people.DemoBatch]:
    directory = demo_people.directory(7)
    return list(demo_people.patient_bundles(7, 30, performers=directory.performers, today=TODAY))


def resources(batches: list[demo_people.DemoBatch], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for b in batches for e in b.bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_every_matricule_verifies_and_agrees_with_the_traits(batches: list[demo_people.DemoBatch]) -> None:
    identities = [i for b in batches for i in b.identities]
    assert len(identities) == 30
    for identity in identities:
        m = nir.parse_matricule(identity.matricule)  # raises on a bad key or layout
        t = identity.traits
        assert m.gender == t.sex
        assert (m.year, m.month) == (t.birth_date.year % 100, t.birth_date.month)
        place = t.birthplace_code or ""
        if place[:2] in ("2A", "2B") and t.birth_date.year < 1976:
            place = "20" + place[2:]
        assert m.birthplace_code == place
        assert identity.oid == nir.OID_INS_NIR_DEMO


def test_patients_are_fr_core_patient_ins_and_pass_every_check(batches: list[demo_people.DemoBatch]) -> None:
    patients = resources(batches, "Patient")
    for patient in patients:
        assert ins_fhir.check_patient_ins(patient, production=False) == []
        assert [i for i in validate(patient) if i.severity in ("error", "fatal")] == []
    carrying = [p for p in patients if ins_fhir.read_patient_ins(p).ins]
    assert {i.oid for p in carrying for i in ins_fhir.read_patient_ins(p).identifiers} == {nir.OID_INS_NIR_DEMO}
    # the demo OID is refused in production, as the spec requires
    assert all(ins_fhir.check_patient_ins(p, production=True) for p in carrying)


def test_statuses_are_spread_and_mostly_qualified(batches: list[demo_people.DemoBatch]) -> None:
    statuses = Counter(ins_fhir.read_patient_ins(p).status for p in resources(batches, "Patient"))
    assert set(statuses) == set(IdentityStatus)
    assert statuses[IdentityStatus.QUAL] > sum(statuses.values()) / 2
    for patient in resources(batches, "Patient"):  # only PROV identities lack their matricule
        read = ins_fhir.read_patient_ins(patient)
        assert (read.ins is None) == (read.status is IdentityStatus.PROV)


def test_strict_traits_are_written_as_insi_returns_them(batches: list[demo_people.DemoBatch]) -> None:
    for patient in resources(batches, "Patient"):
        traits = ins_fhir.read_traits(patient)
        assert traits.birth_family_name == demo_people.ins_text(traits.birth_family_name)
        assert all(g.isupper() for g in traits.birth_given_names)
        usual = next(n for n in patient["name"] if n["use"] == "usual")
        assert demo_people.ins_text(usual["family"]) == traits.birth_family_name


def test_minors_have_a_parent_as_legal_representative(batches: list[demo_people.DemoBatch]) -> None:
    minors = [i for b in batches for i in b.identities if i.minor]
    assert len(minors) == 6
    for batch in batches:
        by_url = {e["fullUrl"]: e["resource"] for e in batch.bundle["entry"]}
        for rp in (r for r in by_url.values() if r["resourceType"] == "RelatedPerson"):
            child = by_url[rp["patient"]["reference"]]
            child_traits = ins_fhir.read_traits(child)
            age = (TODAY - child_traits.birth_date).days / 365.25
            assert age < 18
            codes = {c["coding"][0]["code"] for c in rp["relationship"]}
            assert "GUARD" in codes and codes & {"MTH", "FTH"}
            parent = next(r for r in by_url.values() if r.get("link") and
                          r["link"][0]["other"]["reference"] in by_url and
                          by_url[r["link"][0]["other"]["reference"]] is rp)
            assert parent["link"][0]["type"] == "seealso"
            assert rp["identifier"][0]["value"] == ins_fhir.read_patient_ins(parent).identifiers[0].matricule
            assert (TODAY - ins_fhir.read_traits(parent).birth_date).days / 365.25 - age >= 20
            assert child_traits.birth_family_name == ins_fhir.read_traits(parent).birth_family_name


def test_insi_entries_are_what_the_local_insi_reads(tmp_path: Any, batches: list[demo_people.DemoBatch]) -> None:
    from carnet.identity.insi import InsiFound, LocalInsi

    identities = [i for b in batches for i in b.identities]
    path = demo.write_insi_file(tmp_path, identities[:10])
    path = demo.write_insi_file(tmp_path, identities[10:])  # a second run adds to the first
    assert path == tmp_path / "insi" / "identities.json"
    insi = LocalInsi(path)
    for identity in identities:
        found = insi.verify(identity.matricule, identity.oid, identity.traits)
        assert isinstance(found, InsiFound) and found.identity.traits == identity.traits


def test_directory_has_every_profession_with_valid_national_identifiers() -> None:
    directory = demo_people.directory(2026)
    entries = [e["resource"] for e in directory.bundle["entry"]]
    practitioners = [r for r in entries if r["resourceType"] == "Practitioner"]
    roles = [r for r in entries if r["resourceType"] == "PractitionerRole"]
    organizations = [r for r in entries if r["resourceType"] == "Organization"]
    assert set(directory.rpps) == set(keys.professions()) == {"10", "21", "40", "50", "60", "70", "80"}
    assert {c for r in roles for c in directory_fhir.professions_of(r)} == set(keys.professions())
    assert {c for p in practitioners for c in directory_fhir.professions_of(p)} == set(keys.professions())
    for p in practitioners:
        idnat = next(i["value"] for i in p["identifier"] if i["system"] == "urn:oid:1.2.250.1.71.4.2.1")
        rpps = next(i["value"] for i in p["identifier"] if i["system"] == "https://rpps.esante.gouv.fr")
        assert idnat == "8" + keys.validate_rpps(rpps)
    for o in organizations:
        structure = next(i["value"] for i in o["identifier"] if i["system"] == "urn:oid:1.2.250.1.71.4.2.2")
        keys.parse_structure_idnat(structure)  # FINESS or SIRET key checked
    ids = {f"{r['resourceType']}/{r['id']}" for r in entries}
    for role in roles:
        assert role["practitioner"]["reference"] in ids and role["organization"]["reference"] in ids
    for resource in entries:
        assert [i for i in validate(resource) if i.severity in ("error", "fatal")] == [], resource["resourceType"]
    assert demo_people.directory(2026).bundle == directory.bundle  # same seed, same ids: loads are idempotent


def test_matricule_for_corsica_before_and_after_1976() -> None:
    assert nir.parse_matricule(demo_people.matricule_for("male", date(1970, 3, 1), "2A004", 12)).departement == "20"
    assert nir.parse_matricule(demo_people.matricule_for("male", date(1980, 3, 1), "2A004", 12)).departement == "2A"
    t = Traits("X", ("Y",), date(1980, 3, 1), "female", "99134")
    assert nir.parse_matricule(demo_people.matricule_for(t.sex, t.birth_date, "99134", 5)).born_abroad


def test_benchmark_generators_are_unchanged() -> None:
    bundle = next(demo.patient_bundles(1, 1))
    patient = bundle["entry"][0]["resource"]
    assert patient["identifier"][0]["system"] == demo.INS_TEST_OID
    nir.parse_matricule(patient["identifier"][0]["value"])
    assert len(bundle["entry"]) == 20
