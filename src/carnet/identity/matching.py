"""Name normalisation and trait-based scoring for FHIR ``Patient/$match`` and duplicate detection.

The score is a weighted sum of per-trait similarities in [0, 1]:

=================  ======  ============================================================================
trait              weight  similarity
=================  ======  ============================================================================
birth family name  0.30    1 equal once normalised; 0.95 equal ignoring spaces ("LE GALL"/"LEGALL");
                           0.8 one name's words all in the other (part of a compound name);
                           0.8 × string ratio when the ratio is at least 0.8 (typing slips); else 0
birth given names  0.20    1 same list; 0.95 same first given name; 0.85 the first given name of one is
                           one of the other's given names; 0.7 it is a word of one of them
                           ("MARIE"/"MARIE-LOUISE"); 0.7 × ratio (≥ 0.8) between first names; 0.5 when
                           a side has none; else 0
birth date         0.25    1 equal; 0.6 day and month swapped; 0.5 exactly one of day, month, year
                           differs; else 0
sex                0.10    1 equal; 0.5 when a side is other/unknown; else 0
birthplace code    0.15    1 equal; 0.5 when a side is unknown; 0.3 same département; else 0
=================  ======  ============================================================================

Grades (FHIR match-grade codes): ``certain`` when every trait scores at least 0.95; otherwise
``probable`` from 0.85, ``possible`` from 0.65, else ``certainly-not``. A definite sex mismatch (male
against female) caps the grade at ``possible``; a birth date and a family name that both score 0 make it
``certainly-not``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from difflib import SequenceMatcher
from enum import StrEnum
from types import MappingProxyType

from carnet.identity.status import Traits

MATCH_GRADE_SYSTEM = "http://terminology.hl7.org/CodeSystem/match-grade"
MATCH_GRADE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/match-grade"

WEIGHTS: Mapping[str, float] = MappingProxyType({
    "birth_family_name": 0.30, "birth_given_names": 0.20, "birth_date": 0.25, "sex": 0.10,
    "birthplace_code": 0.15,
})

_LIGATURES = str.maketrans({"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss", "Ø": "O", "ø": "o",
                            "Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Þ": "TH", "þ": "th"})


class MatchGrade(StrEnum):
    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"
    CERTAINLY_NOT = "certainly-not"


@dataclass(frozen=True)
class MatchResult:
    score: float
    grade: MatchGrade
    components: Mapping[str, float]  # per-trait similarity, before weighting


def normalise_name(text: str) -> str:
    """Upper-case, accents stripped, hyphens, apostrophes and other punctuation turned into spaces,
    spaces collapsed: ``"d'Arc-Lefèvre  "`` → ``"D ARC LEFEVRE"``."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return " ".join("".join(c if c.isalnum() else " " for c in bare).split())


def names_equal(a: str, b: str) -> bool:
    return normalise_name(a) == normalise_name(b)


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b).ratio()


def family_name_similarity(a: str, b: str) -> float:
    na, nb = normalise_name(a), normalise_name(b)
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    if na.replace(" ", "") == nb.replace(" ", ""):
        return 0.95
    wa, wb = set(na.split()), set(nb.split())
    if wa <= wb or wb <= wa:
        return 0.8
    ratio = _ratio(na, nb)
    return 0.8 * ratio if ratio >= 0.8 else 0.0


def given_names_similarity(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    la = [n for n in (normalise_name(x) for x in a) if n]
    lb = [n for n in (normalise_name(x) for x in b) if n]
    if not la or not lb:
        return 0.5
    if la == lb:
        return 1.0
    if la[0] == lb[0]:
        return 0.95
    if la[0] in lb or lb[0] in la:
        return 0.85
    words_a = {w for n in la for w in n.split()}
    words_b = {w for n in lb for w in n.split()}
    if set(la[0].split()) <= words_b or set(lb[0].split()) <= words_a:
        return 0.7
    ratio = _ratio(la[0], lb[0])
    return 0.7 * ratio if ratio >= 0.8 else 0.0


def birth_date_similarity(a: date, b: date) -> float:
    if a == b:
        return 1.0
    if a.year == b.year and a.day == b.month and a.month == b.day:
        return 0.6
    same = (a.year == b.year) + (a.month == b.month) + (a.day == b.day)
    return 0.5 if same == 2 else 0.0


def sex_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if {a, b} == {"male", "female"}:
        return 0.0
    return 0.5


def birthplace_similarity(a: str | None, b: str | None) -> float:
    if not a or not b:
        return 0.5
    ua, ub = a.strip().upper(), b.strip().upper()
    if ua == ub:
        return 1.0
    return 0.3 if ua[:2] == ub[:2] else 0.0


def score_match(a: Traits, b: Traits) -> MatchResult:
    """Compare two sets of traits; symmetric in its arguments."""
    components = {
        "birth_family_name": family_name_similarity(a.birth_family_name, b.birth_family_name),
        "birth_given_names": given_names_similarity(a.birth_given_names, b.birth_given_names),
        "birth_date": birth_date_similarity(a.birth_date, b.birth_date),
        "sex": sex_similarity(a.sex, b.sex),
        "birthplace_code": birthplace_similarity(a.birthplace_code, b.birthplace_code),
    }
    total = round(sum(WEIGHTS[k] * v for k, v in components.items()), 4)
    if all(v >= 0.95 for v in components.values()):
        grade = MatchGrade.CERTAIN
    elif total >= 0.85:
        grade = MatchGrade.PROBABLE
    elif total >= 0.65:
        grade = MatchGrade.POSSIBLE
    else:
        grade = MatchGrade.CERTAINLY_NOT
    if components["sex"] == 0.0 and grade in (MatchGrade.CERTAIN, MatchGrade.PROBABLE):
        grade = MatchGrade.POSSIBLE
    if components["birth_date"] == 0.0 and components["birth_family_name"] == 0.0:
        grade = MatchGrade.CERTAINLY_NOT
    return MatchResult(score=total, grade=grade, components=MappingProxyType(components))
