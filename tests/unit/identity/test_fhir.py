"""FR Core Patient INS: building the resource, reading it back, and the checks with their FHIRPath."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from carnet.errors import Issue, Unprocessable
from carnet.fhir.validation import validate
from carnet.identity import fhir, nir
from carnet.identity.status import (
    DocumentType,
    IdentityFlag,
    IdentityState,
    IdentityStatus,
    Traits,
    record_document_check,
    record_insi_verification,
)

FR_CORE = Path(__file__).resolve().parents[2] / "fixtures" / "fr-core"
AGENT = "agent-accueil"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

MARIE = Traits("DUPONT", ("MARIE", "CLAIRE", "ANNE-SOPHIE"), date(1984, 12, 3), "female", "76451")
MARIE_NIR = nir.make_matricule("2841276451089")


def qualified() -> IdentityState:
    state = record_insi_verification(IdentityState(), AGENT, T0)
    return record_document_check(state, DocumentType.NATIONAL_ID_CARD, AGENT, T0)


def marie(**kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"matricule": MARIE_NIR, "oid": nir.OID_INS_NIR_DEMO, "status": qualified()}
    options.update(kwargs)
    return fhir.build_patient(MARIE, **options)


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


def at(issues: list[Issue], expression: str) -> list[Issue]:
    return [i for i in issues if expression in i.expression]


# -- Building ------------------------------------------------------------------------------------------

def test_built_patient_has_the_fr_core_patient_ins_shape() -> None:
    p = marie(birthplace_city="Rouen")
    assert p["meta"]["profile"] == ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"]
    assert p["identifier"] == [{
        "use": "official",
        "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                             "code": "INS-NIR-DEMO"}]},
        "system": "urn:oid:1.2.250.1.213.1.4.11", "value": MARIE_NIR}]
    name = p["name"][0]
    assert (name["use"], name["family"], name["given"]) == ("official", "DUPONT", ["MARIE"])
    assert name["extension"] == [{
        "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name",
        "valueString": "MARIE CLAIRE ANNE-SOPHIE"}]
    assert (p["gender"], p["birthDate"]) == ("female", "1984-12-03")
    birthplace = next(e for e in p["extension"]
                      if e["url"] == "http://hl7.org/fhir/StructureDefinition/patient-birthPlace")
    assert birthplace["valueAddress"] == {"city": "Rouen", "extension": [{
        "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code",
        "valueCoding": {"system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM",
                        "code": "76451"}}]}
    reliability = next(e for e in p["extension"] if e["url"] == fhir.IDENTITY_RELIABILITY)
    parts = {x["url"]: x for x in reliability["extension"]}
    assert parts["identityStatus"]["valueCoding"]["system"] == (
        "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status")
    assert parts["identityStatus"]["valueCoding"]["code"] == "QUAL"
    assert parts["validationMode"]["valueCoding"]["code"] == "CN"
    assert parts["validationDate"]["valueDate"] == "2026-03-02"


@pytest.mark.parametrize("oid", [nir.OID_INS_NIR, nir.OID_INS_NIA, nir.OID_INS_NIR_TEST, nir.OID_INS_NIR_DEMO])
def test_each_ins_oid_gets_its_use_and_type(oid: str) -> None:
    identifier = fhir.ins_identifier(MARIE_NIR, oid)
    expected = {nir.OID_INS_NIR: ("official", "INS-NIR"), nir.OID_INS_NIA: ("temp", "INS-NIA"),
                nir.OID_INS_NIR_TEST: ("official", "INS-NIR-TEST"),
                nir.OID_INS_NIR_DEMO: ("official", "INS-NIR-DEMO")}[oid]
    assert (identifier["use"], identifier["type"]["coding"][0]["code"]) == expected
    assert identifier["system"] == f"urn:oid:{oid}"


def test_built_patients_pass_the_fhir_validator_and_the_ins_checks() -> None:
    for patient in (marie(), fhir.build_patient(MARIE), marie(oid=nir.OID_INS_NIA, status=IdentityStatus.RECUP)):
        assert [i for i in validate(patient) if i.severity in ("error", "fatal")] == []
        assert fhir.check_patient_ins(patient, production=False) == []


def test_building_refuses_a_bad_matricule_or_oid() -> None:
    with pytest.raises(Unprocessable, match="Clé de contrôle invalide"):
        fhir.build_patient(MARIE, matricule=MARIE_NIR[:13] + "00")
    with pytest.raises(Unprocessable, match="OID INS inconnu"):
        fhir.build_patient(MARIE, matricule=MARIE_NIR, oid="1.2.3")


def test_validation_date_is_the_french_civil_date_of_the_document_check() -> None:
    late = datetime(2025, 12, 31, 23, 30, tzinfo=UTC)  # already 1 January in Paris
    state = record_document_check(IdentityState(), DocumentType.PASSPORT, AGENT, late)
    parts = {x["url"]: x for x in fhir.build_patient(MARIE, status=state)["extension"][0]["extension"]}
    assert parts["validationDate"]["valueDate"] == "2026-01-01"
    assert parts["identityStatus"]["valueCoding"]["code"] == "VALI"


def test_minor_document_is_fr_core_lep_and_older_le_still_reads() -> None:
    state = record_document_check(IdentityState(), DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT, AGENT, T0)
    p = fhir.build_patient(MARIE, status=state)
    modes = [x for x in p["extension"][0]["extension"] if x["url"] == "validationMode"]
    assert modes[0]["valueCoding"]["code"] == "LEP"
    modes[0]["valueCoding"]["code"] = "LE"
    assert fhir.read_patient_ins(p).document_type is DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT


def test_born_abroad_codes_the_country_in_tre_r20() -> None:
    abroad = Traits("GARCIA", ("LUCIA",), date(1990, 4, 1), "female", "99134")
    p = fhir.build_patient(abroad, matricule=nir.make_matricule("2900499134021"), status=IdentityStatus.RECUP)
    coding = p["extension"][1]["valueAddress"]["extension"][0]["valueCoding"]
    assert coding == {"system": "https://mos.esante.gouv.fr/NOS/TRE_R20-Pays/FHIR/TRE-R20-Pays", "code": "99134"}
    assert fhir.check_patient_ins(p, production=True) == []


# -- Reading back --------------------------------------------------------------------------------------

@pytest.mark.parametrize("traits", [
    MARIE,
    Traits("LE GALL", ("JEAN-PIERRE",), date(1950, 1, 31), "male", "2A004"),
    Traits("N'DIAYE", ("AÏSSATOU", "FATOU"), date(2019, 7, 14), "female", None),
    Traits("MARTIN", (), date(2001, 2, 3), "unknown", "75111"),
])
def test_round_trip_build_then_read(traits: Traits) -> None:
    flags = {IdentityFlag.DOUTEUSE} if traits.birthplace_code is None else set()
    p = fhir.build_patient(traits, status=IdentityStatus.PROV, flags=flags)
    read = fhir.read_patient_ins(p)
    assert read.traits == traits
    assert read.status is IdentityStatus.PROV
    assert read.flags == flags
    assert read.ins is None


def test_round_trip_keeps_matricule_oid_status_document_and_date() -> None:
    read = fhir.read_patient_ins(json.loads(json.dumps(marie())))
    assert read.traits == MARIE
    assert read.ins == fhir.InsIdentifier(MARIE_NIR, nir.OID_INS_NIR_DEMO, "official", 0)
    assert (read.status, read.document_type, read.validation_date) == (
        IdentityStatus.QUAL, DocumentType.NATIONAL_ID_CARD, date(2026, 3, 2))


def test_the_ins_in_force_prefers_the_nir_and_skips_old_ones() -> None:
    p = marie()
    nia = fhir.ins_identifier(nir.make_matricule("7841276451001"), nir.OID_INS_NIA)
    old = {**fhir.ins_identifier(nir.make_matricule("2841276451002"), nir.OID_INS_NIR), "use": "old"}
    p["identifier"] = [old, nia, *p["identifier"]]
    assert fhir.read_patient_ins(p).ins == fhir.InsIdentifier(MARIE_NIR, nir.OID_INS_NIR_DEMO, "official", 2)
    p["identifier"] = [old, nia]
    in_force = fhir.read_patient_ins(p).ins
    assert in_force is not None and in_force.oid == nir.OID_INS_NIA


def test_birth_first_names_fall_back_to_given_without_the_list() -> None:
    p = marie()
    del p["name"][0]["extension"]
    p["name"][0]["given"] = ["MARIE", "CLAIRE"]
    assert fhir.read_traits(p).birth_given_names == ("MARIE", "CLAIRE")


@pytest.mark.parametrize(("field", "expression"), [("birthDate", "Patient.birthDate"),
                                                    ("gender", "Patient.gender"), ("name", "Patient.name")])
def test_reading_traits_says_which_one_is_missing(field: str, expression: str) -> None:
    p = marie()
    del p[field]
    with pytest.raises(Unprocessable) as caught:
        fhir.read_traits(p)
    assert caught.value.issues[0].expression == [expression]
    assert " / " in caught.value.issues[0].diagnostics


def test_an_fr_core_2_1_status_still_reads() -> None:
    p = marie()
    p["extension"][0]["extension"][0]["valueCoding"]["system"] = fhir.LEGACY_STATUS_SYSTEM
    assert fhir.read_patient_ins(p).status is IdentityStatus.QUAL
    assert fhir.check_patient_ins(p, production=False) == []


# -- The published FR Core example ---------------------------------------------------------------------

def test_the_fr_core_qualified_example_passes_every_check_and_reads_back() -> None:
    example = json.loads((FR_CORE / "Patient-FRCorePatientINSExampleRNIV-QUAL.json").read_text(encoding="utf-8"))
    assert fhir.check_patient_ins(example, production=True) == []
    assert [i for i in validate(example) if i.severity in ("error", "fatal")] == []
    read = fhir.read_patient_ins(example)
    assert read.traits == Traits("Dark", ("Jeanne", "Marie", "Cécile"), date(1960, 5, 30), "female", "88154")
    assert read.ins == fhir.InsIdentifier("260058815400233", nir.OID_INS_NIR, "official", 0)
    assert read.status is IdentityStatus.QUAL


def test_the_fr_core_provisional_example_has_no_ins_and_reads_prov() -> None:
    example = json.loads((FR_CORE / "Patient-FRCorePatientINSExampleRNIV-PROV.json").read_text(encoding="utf-8"))
    assert fhir.check_patient_ins(example, production=True) == []
    read = fhir.read_patient_ins(example)
    assert read.identifiers == () and read.status is IdentityStatus.PROV and read.flags == frozenset()


def test_the_fr_core_example_with_a_broken_key_is_caught_at_its_identifier() -> None:
    example = json.loads((FR_CORE / "Patient-FRCorePatientINSExampleRNIV-QUAL.json").read_text(encoding="utf-8"))
    example["identifier"][0]["value"] = "260058815400234"
    found = errors(fhir.check_patient_ins(example, production=False))
    assert [i.expression for i in found] == [["Patient.identifier[0].value"]]
    assert "Clé de contrôle invalide : attendue 33, trouvée 34" in found[0].diagnostics
    assert "Invalid check key: expected 33, found 34" in found[0].diagnostics


# -- Checks --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("oid", [nir.OID_INS_NIR_TEST, nir.OID_INS_NIR_DEMO])
def test_test_and_demo_oids_are_refused_in_production_only(oid: str) -> None:
    p = marie(oid=oid)
    assert fhir.check_patient_ins(p, production=False) == []
    found = fhir.check_patient_ins(p, production=True)
    assert [(i.code, i.expression) for i in found] == [("business-rule", ["Patient.identifier[0].system"])]
    assert "refusé en production" in found[0].diagnostics and "refused in production mode" in found[0].diagnostics


def test_a_malformed_matricule_is_reported_with_its_position() -> None:
    p = marie()
    p["identifier"][0]["value"] = "2841376451089"
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert issue.expression == ["Patient.identifier[0].value"]
    assert "la clé semble manquer" in issue.diagnostics


def test_official_name_must_have_exactly_one_given_name() -> None:
    p = marie()
    p["name"][0]["given"] = ["MARIE", "CLAIRE"]
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert issue.expression == ["Patient.name[0].given"]
    assert "exactement un prénom" in issue.diagnostics and "it carries 2" in issue.diagnostics
    p["name"][0]["given"] = []
    assert at(fhir.check_patient_ins(p, production=False), "Patient.name[0].given")


def test_the_given_name_must_be_the_first_birth_first_name() -> None:
    p = marie()
    p["name"][0]["given"] = ["CLAIRE"]
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert issue.expression == ["Patient.name[0].given[0]"]
    p["name"][0]["given"] = ["marie"]  # case and accents do not matter
    assert errors(fhir.check_patient_ins(p, production=False)) == []


def test_compound_first_name_may_be_written_with_a_space() -> None:
    traits = Traits("MARTIN", ("ANNE-SOPHIE", "LOUISE"), date(1984, 12, 3), "female", "76451")
    p = fhir.build_patient(traits, matricule=MARIE_NIR, status=qualified())
    p["name"][0]["given"] = ["Anne Sophie"]
    assert errors(fhir.check_patient_ins(p, production=False)) == []


def test_missing_list_of_birth_first_names_is_required() -> None:
    p = marie()
    del p["name"][0]["extension"]
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert issue.code == "required"
    assert issue.expression == [f"Patient.name[0].extension('{fhir.BIRTH_LIST_GIVEN_NAME}')"]


@pytest.mark.parametrize(("remove", "expression"), [
    (lambda p: p.pop("birthDate"), "Patient.birthDate"),
    (lambda p: p.pop("gender"), "Patient.gender"),
    (lambda p: p["extension"].pop(1), f"Patient.extension('{fhir.BIRTH_PLACE}')"),
    (lambda p: p.pop("name"), "Patient.name"),
    (lambda p: p["extension"].pop(0), f"Patient.extension('{fhir.IDENTITY_RELIABILITY}')"),
])
def test_traits_fr_core_makes_mandatory_with_an_ins(remove: Any, expression: str) -> None:
    p = marie()
    remove(p)
    found = errors(fhir.check_patient_ins(p, production=False))
    assert [i.expression for i in found] == [[expression]]
    assert found[0].code == "required"
    if expression.endswith(("birthPlace')", "reliability')")):  # required only with an INS
        without_ins = copy.deepcopy(p)
        del without_ins["identifier"]
        for ext in without_ins["extension"]:
            if ext["url"] == fhir.IDENTITY_RELIABILITY:
                ext["extension"] = [fhir.reliability_extension(IdentityStatus.VALI)["extension"][0]]
        assert errors(fhir.check_patient_ins(without_ins, production=False)) == []


def test_partial_birth_date_and_non_ins_gender_are_refused_with_an_ins() -> None:
    p = marie()
    p["birthDate"], p["gender"] = "1984-12", "other"
    found = errors(fhir.check_patient_ins(p, production=False))
    assert {i.expression[0] for i in found} == {"Patient.birthDate", "Patient.gender"}


def test_identifier_use_and_type_follow_the_oid() -> None:
    p = marie(oid=nir.OID_INS_NIA, status=IdentityStatus.RECUP)
    p["identifier"][0]["use"] = "official"
    del p["identifier"][0]["type"]
    found = errors(fhir.check_patient_ins(p, production=False))
    assert [i.expression for i in found] == [["Patient.identifier[0].use"], ["Patient.identifier[0].type"]]
    assert "attendu temp" in found[0].diagnostics and "INS-NIA" in found[1].diagnostics


def test_flagged_identity_must_stay_provisional() -> None:
    p = marie()
    p["extension"][0] = fhir.reliability_extension(IdentityStatus.RECUP, flags={IdentityFlag.FICTIVE})
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert issue.code == "invariant" and "fr-core-identity-reliability-1" in issue.diagnostics
    p["extension"][0] = fhir.reliability_extension(IdentityStatus.PROV,
                                                   flags={IdentityFlag.FICTIVE, IdentityFlag.DOUTEUSE})
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert "fr-core-identity-reliability-2" in issue.diagnostics


def test_retrieved_and_qualified_identities_need_their_ins() -> None:
    p = fhir.build_patient(MARIE, status=IdentityStatus.QUAL)
    [issue] = errors(fhir.check_patient_ins(p, production=False))
    assert (issue.code, issue.expression) == ("business-rule", ["Patient.identifier"])


def test_unknown_status_and_validation_mode_codes() -> None:
    p = marie()
    parts = p["extension"][0]["extension"]
    parts[0]["valueCoding"]["code"] = "QUALIFIEE"
    next(x for x in parts if x["url"] == "validationMode")["valueCoding"]["code"] = "PC"
    found = errors(fhir.check_patient_ins(p, production=False))
    assert [i.code for i in found] == ["code-invalid", "code-invalid"]
    assert "QUALIFIEE" in found[0].diagnostics and "PC" in found[1].diagnostics


def test_matricule_and_traits_disagreeing_are_warnings() -> None:
    p = marie()
    p["gender"], p["birthDate"] = "male", "1985-11-03"
    p["extension"][1] = fhir.birthplace_extension("76540")
    found = fhir.check_patient_ins(p, production=False)
    assert errors(found) == []
    assert [i.severity for i in found] == ["warning"] * 4
    assert all(i.expression == ["Patient.identifier[0].value"] for i in found)


def test_people_born_in_corsica_before_1976_have_departement_20() -> None:
    traits = Traits("COLONNA", ("PAUL",), date(1960, 5, 1), "male", "2A004")
    p = fhir.build_patient(traits, matricule=nir.make_matricule("1600520004012"), status=IdentityStatus.RECUP)
    assert fhir.check_patient_ins(p, production=False) == []


def test_not_a_patient() -> None:
    [issue] = fhir.check_patient_ins({"resourceType": "Practitioner"}, production=False)
    assert issue.code == "structure"
