"""Directory name searches served by the pair index (family with given or name): the results are
exactly those of the criteria taken one by one — prefixes, longer family names sharing the
prefix, later given names, accents and case — on both databases."""

from __future__ import annotations

import itertools

import pytest

from carnet.fhir.search import Compiler, parse
from carnet.fhir.values import normalise
from tests.conftest import Fhir

PEOPLE = [
    ("MARTIN", ["Jean"]), ("MARTIN", ["Jeanne", "Marie"]), ("MARTINEZ", ["Jean", "Luc"]),
    ("MARTINEZ", ["Paul"]), ("Martin-Dupont", ["Hélène"]), ("MARTEL", ["Jean"]), ("DUPONT", ["Jean"]),
    ("DUPONT", ["Anne", "Jean"]), ("Lefèvre", ["Élodie"]), ("LEFEVRE", ["Eloi"]), ("BERNARD", ["Jean"]),
]
QUERIES = ["martin", "martinez", "mart", "dupont", "lefevre", "lefèvre", "bernard", "nobody"]
GIVEN = ["jean", "jeanne", "je", "marie", "paul", "helene", "hélène", "elo", "anne", "luc", "zoe"]


def expected(family: str, given: str, param: str) -> set[str]:
    f, g = normalise(family), normalise(given)
    out = set()
    for n, (fam, givens) in enumerate(PEOPLE):
        names = [normalise(x) for x in givens] + ([normalise(fam)] if param == "name" else [])
        if normalise(fam).startswith(f) and any(x.startswith(g) for x in names):
            out.add(str(n))
    return out


@pytest.fixture
def people(fhir: Fhir) -> dict[str, str]:
    ids = {}
    for n, (family, given) in enumerate(PEOPLE):
        created = fhir.create({"resourceType": "Practitioner", "name": [{"family": family, "given": given}]})
        ids[created["id"]] = str(n)
    return ids


@pytest.mark.parametrize("param", ["given", "name"])
def test_pair_searches_equal_the_criteria_one_by_one(fhir: Fhir, people: dict[str, str], param: str) -> None:
    for family, given in itertools.product(QUERIES, GIVEN):
        got = {people[i] for i in fhir.search_ids(f"Practitioner?family={family}&{param}={given}&_count=100")}
        assert got == expected(family, given, param), (family, param, given)
    # a third criterion, and a count, still apply
    assert fhir.get("Practitioner?family=martin&given=jean&_summary=count").json()["total"] == 3
    none = fhir.search_ids("Practitioner?family=martin&given=jean&_id=unknown")
    assert none == []


def test_the_pair_index_drives_only_plain_single_values() -> None:
    compiler = Compiler("http://x/fhir")

    def sql(query: list[tuple[str, str]]) -> str:
        return str(compiler.page(parse("Practitioner", query), []))

    assert compiler.pair_applies(parse("Practitioner", [("family", "martin"), ("given", "jean")]))
    assert "idx_string.value LIKE" in sql([("family", "martin"), ("given", "jean")])
    for query in ([("family:exact", "Martin"), ("given", "jean")], [("family", "martin,dupont"), ("given", "jean")],
                  [("family", "martin"), ("identifier", "x|1")], [("family", "martin")]):
        assert not compiler.pair_applies(parse("Practitioner", query)), query
    assert not compiler.pair_applies(parse("Patient", [("family", "martin"), ("given", "jean")]))


def test_chained_criteria_through_one_practitioner_reference(fhir: Fhir, people: dict[str, str]) -> None:
    """PractitionerRole.practitioner holds one reference: its chained criteria concern the same
    practitioner, and are answered by one search of Practitioner."""
    by_n = {n: rid for rid, n in people.items()}
    roles = {}
    for n in by_n:
        role = fhir.create({"resourceType": "PractitionerRole", "practitioner": {
            "reference": f"Practitioner/{by_n[n]}"}})
        roles[role["id"]] = n
    for fam, giv in itertools.product(["martin", "dupont", "durand", "mart"], ["jean", "anne", "paul"]):
        got = {roles[i] for i in fhir.search_ids(
            f"PractitionerRole?practitioner.family={fam}&practitioner.given={giv}&_count=100")}
        assert got == expected(fam, giv, "given"), (fam, giv)


def test_chained_criteria_through_a_repeating_reference_stay_independent(fhir: Fhir) -> None:
    """DocumentReference.author repeats: author.family and author.given may be met by two authors."""
    a = fhir.create({"resourceType": "Practitioner", "name": [{"family": "MARTIN", "given": ["Paul"]}]})
    b = fhir.create({"resourceType": "Practitioner", "name": [{"family": "DUPONT", "given": ["Jean"]}]})
    with fhir.backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        from carnet.auth.principal import Principal
        from carnet.fhir.store import Repository

        doc = Repository(conn, Principal.system(), validator=None).create({
            "resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {}}],
            "author": [{"reference": f"Practitioner/{a['id']}"}, {"reference": f"Practitioner/{b['id']}"}]})
    assert fhir.search_ids("DocumentReference?author.family=martin&author.given=jean") == [doc.id]


def test_repeated_criteria_are_all_applied(fhir: Fhir, people: dict[str, str]) -> None:
    """family=martin&family=martinez: both must hold (the pair index answers one of them)."""
    got = {people[i] for i in fhir.search_ids("Practitioner?family=martin&family=martinez&given=jean")}
    assert got == expected("martinez", "jean", "given")
    got = {people[i] for i in fhir.search_ids("Practitioner?family=martin&given=jean&given=jeanne")}
    assert got == expected("martin", "jeanne", "given")
