"""Directory resources in the FR Core / ANS shape, with ids derived from national identifiers."""

from __future__ import annotations

import pytest

from carnet.directory import fhir as d
from carnet.directory import keys
from carnet.directory.keys import IdNatKind, PsIdNat, StructureIdNat, StructureIdNatKind
from carnet.errors import Unprocessable
from carnet.fhir.validation import validate

RPPS = keys.make_rpps("1000123456")
PS = PsIdNat(IdNatKind.RPPS, RPPS)
FINESS = keys.make_finess("76012345")
SITE = StructureIdNat(StructureIdNatKind.FINESS, FINESS)
G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"


def test_practitioner_carries_ps_idnat_rpps_and_profession() -> None:
    p = d.practitioner(PS, family="Martin", given="Claire", prefix="MME", suffix="DR", professions=["10"])
    assert p["identifier"] == [
        {"use": "official", "type": {"coding": [{"system": d.IDENTIFIER_TYPE_SYSTEM, "code": "IDNPS"}]},
         "system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + RPPS},
        {"use": "official", "type": {"coding": [{"system": d.IDENTIFIER_TYPE_SYSTEM, "code": "RPPS"}]},
         "system": "https://rpps.esante.gouv.fr", "value": RPPS}]
    assert p["name"] == [{"use": "usual", "family": "Martin", "given": ["Claire"], "prefix": ["MME"],
                          "suffix": ["DR"]}]
    codings = p["qualification"][0]["code"]["coding"]
    assert {"system": G15, "code": "10", "display": "Médecin"} in codings
    assert codings[0]["system"].endswith("TRE-R09-CategorieProfessionnelle") and codings[0]["code"] == "C"
    assert d.professions_of(p) == ["10"]
    assert [i for i in validate(p) if i.severity in ("error", "fatal")] == []


def test_adeli_practitioner_has_no_rpps_identifier() -> None:
    p = d.practitioner(PsIdNat(IdNatKind.ADELI, "759124159"), family="Petit", professions=["60"])
    assert [i["value"] for i in p["identifier"]] == ["0759124159"]


def test_ids_are_derived_from_national_identifiers_and_stable() -> None:
    a = d.practitioner(PS, family="Martin")
    b = d.practitioner(PS, family="Martin-Durand", professions=["21"])
    assert a["id"] == b["id"] == d.practitioner_id(PS)
    assert d.practitioner(PsIdNat(IdNatKind.RPPS, keys.make_rpps("1000123457")), family="Martin")["id"] != a["id"]
    assert len(a["id"]) == 36  # an opaque UUID, a valid FHIR id
    assert d.organization_id(SITE) != d.practitioner_id(PS)


def test_organization_from_finess_and_from_siret() -> None:
    org = d.organization(SITE, name="Centre hospitalier", address=d.Address(("1 rue Haute",), "76000",
                                                                             "Rouen", "76540", "FR"))
    assert [(i["type"]["coding"][0]["code"], i["system"], i["value"]) for i in org["identifier"]] == [
        ("IDNST", "urn:oid:1.2.250.1.71.4.2.2", "1" + FINESS), ("FINEG", "https://finess.esante.gouv.fr", FINESS)]
    assert org["address"][0]["extension"][0]["valueCoding"]["code"] == "76540"
    siret = "73282932000074"
    cabinet = d.organization(d.structure_idnat(siret=siret), name="Cabinet")
    assert [i["value"] for i in cabinet["identifier"]] == ["3" + siret, siret]
    for resource in (org, cabinet):
        assert [i for i in validate(resource) if i.severity in ("error", "fatal")] == []


def test_structure_identifier_prefers_finess_then_siret_and_checks_keys() -> None:
    assert d.structure_idnat(finess=FINESS, siret="73282932000074").value == "1" + FINESS
    assert d.structure_idnat(siret="73282932000074").value == "373282932000074"
    with pytest.raises(Unprocessable, match="FINESS invalide"):
        d.structure_idnat(finess=FINESS[:-1] + str((int(FINESS[-1]) + 1) % 10))
    with pytest.raises(ValueError, match="needs a FINESS"):
        d.structure_idnat()


def test_role_links_practitioner_and_organization_with_profession_mode_and_specialty() -> None:
    role = d.practitioner_role(PS, "10", structure=SITE, structure_name="CH", mode="S",
                               specialties=[("SM04", "Cardiologie et Maladies vasculaires (SM)")])
    assert role["practitioner"] == {"reference": f"Practitioner/{d.practitioner_id(PS)}"}
    assert role["organization"] == {"reference": f"Organization/{d.organization_id(SITE)}", "display": "CH"}
    assert role["code"][0]["coding"][0] == {"system": G15, "code": "10", "display": "Médecin"}
    assert role["code"][1]["coding"][0]["code"] == "S"
    assert role["specialty"][0]["coding"][0]["code"] == "SM04"
    assert d.professions_of(role) == ["10"]
    assert role["id"] != d.practitioner_role(PS, "10", structure=SITE, mode="L")["id"]
    assert [i for i in validate(role) if i.severity in ("error", "fatal")] == []


def test_unknown_profession_is_refused() -> None:
    with pytest.raises(Unprocessable, match="Code profession TRE_G15 inconnu"):
        d.practitioner(PS, family="Martin", professions=["26"])


def test_merge_keeps_earlier_qualifications_and_specialties() -> None:
    first = d.practitioner(PS, family="Martin", professions=["10"])
    second = d.practitioner(PS, family="Martin", professions=["21"])
    merged = d.merge_lists(first, second)
    assert sorted(d.professions_of(merged)) == ["10", "21"]
    assert d.merge_lists(merged, second) == merged  # merging again changes nothing
    assert d.merge_lists(first, first) == first
