"""Matricule INS: the NIR (or the NIA while a NIR is pending), its layout and its check key.

A matricule has 15 characters, read left to right (positions are 1-based, counted on the value
once spaces are removed, so "1 84 12 76 451 089 46" and "184127645108946" report the same positions):

====================  ==========  ==============================================================
field                 positions   allowed values
====================  ==========  ==============================================================
sex                   1           1 (male), 2 (female); 7, 8 for provisional numbers
year of birth         2-3         00-99
month of birth        4-5         01-12; 20-42 and 50-99 when the civil record is incomplete
département           6-7         01-95 (20 is Corsica before 1976), 2A, 2B, 99 (born abroad)
  overseas            6-8         971-978, 984-988; the commune then has 2 digits (9-10)
commune or country    8-10        001-999 (the INSEE country code for people born abroad)
order                 11-13       001-999
key                   14-15       97 - (N mod 97), N being positions 1-13 read as a number
                                  with 2A replaced by 19 and 2B by 18; always 01-97
====================  ==========  ==============================================================

Every rejection is an :class:`carnet.errors.Unprocessable` whose issues say what is wrong, in
French then English, with the positions involved and the FHIRPath ``expression`` given by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NoReturn

from carnet.errors import Issue, Unprocessable

LENGTH = 15

# -- OIDs of the INS identifier systems -----------------------------------------------------------

OID_INS_NIR = "1.2.250.1.213.1.4.8"
OID_INS_NIA = "1.2.250.1.213.1.4.9"
OID_INS_NIR_TEST = "1.2.250.1.213.1.4.10"
OID_INS_NIR_DEMO = "1.2.250.1.213.1.4.11"


@dataclass(frozen=True)
class InsOid:
    """One INS identifier system: its OID, FR Core identifier type and FHIR ``identifier.use``."""

    oid: str
    type_code: str  # FR Core fr-core-cs-v2-0203 code
    use: str  # FHIR Identifier.use
    label_fr: str
    label_en: str
    allowed_in_production: bool

    @property
    def system(self) -> str:
        return f"urn:oid:{self.oid}"


INS_OIDS: Mapping[str, InsOid] = MappingProxyType({
    OID_INS_NIR: InsOid(OID_INS_NIR, "INS-NIR", "official", "INS-NIR (matricule NIR)",
                        "INS-NIR (NIR matricule)", True),
    OID_INS_NIA: InsOid(OID_INS_NIA, "INS-NIA", "temp", "INS-NIA (numéro identifiant d'attente)",
                        "INS-NIA (temporary identification number)", True),
    OID_INS_NIR_TEST: InsOid(OID_INS_NIR_TEST, "INS-NIR-TEST", "official", "INS-NIR de test",
                             "INS-NIR for testing", False),
    OID_INS_NIR_DEMO: InsOid(OID_INS_NIR_DEMO, "INS-NIR-DEMO", "official", "INS-NIR de démonstration",
                             "INS-NIR for demonstrations", False),
})


def _bare_oid(oid: str) -> str:
    oid = oid.strip()
    return oid[len("urn:oid:"):] if oid.startswith("urn:oid:") else oid


def refused_in_production(oid: str) -> bool:
    """True for the test and demo OIDs, which a production deployment must refuse."""
    known = INS_OIDS.get(_bare_oid(oid))
    return known is not None and not known.allowed_in_production


def production_refused_oids() -> frozenset[str]:
    return frozenset(o.oid for o in INS_OIDS.values() if not o.allowed_in_production)


def check_oid(oid: str, *, production: bool, expression: str | None = None) -> InsOid:
    """The INS system named by ``oid`` (bare or ``urn:oid:``); refuses unknown OIDs, and the test and
    demo OIDs when ``production`` is set."""
    known = INS_OIDS.get(_bare_oid(oid))
    if known is None:
        _fail(_issue(f"OID INS inconnu « {oid} » : attendu l'un de {', '.join(INS_OIDS)}",
                     f'Unknown INS OID "{oid}": expected one of {", ".join(INS_OIDS)}', expression))
    if production and not known.allowed_in_production:
        _fail(_issue(f"OID {known.oid} ({known.label_fr}) refusé en production",
                     f"OID {known.oid} ({known.label_en}) is refused in production mode", expression))
    return known


# -- The matricule ---------------------------------------------------------------------------------

OVERSEAS = frozenset({"971", "972", "973", "974", "975", "976", "977", "978",
                      "984", "985", "986", "987", "988"})


@dataclass(frozen=True)
class Matricule:
    """A matricule INS that passed every layout check (and the key check unless it was waived)."""

    value: str  # 15 characters, no spaces, upper-case
    sex: str  # "1", "2", "7" or "8"
    year: int  # two-digit year of birth
    month: int  # 1-12, or the 20-42 / 50-99 codes of incomplete civil records
    departement: str  # "75", "2A", "971", "99"...
    commune: str  # commune code (3 digits, 2 overseas) or INSEE country code when born abroad
    order: int
    key: str
    key_valid: bool = True

    @property
    def is_provisional(self) -> bool:
        return self.sex in ("7", "8")

    @property
    def born_abroad(self) -> bool:
        return self.departement == "99"

    @property
    def is_overseas(self) -> bool:
        return len(self.departement) == 3

    @property
    def month_known(self) -> bool:
        return 1 <= self.month <= 12

    @property
    def gender(self) -> str:
        """FHIR administrative gender implied by the sex digit."""
        return "male" if self.sex in ("1", "7") else "female"

    @property
    def birthplace_code(self) -> str:
        """The five-character INSEE code of the place of birth: commune, or 99 + country."""
        return self.departement + self.commune

    @property
    def country_code(self) -> str | None:
        """The INSEE country code (99xxx) for people born abroad."""
        return self.birthplace_code if self.born_abroad else None

    @property
    def formatted(self) -> str:
        """The usual display, e.g. ``1 84 12 76 451 089 46``."""
        v = self.value
        return " ".join((v[0], v[1:3], v[3:5], v[5:7], v[7:10], v[10:13], v[13:]))

    def __str__(self) -> str:
        return self.value


def compact(value: str) -> str:
    """The value without any whitespace (spaces, no-break spaces, tabs), upper-cased."""
    return "".join(value.split()).upper()


def _numeric(first13: str) -> int:
    dept = first13[5:7]
    if dept == "2A":
        first13 = first13[:5] + "19" + first13[7:]
    elif dept == "2B":
        first13 = first13[:5] + "18" + first13[7:]
    return int(first13)


def compute_key(first13: str) -> str:
    """The two-digit key of the 13 first characters (spaces ignored; 2A/2B allowed at 6-7)."""
    body = compact(first13)
    if len(body) != 13 or not (body[:5] + body[7:]).isdigit() or not (
            body[5:7].isdigit() or body[5:7] in ("2A", "2B")):
        raise ValueError(f"compute_key expects 13 digits (2A/2B allowed at positions 6-7), got {first13!r}")
    return f"{97 - _numeric(body) % 97:02d}"


def check_key(value: str) -> bool:
    """True when ``value`` has 15 characters whose last two are the key of the first 13."""
    v = compact(value)
    if len(v) != LENGTH or not v[13:].isdigit():
        return False
    try:
        return compute_key(v[:13]) == v[13:]
    except ValueError:
        return False


def is_valid(value: str) -> bool:
    try:
        parse_matricule(value)
    except Unprocessable:
        return False
    return True


def _issue(fr: str, en: str, expression: str | None) -> Issue:
    return Issue("error", "value", f"{fr} / {en}", [expression] if expression else [])


def _fail(*issues: Issue) -> NoReturn:
    raise Unprocessable(issues[0].diagnostics, issues=list(issues))


def _span(first: int, last: int) -> tuple[str, str]:
    if first == last:
        return f"position {first}", f"position {first}"
    return f"positions {first}–{last}", f"positions {first}-{last}"


def _field_issue(name_fr: str, name_en: str, got: str, first: int, last: int, expected_fr: str,
                 expected_en: str, expression: str | None) -> Issue:
    fr_pos, en_pos = _span(first, last)
    return _issue(f"{name_fr} invalide « {got} » ({fr_pos}) : attendu {expected_fr}",
                  f'Invalid {name_en} "{got}" ({en_pos}): expected {expected_en}', expression)


def parse_matricule(value: str, *, expression: str | None = None, verify_key: bool = True) -> Matricule:
    """Check and split a matricule INS. Spaces are ignored, letters upper-cased.

    With ``verify_key=False`` a wrong key does not raise: the result has ``key_valid=False`` (for
    documents whose matricule must be kept as written but treated as not qualified).
    """
    v = compact(value)
    if len(v) != LENGTH:
        hint_fr = hint_en = ""
        if len(v) == 13:
            hint_fr, hint_en = " (la clé semble manquer)", " (the key seems to be missing)"
        _fail(_issue(f"Longueur invalide : {len(v)} caractère{'s' if len(v) > 1 else ''} au lieu de "
                     f"{LENGTH}{hint_fr}",
                     f"Invalid length: {len(v)} character{'s' if len(v) != 1 else ''} instead of "
                     f"{LENGTH}{hint_en}", expression))

    bad = [_issue(f"Caractère invalide « {c} » en position {i}", f'Invalid character "{c}" at position {i}',
                  expression)
           for i, c in enumerate(v, start=1)
           if not (c.isascii() and c.isdigit()) and not (i == 7 and c in "AB")]
    if bad:
        _fail(*bad)

    issues: list[Issue] = []
    sex, month = v[0], int(v[3:5])
    if sex not in "1278":
        issues.append(_field_issue("Sexe", "sex", sex, 1, 1, "1, 2, 7 ou 8", "1, 2, 7 or 8", expression))
    if not (1 <= month <= 12 or 20 <= month <= 42 or month >= 50):
        issues.append(_field_issue("Mois", "month", v[3:5], 4, 5, "01–12, 20–42 ou 50–99",
                                   "01-12, 20-42 or 50-99", expression))

    dept2 = v[5:7]
    if dept2 in ("97", "98"):
        dept, commune = v[5:8], v[8:10]
        if dept not in OVERSEAS:
            issues.append(_field_issue("Département", "département", dept, 6, 8, "971–978 ou 984–988",
                                       "971-978 or 984-988", expression))
        if commune == "00":
            issues.append(_field_issue("Commune", "commune", commune, 9, 10, "01–99", "01-99", expression))
    else:
        dept, commune = dept2, v[7:10]
        if not (dept2 in ("2A", "2B", "99") or (dept2.isdigit() and 1 <= int(dept2) <= 95)):
            issues.append(_field_issue("Département", "département", dept2, 6, 7,
                                       "01–95, 2A, 2B, 97x, 98x ou 99", "01-95, 2A, 2B, 97x, 98x or 99",
                                       expression))
        if commune == "000":
            name_fr, name_en = ("Pays", "country") if dept2 == "99" else ("Commune", "commune")
            issues.append(_field_issue(name_fr, name_en, commune, 8, 10, "001–999", "001-999", expression))
    if v[10:13] == "000":
        issues.append(_field_issue("Numéro d'ordre", "order number", v[10:13], 11, 13, "001–999", "001-999",
                                   expression))
    if issues:
        _fail(*issues)

    expected = compute_key(v[:13])
    key_valid = expected == v[13:]
    if verify_key and not key_valid:
        _fail(_issue(f"Clé de contrôle invalide : attendue {expected}, trouvée {v[13:]} (positions 14–15)",
                     f"Invalid check key: expected {expected}, found {v[13:]} (positions 14-15)", expression))
    return Matricule(value=v, sex=sex, year=int(v[1:3]), month=month, departement=dept, commune=commune,
                     order=int(v[10:13]), key=v[13:], key_valid=key_valid)


def make_matricule(first13: str) -> str:
    """The full 15-character matricule for 13 characters (test and demo data generation)."""
    body = compact(first13)
    return body + compute_key(body)
