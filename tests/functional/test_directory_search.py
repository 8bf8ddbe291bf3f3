"""Directory search (C2) through the engine's generic FHIR search: name without accents or case,
national identifiers, profession, specialty, city, and chains from roles to practitioners."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from carnet.directory import fhir as d
from carnet.directory import keys
from carnet.directory.keys import IdNatKind, PsIdNat
from tests.conftest import Fhir

RPPS_MARTIN = keys.make_rpps("1085822412")
RPPS_DURAND = keys.make_rpps("1014942603")
RPPS_LEFEVRE = keys.make_rpps("1099887766")
ADELI_LEROY = "759124168"
MARTIN = PsIdNat(IdNatKind.RPPS, RPPS_MARTIN)
DURAND = PsIdNat(IdNatKind.RPPS, RPPS_DURAND)
LEFEVRE = PsIdNat(IdNatKind.RPPS, RPPS_LEFEVRE)
LEROY = PsIdNat(IdNatKind.ADELI, ADELI_LEROY)
HELENA = PsIdNat(IdNatKind.RPPS, keys.make_rpps("1011223344"))
CHU = d.structure_idnat(finess=keys.make_finess("76096530"))
PHARMACIE = d.structure_idnat(finess=keys.make_finess("42000123"))
GENERAL_MEDICINE = ("SM54", "Médecine générale (SM)")
CARDIOLOGY = ("SM04", "Cardiologie et maladies vasculaires (SM)")


def _with_address(resource: dict[str, Any], city: str, postal_code: str) -> dict[str, Any]:
    resource["address"] = [{"use": "work", "city": city, "postalCode": postal_code}]
    return resource


def directory() -> list[dict[str, Any]]:
    return [
        _with_address(d.practitioner(MARTIN, family="MARTIN", given="Hélène", professions=["10"], prefix="MME",
                                     suffix="DR"), "Rouen", "76000"),
        _with_address(d.practitioner(DURAND, family="DURAND", given="HELENE", professions=["10"]),
                      "Saint-Étienne", "42000"),
        _with_address(d.practitioner(LEFEVRE, family="Lefèvre", given="hélène", professions=["21"]),
                      "Saint-Étienne", "42000"),
        d.practitioner(LEROY, family="LEROY", given="NICOLAS", professions=["60"]),
        d.practitioner(HELENA, family="HELENA", given="PAUL", professions=["50"]),
        d.organization(CHU, name="CENTRE HOSPITALIER DE ROUEN", address=d.Address(
            line=("1 RUE DE GERMONT",), postal_code="76000", city="Rouen", insee_code="76540")),
        d.organization(PHARMACIE, name="Pharmacie de l'Hôtel de Ville", address=d.Address(
            postal_code="42000", city="Saint-Étienne", insee_code="42218")),
        d.practitioner_role(MARTIN, "10", structure=CHU, structure_name="CENTRE HOSPITALIER DE ROUEN",
                            mode="S", specialties=[GENERAL_MEDICINE]),
        d.practitioner_role(DURAND, "10", mode="L", specialties=[CARDIOLOGY]),
        d.practitioner_role(LEFEVRE, "21", structure=PHARMACIE, mode="L"),
        d.practitioner_role(LEROY, "60", mode="L"),
    ]


@pytest.fixture
def loaded(fhir: Fhir) -> Fhir:
    entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
               for r in directory()]
    out = fhir.bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert all(e["response"]["status"].startswith("201") for e in out["entry"])
    return fhir


def found(fhir: Fhir, query: str) -> set[str]:
    return set(fhir.search_ids(query))


def pid(ps: PsIdNat) -> str:
    return d.practitioner_id(ps)


def rid(ps: PsIdNat, profession: str, structure: str | None = None, mode: str | None = None) -> str:
    return d.role_id(ps, profession, structure, mode)


HELENES = {pid(MARTIN), pid(DURAND), pid(LEFEVRE)}


@pytest.mark.parametrize("spelling", ["Hélène", "HELENE", "hélène", "helene", "HÉLÈNE", "hel"])
def test_name_is_accent_and_case_insensitive(loaded: Fhir, spelling: str) -> None:
    family_too = {pid(HELENA)} if spelling == "hel" else set()  # name= also reads the family name HELENA
    assert found(loaded, f"Practitioner?name={quote(spelling)}") == HELENES | family_too
    assert found(loaded, f"Practitioner?given={quote(spelling)}") == HELENES


def test_family_and_exact_name(loaded: Fhir) -> None:
    assert found(loaded, "Practitioner?family=lefevre") == {pid(LEFEVRE)}
    assert found(loaded, f"Practitioner?family={quote('LEFÈVRE')}") == {pid(LEFEVRE)}
    assert found(loaded, f"Practitioner?family:exact={quote('Lefèvre')}") == {pid(LEFEVRE)}
    assert found(loaded, "Practitioner?family:exact=LEFEVRE") == set()
    assert found(loaded, "Practitioner?name=helene&family=durand") == {pid(DURAND)}


def test_identifier_rpps_ps_idnat_adeli_finess(loaded: Fhir) -> None:
    assert found(loaded, "Practitioner?identifier=" + quote(f"{d.RPPS_SYSTEM}|{RPPS_MARTIN}")) == {pid(MARTIN)}
    assert found(loaded, "Practitioner?identifier=" + quote(f"{d.PS_IDNAT_SYSTEM}|8{RPPS_MARTIN}")) == {
        pid(MARTIN)}
    assert found(loaded, f"Practitioner?identifier={RPPS_DURAND}") == {pid(DURAND)}
    assert found(loaded, "Practitioner?identifier=" + quote(f"{d.PS_IDNAT_SYSTEM}|0{ADELI_LEROY}")) == {
        pid(LEROY)}
    assert found(loaded, "Practitioner?identifier=" + quote(f"{d.RPPS_SYSTEM}|8{RPPS_MARTIN}")) == set()
    assert found(loaded, "Practitioner?identifier:of-type=" + quote(
        f"{d.IDENTIFIER_TYPE_SYSTEM}|RPPS|{RPPS_LEFEVRE}")) == {pid(LEFEVRE)}
    assert found(loaded, "Organization?identifier=" + quote(f"{d.FINESS_SYSTEM}|{CHU.identifier}")) == {
        d.organization_id(CHU)}
    assert found(loaded, "Organization?identifier=" + quote(f"{d.STRUCTURE_IDNAT_SYSTEM}|{PHARMACIE.value}")) == {
        d.organization_id(PHARMACIE)}


def test_profession_and_specialty(loaded: Fhir) -> None:
    system = d.profession_system()
    physicians = {rid(MARTIN, "10", CHU.value, "S"), rid(DURAND, "10", None, "L")}
    assert found(loaded, "PractitionerRole?role=" + quote(f"{system}|10")) == physicians
    assert found(loaded, "PractitionerRole?role=" + quote(f"{system}|21")) == {
        rid(LEFEVRE, "21", PHARMACIE.value, "L")}
    assert found(loaded, "PractitionerRole?role=60") == {rid(LEROY, "60", None, "L")}
    assert found(loaded, "PractitionerRole?role=" + quote(f"{system}|10,{system}|60")) == physicians | {
        rid(LEROY, "60", None, "L")}
    assert found(loaded, "PractitionerRole?role=" + quote(f"{system}|40")) == set()
    assert found(loaded, "PractitionerRole?specialty=" + quote(f"{d.SPECIALTY_SYSTEM}|SM54")) == {
        rid(MARTIN, "10", CHU.value, "S")}
    assert found(loaded, "PractitionerRole?specialty=SM04") == {rid(DURAND, "10", None, "L")}
    assert found(loaded, f"PractitionerRole?specialty:text={quote('cardiologie')}") == {
        rid(DURAND, "10", None, "L")}
    assert found(loaded, "PractitionerRole?role=" + quote(f"{system}|10") + "&specialty=SM04") == {
        rid(DURAND, "10", None, "L")}


def test_city_accent_and_case_insensitive(loaded: Fhir) -> None:
    assert found(loaded, "Practitioner?address-city=rouen") == {pid(MARTIN)}
    for spelling in ("Saint-Étienne", "saint-etienne", "SAINT-ETIENNE", "saint"):
        assert found(loaded, f"Practitioner?address-city={quote(spelling)}") == {pid(DURAND), pid(LEFEVRE)}
        assert found(loaded, f"Organization?address-city={quote(spelling)}") == {d.organization_id(PHARMACIE)}
    assert found(loaded, "Organization?address-city=ROUEN") == {d.organization_id(CHU)}
    assert found(loaded, "Organization?address-postalcode=76") == {d.organization_id(CHU)}
    assert found(loaded, f"Organization?name={quote('Pharmacie de l')}") == {d.organization_id(PHARMACIE)}


def test_chains_from_roles(loaded: Fhir) -> None:
    system = d.profession_system()
    assert found(loaded, f"PractitionerRole?practitioner.name={quote('Hélène')}") == {
        rid(MARTIN, "10", CHU.value, "S"), rid(DURAND, "10", None, "L"), rid(LEFEVRE, "21", PHARMACIE.value, "L")}
    assert found(loaded, "PractitionerRole?practitioner.family=durand") == {rid(DURAND, "10", None, "L")}
    assert found(loaded, "PractitionerRole?practitioner.identifier=" + quote(
        f"{d.PS_IDNAT_SYSTEM}|0{ADELI_LEROY}")) == {rid(LEROY, "60", None, "L")}
    assert found(loaded, "PractitionerRole?practitioner.address-city=" + quote("saint-étienne")
                 + "&role=" + quote(f"{system}|21")) == {rid(LEFEVRE, "21", PHARMACIE.value, "L")}
    assert found(loaded, "PractitionerRole?organization.address-city=rouen") == {rid(MARTIN, "10", CHU.value, "S")}
    assert found(loaded, "PractitionerRole?practitioner:Practitioner.name=helene&role=" + quote(
        f"{system}|10")) == {rid(MARTIN, "10", CHU.value, "S"), rid(DURAND, "10", None, "L")}


def test_role_search_includes_the_practitioner_and_organization(loaded: Fhir) -> None:
    r = loaded.get("PractitionerRole?role=" + quote(f"{d.profession_system()}|10")
                   + "&_include=PractitionerRole:practitioner&_include=PractitionerRole:organization")
    assert r.status_code == 200, r.text
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json()["entry"]
                if e["search"]["mode"] == "include"}
    assert included == {("Practitioner", pid(MARTIN)), ("Practitioner", pid(DURAND)),
                        ("Organization", d.organization_id(CHU))}
