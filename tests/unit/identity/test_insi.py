"""INSi: the local reference implementation, its matching rule, unavailability, and load_insi."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from carnet.identity import insi
from carnet.identity.insi import (
    InsiClient,
    InsiFound,
    InsiMultiple,
    InsiNotFound,
    InsiUnavailable,
    LocalInsi,
    load_insi,
    traits_match,
)
from carnet.identity.nir import OID_INS_NIR, OID_INS_NIR_TEST
from carnet.identity.status import Traits

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fr-ins-nir"

# The two official example identities whose key verifies, with their traits as written in the examples.
DOMINIQUE = {"matricule": "279035121518989", "oid": OID_INS_NIR_TEST, "traits": {
    "birth_family_name": "PAT-TROIS", "birth_given_names": ["DOMINIQUE", "MARIE-LOUISE"],
    "birth_date": "1979-03-28", "sex": "female", "birthplace_code": "51215"}}
RUTH = {"matricule": "277076322082910", "oid": OID_INS_NIR_TEST, "traits": {
    "birth_family_name": "NESSI", "birth_given_names": "Ruth Isabelle",
    "birth_date": "1977-07-14", "sex": "female", "birthplace_code": "75115"}}
# Two homonyms born the same day, told apart by their birthplace only.
JEAN_1 = {"matricule": "1 84 12 76 451 089 46", "oid": OID_INS_NIR, "traits": {
    "birth_family_name": "MARTIN", "birth_given_names": ["JEAN"], "birth_date": "1984-12-03", "sex": "male",
    "birthplace_code": "76451"}}
JEAN_2 = {"matricule": "184121305500138", "oid": OID_INS_NIR, "traits": {
    "birth_family_name": "MARTIN", "birth_given_names": ["JEAN", "LUC"], "birth_date": "1984-12-03",
    "sex": "male", "birthplace_code": "13055"}}


def write(path: Path, entries: Any) -> Path:
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write(tmp_path / "insi.json", {"identities": [DOMINIQUE, RUTH, JEAN_1, JEAN_2]})


@pytest.fixture
def client(data_file: Path) -> LocalInsi:
    return LocalInsi(data_file)


def traits(family: str, given: tuple[str, ...], born: date, sex: str = "female",
           place: str | None = None) -> Traits:
    return Traits(family, given, born, sex, place)


def test_fixture_identities_with_valid_keys_are_the_ones_used() -> None:
    data = json.loads((FIXTURES / "ins-identities.json").read_text(encoding="utf-8"))
    valid = {i["matricule"] for i in data["identities"] if i["nir_key_valid_computed"]}
    assert valid == {DOMINIQUE["matricule"], RUTH["matricule"]}


def test_lookup_finds_one_identity_with_authoritative_traits(client: LocalInsi) -> None:
    result = client.lookup(traits("pat trois", ("Dominique",), date(1979, 3, 28)))
    assert isinstance(result, InsiFound)
    found = result.identity
    assert (found.matricule, found.oid) == ("279035121518989", OID_INS_NIR_TEST)
    assert found.traits == Traits("PAT-TROIS", ("DOMINIQUE", "MARIE-LOUISE"), date(1979, 3, 28), "female",
                                  "51215")


@pytest.mark.parametrize(("family", "given"), [
    ("PAT-TROIS", ("DOMINIQUE",)),
    ("Pat-Trois", ("dominique", "marie-louise")),
    ("PAT TROIS", ("DOMINIQUE", "MARIE", "LOUISE")),
    ("pât’trois", ("Dominiqué",)),
    ("  PAT -  TROIS ", ("DOMINIQUE MARIE-LOUISE",)),
])
def test_lookup_tolerates_case_accents_hyphens_apostrophes_and_spaces(
        client: LocalInsi, family: str, given: tuple[str, ...]) -> None:
    assert isinstance(client.lookup(traits(family, given, date(1979, 3, 28))), InsiFound)


@pytest.mark.parametrize("query", [
    traits("PAT-TROIS", ("DOMINIQUE",), date(1979, 3, 29)),                # birth date is exact
    traits("PAT-TROIS", ("DOMINIQUE",), date(1979, 3, 28), sex="male"),     # sex is exact
    traits("PAT-TROIS", ("MARIE-LOUISE",), date(1979, 3, 28)),             # not the first given name
    traits("PAT-TROIS", (), date(1979, 3, 28)),                            # a given name is required
    traits("PAT-TROISE", ("DOMINIQUE",), date(1979, 3, 28)),               # no fuzzy family names
    traits("PAT-TROIS", ("DOMINIQUE",), date(1979, 3, 28), place="51454"),  # birthplace, when given, is exact
])
def test_lookup_misses(client: LocalInsi, query: Traits) -> None:
    result = client.lookup(query)
    assert isinstance(result, InsiNotFound)
    assert result.reason == "aucune identité ne correspond aux traits / no identity matches the traits"


def test_homonyms_give_several_until_the_birthplace_tells_them_apart(client: LocalInsi) -> None:
    query = traits("MARTIN", ("JEAN",), date(1984, 12, 3), sex="male")
    assert client.lookup(query) == InsiMultiple(count=2)
    with_place = client.lookup(traits("MARTIN", ("JEAN",), date(1984, 12, 3), sex="male", place="13055"))
    assert isinstance(with_place, InsiFound) and with_place.identity.matricule == "184121305500138"
    with_list = client.lookup(traits("MARTIN", ("JEAN", "LUC"), date(1984, 12, 3), sex="male"))
    assert isinstance(with_list, InsiFound) and with_list.identity.traits.birth_given_names == ("JEAN", "LUC")


def test_matricules_are_stored_compact(client: LocalInsi) -> None:
    found = client.lookup(traits("MARTIN", ("JEAN",), date(1984, 12, 3), sex="male", place="76451"))
    assert isinstance(found, InsiFound) and found.identity.matricule == "184127645108946"


def test_verify(client: LocalInsi) -> None:
    ok = client.verify("2 79 03 51 215 189 89", "urn:oid:" + OID_INS_NIR_TEST,
                       traits("Pat Trois", ("Dominique",), date(1979, 3, 28)))
    assert isinstance(ok, InsiFound) and ok.identity.traits.birthplace_code == "51215"

    wrong_oid = client.verify("279035121518989", OID_INS_NIR, traits("PAT-TROIS", ("DOMINIQUE",),
                                                                   date(1979, 3, 28)))
    assert wrong_oid == InsiNotFound("matricule inconnu pour cet OID / unknown matricule for this OID")

    # the same matricule written with another birth date in an official example does not verify
    other_date = client.verify("279035121518989", OID_INS_NIR_TEST,
                               traits("PAT-TROIS", ("DOMINIQUE",), date(1976, 5, 31)))
    assert other_date == InsiNotFound("les traits ne correspondent pas au matricule / "
                                      "the traits do not match the matricule")


def test_unavailable_by_flag(data_file: Path) -> None:
    down = LocalInsi(data_file, unavailable=True)
    with pytest.raises(InsiUnavailable) as caught:
        down.lookup(traits("NESSI", ("RUTH",), date(1977, 7, 14)))
    assert caught.value.message == ("Téléservice INSi indisponible : service désactivé / "
                                    "INSi teleservice unavailable: service switched off")
    assert caught.value.issues[0].code == "transient"
    with pytest.raises(InsiUnavailable):
        down.verify("277076322082910", OID_INS_NIR_TEST, traits("NESSI", ("RUTH",), date(1977, 7, 14)))


def test_unavailable_when_the_file_is_missing_then_back(tmp_path: Path) -> None:
    path = tmp_path / "insi.json"
    client = LocalInsi(path)
    query = traits("NESSI", ("RUTH",), date(1977, 7, 14))
    with pytest.raises(InsiUnavailable, match=r"fichier de référence absent \(insi\.json\) / .*"
                                              r"reference file missing \(insi\.json\)"):
        client.lookup(query)
    write(path, [RUTH])
    assert isinstance(client.lookup(query), InsiFound)
    path.unlink()
    with pytest.raises(InsiUnavailable):
        client.lookup(query)


def test_the_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "insi.json", [RUTH])
    client = LocalInsi(path)
    query = traits("PAT-TROIS", ("DOMINIQUE",), date(1979, 3, 28))
    assert isinstance(client.lookup(query), InsiNotFound)
    write(path, [RUTH, DOMINIQUE])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert isinstance(client.lookup(query), InsiFound)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"fichier de référence illisible \(insi\.json\)"),
    ('{"people": []}', r"liste « identities » attendue"),
    (json.dumps([{**RUTH, "matricule": "277076322082911"}]),
     r"entrée 1 invalide dans insi\.json / .*invalid entry 1 in insi\.json \(Clé de contrôle invalide : "
     r"attendue 10, trouvée 11"),
    (json.dumps([RUTH, {**DOMINIQUE, "oid": "1.2.250.1.213.1.4.13"}]), r"entrée 2 invalide.*OID INS inconnu"),
    (json.dumps([{**RUTH, "traits": {**RUTH["traits"], "sex": "F"}}]), r"entrée 1 invalide.*Sexe invalide"),
    (json.dumps([{**RUTH, "traits": {**RUTH["traits"], "birth_date": "14/07/1977"}}]),
     r"entrée 1 invalide.*ValueError"),
    (json.dumps([{"matricule": "277076322082910"}]), r"entrée 1 invalide.*KeyError"),
])
def test_a_bad_file_makes_the_service_unavailable(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "insi.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InsiUnavailable, match=message):
        LocalInsi(path).lookup(traits("NESSI", ("RUTH",), date(1977, 7, 14)))


def test_traits_match_is_the_documented_rule() -> None:
    known = Traits("MARTIN-DUPONT", ("JEAN", "PIERRE"), date(1984, 12, 3), "male", "2A004")
    assert traits_match(Traits("martin dupont", ("jean",), date(1984, 12, 3), "male"), known)
    assert traits_match(Traits("MARTIN-DUPONT", ("JEAN",), date(1984, 12, 3), "male", "2a004"), known)
    assert not traits_match(Traits("MARTIN", ("JEAN",), date(1984, 12, 3), "male"), known)
    assert not traits_match(Traits("MARTIN-DUPONT", ("PIERRE",), date(1984, 12, 3), "male"), known)
    assert not traits_match(Traits("MARTIN-DUPONT", ("JEAN", "PIERRE", "PAUL"), date(1984, 12, 3), "male"), known)


def test_the_local_client_satisfies_the_protocol(client: LocalInsi) -> None:
    assert isinstance(client, InsiClient)


# -- load_insi ------------------------------------------------------------------------------------------

def test_load_local(data_file: Path) -> None:
    client = load_insi(f"local:{data_file}")
    assert isinstance(client, LocalInsi) and client.path == data_file
    assert isinstance(client.lookup(traits("NESSI", ("Ruth",), date(1977, 7, 14))), InsiFound)


@pytest.fixture
def plugin_module(tmp_path: Path) -> Iterator[str]:
    name = "carnet_test_insi_plugin"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from carnet.identity.insi import InsiNotFound

        class Remote:
            def __init__(self, endpoint="default"):
                self.endpoint = endpoint

            def lookup(self, traits):
                return InsiNotFound(self.endpoint)

            def verify(self, matricule, oid, traits):
                return InsiNotFound(self.endpoint)

        class NotAClient:
            pass

        not_callable = 3
    """), encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_load_module_class(plugin_module: str) -> None:
    client = load_insi(f"{plugin_module}:Remote")
    assert client.lookup(traits("X", ("Y",), date(2000, 1, 1))) == InsiNotFound("default")
    with_argument = load_insi(f"{plugin_module}:Remote:https://insi.example:8443/ws")
    assert with_argument.verify("", "", traits("X", ("Y",), date(2000, 1, 1))) == InsiNotFound(
        "https://insi.example:8443/ws")
    assert isinstance(load_insi(f"carnet.identity.insi:LocalInsi:{FIXTURES}/none.json"), LocalInsi)


@pytest.mark.parametrize(("spec", "message"), [
    ("local:", "needs a file path"),
    ("nothing", "expected 'local:<path>', '<module>:<Class>'"),
    (":Remote", "expected 'local:<path>'"),
    ("carnet_no_such_module:Remote", "cannot import module 'carnet_no_such_module'"),
    ("{plugin}:Missing", "has no class 'Missing'"),
    ("{plugin}:not_callable", "has no class 'not_callable'"),
    ("{plugin}:NotAClient", "NotAClient does not provide lookup() and verify()"),
])
def test_load_errors(plugin_module: str, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_insi(spec.format(plugin=plugin_module))


def test_module_documents_both_configuration_forms() -> None:
    doc = insi.__doc__ or ""
    assert "local:<path>" in doc and "<module>:<Class>" in doc and "<module>:<Class>:<argument>" in doc
