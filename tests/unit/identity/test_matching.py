"""Name normalisation and the $match score and grade."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carnet.identity.matching import (
    WEIGHTS,
    MatchGrade,
    birth_date_similarity,
    family_name_similarity,
    given_names_similarity,
    names_equal,
    normalise_name,
    score_match,
)
from carnet.identity.status import Traits, given_names_from_list

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fr-ins-nir"

BASE = Traits(birth_family_name="MARTIN-DUPONT", birth_given_names=("JEAN", "PIERRE"),
              birth_date=date(1984, 12, 3), sex="male", birthplace_code="76451")


def variant(**changes: Any) -> Traits:
    return replace(BASE, **changes)


@pytest.mark.parametrize(("raw", "expected"), [
    ("Martin-Dupont", "MARTIN DUPONT"),
    ("  martin   dupont ", "MARTIN DUPONT"),
    ("d'Arc-Lefèvre", "D ARC LEFEVRE"),
    ("D’ARC", "D ARC"),
    ("Hélène Noël-Ça", "HELENE NOEL CA"),
    ("Lætitia Œuvray", "LAETITIA OEUVRAY"),
    ("Müller--Straße", "MULLER STRASSE"),
    ("Łukasz", "LUKASZ"),
    ("ST. JEAN", "ST JEAN"),
    ("", ""),
    ("'-'", ""),
])
def test_normalise_name(raw: str, expected: str) -> None:
    assert normalise_name(raw) == expected


def test_names_equal() -> None:
    assert names_equal("MARTIN-DUPONT", "Martin Dupont")
    assert names_equal("Lefèvre", "LEFEVRE")
    assert not names_equal("LEFEVRE", "LEFEBVRE")


def test_identical_traits_are_certain() -> None:
    result = score_match(BASE, BASE)
    assert result.score == 1.0 and result.grade is MatchGrade.CERTAIN
    assert set(result.components) == set(WEIGHTS) and sum(WEIGHTS.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("family", ["MARTIN DUPONT", "Martin-Dupont", "martin dupont", "MARTIN‐DUPONT",
                                    "MARTIN  -  DUPONT"])
def test_compound_names_with_hyphen_or_space_are_the_same(family: str) -> None:
    result = score_match(BASE, variant(birth_family_name=family))
    assert result.components["birth_family_name"] == 1.0 and result.grade is MatchGrade.CERTAIN


def test_names_joined_without_space() -> None:
    assert family_name_similarity("LE GALL", "LEGALL") == 0.95
    assert score_match(variant(birth_family_name="LE GALL"), variant(birth_family_name="LEGALL")).grade is (
        MatchGrade.CERTAIN)


def test_part_of_a_compound_name_is_probable() -> None:
    result = score_match(BASE, variant(birth_family_name="MARTIN"))
    assert result.components["birth_family_name"] == 0.8
    assert result.score == pytest.approx(0.94) and result.grade is MatchGrade.PROBABLE


def test_typing_slip_in_the_family_name_is_probable() -> None:
    a, b = variant(birth_family_name="DUPONT"), variant(birth_family_name="DUPOND")
    sim = family_name_similarity("DUPONT", "DUPOND")
    assert 0.6 < sim < 0.7
    assert score_match(a, b).grade is MatchGrade.PROBABLE
    assert family_name_similarity("DUPONT", "LEBRETON") == 0.0


@pytest.mark.parametrize(("a", "b", "expected"), [
    (("JEAN", "PIERRE"), ("JEAN", "PIERRE"), 1.0),
    (("JEAN",), ("JEAN", "PIERRE"), 0.95),                 # the first given name alone
    (("PIERRE",), ("JEAN", "PIERRE"), 0.85),               # the first given name of one is in the other's list
    (("JEAN", "PIERRE"), ("PIERRE",), 0.85),
    (("MARIE",), ("MARIE-LOUISE",), 0.7),                  # a word of a compound given name
    (("Marie-Louise",), ("MARIE LOUISE",), 1.0),
    (("Hélène",), ("HELENE",), 1.0),
    ((), ("JEAN",), 0.5),
    (("PAUL",), ("JEAN", "PIERRE"), 0.0),
])
def test_given_names(a: tuple[str, ...], b: tuple[str, ...], expected: float) -> None:
    assert given_names_similarity(a, b) == pytest.approx(expected)
    assert given_names_similarity(b, a) == pytest.approx(expected)


def test_first_given_name_among_the_list_still_matches() -> None:
    result = score_match(variant(birth_given_names=("PIERRE",)), BASE)
    assert result.grade is MatchGrade.PROBABLE and result.score == pytest.approx(0.97)


@pytest.mark.parametrize(("other", "expected"), [
    (date(1984, 12, 3), 1.0), (date(1984, 3, 12), 0.6), (date(1984, 12, 4), 0.5), (date(1985, 12, 3), 0.5),
    (date(1984, 11, 3), 0.5), (date(1990, 1, 1), 0.0), (date(1985, 11, 3), 0.0),
])
def test_birth_date(other: date, expected: float) -> None:
    assert birth_date_similarity(BASE.birth_date, other) == expected


def test_day_and_month_swapped_is_probable() -> None:
    assert score_match(BASE, variant(birth_date=date(1984, 3, 12))).grade is MatchGrade.PROBABLE


def test_sex_mismatch_caps_the_grade() -> None:
    result = score_match(BASE, variant(sex="female"))
    assert result.score == pytest.approx(0.9) and result.grade is MatchGrade.POSSIBLE
    unknown = score_match(BASE, variant(sex="unknown"))
    assert unknown.components["sex"] == 0.5 and unknown.grade is MatchGrade.PROBABLE


def test_unknown_birthplace_is_never_certain() -> None:
    result = score_match(BASE, variant(birthplace_code=None))
    assert result.score == pytest.approx(0.925) and result.grade is MatchGrade.PROBABLE
    same_dept = score_match(BASE, variant(birthplace_code="76540"))
    assert same_dept.components["birthplace_code"] == 0.3


def test_different_people_are_certainly_not() -> None:
    other = Traits("LEBRETON", ("SOPHIE",), date(1962, 7, 14), "female", "13055")
    result = score_match(BASE, other)
    assert result.score == 0.0 and result.grade is MatchGrade.CERTAINLY_NOT
    # a homonym born on another date is a lead at most
    homonym = score_match(BASE, variant(birth_date=date(1950, 6, 20)))
    assert homonym.grade is MatchGrade.POSSIBLE
    # nothing in common but the sex and the birthplace
    stranger = replace(other, sex="male", birthplace_code="76451")
    assert score_match(BASE, stranger).grade is MatchGrade.CERTAINLY_NOT


# -- The official examples: one matricule written with different traits in different documents -------

def _fixture_traits() -> dict[str, list[Traits]]:
    data = json.loads((FIXTURES / "ins-identities.json").read_text(encoding="utf-8"))
    out: dict[str, list[Traits]] = {}
    for identity in data["identities"]:
        for record in identity.get("as_record_target", []):
            t = record["traits"]
            born = t["birthTime"]
            out.setdefault(identity["matricule"], []).append(Traits(
                birth_family_name=t["family_BR(nom de naissance)"][0],
                birth_given_names=given_names_from_list(t["given_unqualified(liste des prenoms)"][0]),
                birth_date=date(int(born[:4]), int(born[4:6]), int(born[6:])),
                sex={"F": "female", "M": "male"}[t["gender"]], birthplace_code=t["birthplace_county(COG)"]))
    return out


def test_official_examples_with_diverging_traits() -> None:
    by_matricule = _fixture_traits()
    first, other_place, other_date = by_matricule["279035121518989"]
    assert score_match(first, first).grade is MatchGrade.CERTAIN
    assert score_match(first, other_place).grade is MatchGrade.PROBABLE
    assert score_match(first, other_date).grade is MatchGrade.POSSIBLE
    # same names, different birth dates and matricules: worth a look, not a merge
    (ruth_2021,), (ruth_2022,) = by_matricule["221042545611404"], by_matricule["222127505611201"]
    assert score_match(ruth_2021, ruth_2022).grade is MatchGrade.POSSIBLE
    # a birth name that differs from the used name is another identity
    (nessi,) = by_matricule["277076322082910"]
    assert score_match(nessi, ruth_2021).grade is MatchGrade.CERTAINLY_NOT


# -- Properties ------------------------------------------------------------------------------------------

_names = st.text(alphabet="ABCDÉÈËFGHIJKLMNOPQRSTUVWXYZ -'", min_size=1, max_size=20).filter(
    lambda s: normalise_name(s) != "")
traits = st.builds(
    Traits, _names, st.lists(_names, max_size=3).map(tuple), st.dates(date(1900, 1, 1), date(2030, 12, 31)),
    st.sampled_from(["male", "female", "other", "unknown"]), st.one_of(st.none(), st.from_regex(r"\d{5}",
                                                                                                  fullmatch=True)))


@given(traits, traits)
def test_score_is_bounded_and_symmetric(a: Traits, b: Traits) -> None:
    ab, ba = score_match(a, b), score_match(b, a)
    assert 0.0 <= ab.score <= 1.0
    assert ab.score == ba.score and ab.grade is ba.grade


@given(traits)
def test_a_record_matches_itself(a: Traits) -> None:
    # Missing traits weigh 0.5: one missing trait makes a self-match probable, two make it possible.
    missing = (not a.birthplace_code) + (not a.birth_given_names)
    expected = [MatchGrade.CERTAIN, MatchGrade.PROBABLE, MatchGrade.POSSIBLE][missing]
    assert score_match(a, a).grade is expected


@given(_names)
def test_normalisation_is_idempotent(name: str) -> None:
    once = normalise_name(name)
    assert normalise_name(once) == once and once == once.upper() and "  " not in once
