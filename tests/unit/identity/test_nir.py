"""Matricule INS (NIR / NIA): layout, key, messages, OIDs; fixture vectors and a property test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carnet.errors import Unprocessable
from carnet.identity import nir
from carnet.identity.nir import (
    OID_INS_NIA,
    OID_INS_NIR,
    OID_INS_NIR_DEMO,
    OID_INS_NIR_TEST,
    check_key,
    check_oid,
    compute_key,
    make_matricule,
    parse_matricule,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fr-ins-nir"
VECTORS = json.loads((FIXTURES / "nir-vectors.json").read_text(encoding="utf-8"))["vectors"]
IDENTITIES = json.loads((FIXTURES / "ins-identities.json").read_text(encoding="utf-8"))["identities"]
EXPR = "Patient.identifier[0].value"


def diagnostics(value: str, **kwargs: Any) -> list[str]:
    with pytest.raises(Unprocessable) as caught:
        parse_matricule(value, **kwargs)
    return [issue.diagnostics for issue in caught.value.issues]


def only_diagnostic(value: str) -> str:
    found = diagnostics(value)
    assert len(found) == 1, found
    return found[0]


# -- Valid layouts (keys computed by hand: 97 - N mod 97) -------------------------------------------

@pytest.mark.parametrize(("value", "dept", "commune", "sex", "month"), [
    ("1 84 12 76 451 089 46", "76", "451", "1", 12),      # mainland, usual display with spaces
    ("253072A07300443", "2A", "073", "2", 7),              # Corse-du-Sud
    ("253072B07300470", "2B", "073", "2", 7),              # Haute-Corse
    ("160052000401207", "20", "004", "1", 5),              # Corsica before 1976
    ("185039710512329", "971", "05", "1", 3),              # Guadeloupe: 3-digit département, 2-digit commune
    ("212119761104231", "976", "11", "2", 11),             # Mayotte
    ("899019881850059", "988", "18", "8", 1),              # New Caledonia, provisional (8)
    ("295109912611193", "99", "126", "2", 10),             # born abroad: 99 + country
    ("760057505612343", "75", "056", "7", 5),              # provisional number (7)
    ("170307505600184", "75", "056", "1", 30),             # month 20-42: incomplete civil record
    ("245621305500279", "13", "055", "2", 62),             # month 50-99
    ("100422B03399987", "2B", "033", "1", 42),             # highest month of the 20-42 range
    ("299999599999956", "95", "999", "2", 99),             # every field at its maximum
    ("100010100100105", "01", "001", "1", 1),              # every field at its minimum
])
def test_valid_layouts(value: str, dept: str, commune: str, sex: str, month: int) -> None:
    m = parse_matricule(value)
    assert (m.departement, m.commune, m.sex, m.month) == (dept, commune, sex, month)
    assert m.value == value.replace(" ", "")
    assert m.key_valid
    assert check_key(value)


@pytest.mark.parametrize(("first13", "key"), [
    ("1841276451037", "01"), ("1841276451038", "97"), ("1841276451089", "46"), ("253072A073004", "43"),
    ("253072B073004", "70"), ("1850397105123", "29"),
])
def test_compute_key_covers_the_whole_range(first13: str, key: str) -> None:
    assert compute_key(first13) == key
    assert make_matricule(first13) == first13 + key


def test_compute_key_rejects_what_is_not_13_characters() -> None:
    for bad in ("184127645108", "18412764510894", "1841276451O89", "18412C6451089"):
        with pytest.raises(ValueError, match="13 digits"):
            compute_key(bad)


def test_check_key_never_raises() -> None:
    assert not check_key("184127645108947")
    assert not check_key("garbage")
    assert not check_key("1841276451089XX")
    assert check_key("184127645108946")


def test_fields_and_derived_properties() -> None:
    m = parse_matricule("1 84 12 76 451 089 46")
    assert (m.year, m.month, m.order, m.key) == (84, 12, 89, "46")
    assert m.gender == "male" and not m.is_provisional and not m.born_abroad and m.month_known
    assert m.birthplace_code == "76451" and m.country_code is None and not m.is_overseas
    assert m.formatted == "1 84 12 76 451 089 46" and str(m) == "184127645108946"

    abroad = parse_matricule("295109912611193")
    assert abroad.born_abroad and abroad.country_code == "99126" and abroad.gender == "female"

    overseas = parse_matricule("185039710512329")
    assert overseas.is_overseas and overseas.birthplace_code == "97105"

    provisional = parse_matricule("760057505612343")
    assert provisional.is_provisional and provisional.gender == "male"
    assert parse_matricule("899019881850059").gender == "female"
    assert not parse_matricule("170307505600184").month_known


def test_whitespace_and_case_are_tolerated() -> None:
    assert parse_matricule("\t1 84 12 76\u00a0451 089 46 ").value == "184127645108946"
    assert parse_matricule("2 53 07 2a 073 004 43").departement == "2A"


# -- Rejections: each message says what, where, and what was expected --------------------------------

@pytest.mark.parametrize(("value", "message"), [
    ("18412764510894", "Longueur invalide : 14 caractères au lieu de 15 / "
                       "Invalid length: 14 characters instead of 15"),
    ("1841276451089461", "Longueur invalide : 16 caractères au lieu de 15 / "
                         "Invalid length: 16 characters instead of 15"),
    ("1841276451089", "Longueur invalide : 13 caractères au lieu de 15 (la clé semble manquer) / "
                      "Invalid length: 13 characters instead of 15 (the key seems to be missing)"),
    ("6546546546546703", "Longueur invalide : 16 caractères au lieu de 15 / "
                         "Invalid length: 16 characters instead of 15"),
    ("", "Longueur invalide : 0 caractère au lieu de 15 / Invalid length: 0 characters instead of 15"),
    ("1", "Longueur invalide : 1 caractère au lieu de 15 / Invalid length: 1 character instead of 15"),
])
def test_wrong_length(value: str, message: str) -> None:
    assert only_diagnostic(value) == message


@pytest.mark.parametrize(("value", "message"), [
    ("18412764510894X", 'Caractère invalide « X » en position 15 / Invalid character "X" at position 15'),
    ("1841276451O8946", 'Caractère invalide « O » en position 11 / Invalid character "O" at position 11'),
    ("1 84 12 76 451 089 4-", 'Caractère invalide « - » en position 15 / Invalid character "-" at position 15'),
    ("2950A9912611193", 'Caractère invalide « A » en position 5 / Invalid character "A" at position 5'),
    ("253072C07300443", 'Caractère invalide « C » en position 7 / Invalid character "C" at position 7'),
    ("1841276451٠8946", 'Caractère invalide « ٠ » en position 11 / Invalid character "٠" at position 11'),
])
def test_invalid_character_named_with_its_position(value: str, message: str) -> None:
    assert only_diagnostic(value) == message


def test_every_invalid_character_is_reported() -> None:
    assert diagnostics("X8412764510894Y") == [
        'Caractère invalide « X » en position 1 / Invalid character "X" at position 1',
        'Caractère invalide « Y » en position 15 / Invalid character "Y" at position 15',
    ]


@pytest.mark.parametrize("sex", ["0", "3", "4", "5", "6", "9"])
def test_invalid_sex(sex: str) -> None:
    first13 = sex + "841276451089"
    assert only_diagnostic(first13 + "00") == (
        f"Sexe invalide « {sex} » (position 1) : attendu 1, 2, 7 ou 8 / "
        f'Invalid sex "{sex}" (position 1): expected 1, 2, 7 or 8')


@pytest.mark.parametrize("month", ["00", "13", "19", "43", "49"])
def test_invalid_month(month: str) -> None:
    assert only_diagnostic(f"184{month}76451089" + "00") == (
        f"Mois invalide « {month} » (positions 4–5) : attendu 01–12, 20–42 ou 50–99 / "
        f'Invalid month "{month}" (positions 4-5): expected 01-12, 20-42 or 50-99')


@pytest.mark.parametrize("month", ["01", "12", "20", "42", "50", "99"])
def test_month_boundaries_are_accepted(month: str) -> None:
    assert parse_matricule(make_matricule(f"184{month}76451089")).month == int(month)


@pytest.mark.parametrize("dept", ["00", "96", "1A", "3B"])
def test_invalid_departement(dept: str) -> None:
    assert only_diagnostic(f"18412{dept}451089" + "00") == (
        f"Département invalide « {dept} » (positions 6–7) : attendu 01–95, 2A, 2B, 97x, 98x ou 99 / "
        f'Invalid département "{dept}" (positions 6-7): expected 01-95, 2A, 2B, 97x, 98x or 99')


@pytest.mark.parametrize("dept", ["970", "979", "980", "983", "989"])
def test_invalid_overseas_departement(dept: str) -> None:
    assert only_diagnostic(f"18412{dept}51089" + "00") == (
        f"Département invalide « {dept} » (positions 6–8) : attendu 971–978 ou 984–988 / "
        f'Invalid département "{dept}" (positions 6-8): expected 971-978 or 984-988')


@pytest.mark.parametrize("dept", ["971", "972", "973", "974", "975", "976", "977", "978", "984", "985", "986",
                                  "987", "988"])
def test_overseas_departements_are_accepted(dept: str) -> None:
    m = parse_matricule(make_matricule(f"18412{dept}51089"))
    assert (m.departement, m.commune) == (dept, "51")


def test_invalid_commune_country_and_order() -> None:
    assert only_diagnostic("184127600008900") == (
        "Commune invalide « 000 » (positions 8–10) : attendu 001–999 / "
        'Invalid commune "000" (positions 8-10): expected 001-999')
    assert only_diagnostic("184129710008900") == (
        "Commune invalide « 00 » (positions 9–10) : attendu 01–99 / "
        'Invalid commune "00" (positions 9-10): expected 01-99')
    assert only_diagnostic("184129900008900") == (
        "Pays invalide « 000 » (positions 8–10) : attendu 001–999 / "
        'Invalid country "000" (positions 8-10): expected 001-999')
    assert only_diagnostic("184127645100000") == (
        "Numéro d'ordre invalide « 000 » (positions 11–13) : attendu 001–999 / "
        'Invalid order number "000" (positions 11-13): expected 001-999')


def test_all_field_errors_are_reported_together_and_before_the_key() -> None:
    assert diagnostics("314130000000000") == [
        'Sexe invalide « 3 » (position 1) : attendu 1, 2, 7 ou 8 / Invalid sex "3" (position 1): '
        "expected 1, 2, 7 or 8",
        "Mois invalide « 13 » (positions 4–5) : attendu 01–12, 20–42 ou 50–99 / "
        'Invalid month "13" (positions 4-5): expected 01-12, 20-42 or 50-99',
        "Département invalide « 00 » (positions 6–7) : attendu 01–95, 2A, 2B, 97x, 98x ou 99 / "
        'Invalid département "00" (positions 6-7): expected 01-95, 2A, 2B, 97x, 98x or 99',
        "Commune invalide « 000 » (positions 8–10) : attendu 001–999 / "
        'Invalid commune "000" (positions 8-10): expected 001-999',
        "Numéro d'ordre invalide « 000 » (positions 11–13) : attendu 001–999 / "
        'Invalid order number "000" (positions 11-13): expected 001-999',
    ]


@pytest.mark.parametrize(("value", "expected", "found"), [
    ("184127645108947", "46", "47"),
    ("184127645108900", "46", "00"),
    ("184127645108998", "46", "98"),
    ("253072A07300470", "43", "70"),   # the 2B key on a 2A number
    ("253072B07300443", "70", "43"),   # and the reverse
])
def test_wrong_key_names_expected_and_found(value: str, expected: str, found: str) -> None:
    assert only_diagnostic(value) == (
        f"Clé de contrôle invalide : attendue {expected}, trouvée {found} (positions 14–15) / "
        f"Invalid check key: expected {expected}, found {found} (positions 14-15)")


def test_expression_is_the_callers() -> None:
    with pytest.raises(Unprocessable) as caught:
        parse_matricule("184127645108947", expression=EXPR)
    issue = caught.value.issues[0]
    assert issue.expression == [EXPR]
    assert (issue.severity, issue.code) == ("error", "value")
    assert caught.value.message == issue.diagnostics
    with pytest.raises(Unprocessable) as caught:
        parse_matricule("X8412764510894Y", expression=EXPR)
    assert [i.expression for i in caught.value.issues] == [[EXPR], [EXPR]]
    with pytest.raises(Unprocessable) as caught:
        parse_matricule("184127645108947")
    assert caught.value.issues[0].expression == []


def test_key_check_can_be_waived_but_not_the_layout() -> None:
    m = parse_matricule("221042545611404", verify_key=False)
    assert not m.key_valid and m.key == "04"
    with pytest.raises(Unprocessable):
        parse_matricule("221042545600004", verify_key=False)


# -- Fixture vectors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", VECTORS, ids=[v["input"] for v in VECTORS])
def test_reference_vectors(vector: dict[str, Any]) -> None:
    if vector["expect"] == "valid":
        assert parse_matricule(vector["input"]).value == vector["compact"]
    else:
        assert vector["expect"] == "invalid-checksum"
        compact = nir.compact(vector["input"])
        assert only_diagnostic(vector["input"]).startswith(
            f"Clé de contrôle invalide : attendue {compute_key(compact[:13])}, trouvée {compact[13:]}")
        assert compute_key(compact[:13]) == "93"


@pytest.mark.parametrize("identity", IDENTITIES, ids=[i["matricule"] for i in IDENTITIES])
def test_official_examples(identity: dict[str, Any]) -> None:
    value = identity["matricule"]
    if identity["nir_key_valid_computed"]:
        assert parse_matricule(value).key == identity["expected_key_computed"]
    else:
        expected = identity["expected_key_computed"]
        assert only_diagnostic(value) == (
            f"Clé de contrôle invalide : attendue {expected}, trouvée {value[13:]} (positions 14–15) / "
            f"Invalid check key: expected {expected}, found {value[13:]} (positions 14-15)")
        assert not parse_matricule(value, verify_key=False).key_valid


def test_official_examples_include_the_known_bad_key() -> None:
    bad = {i["matricule"]: i["expected_key_computed"] for i in IDENTITIES if not i["nir_key_valid_computed"]}
    assert bad["221042545611404"] == "83"
    assert "Clé de contrôle invalide : attendue 83, trouvée 04 (positions 14–15) / Invalid check key: " \
           "expected 83, found 04 (positions 14-15)" in diagnostics("221042545611404")


# -- OIDs ------------------------------------------------------------------------------------------------

def test_oids() -> None:
    assert OID_INS_NIR == "1.2.250.1.213.1.4.8" and check_oid(OID_INS_NIR, production=True).use == "official"
    assert OID_INS_NIA == "1.2.250.1.213.1.4.9" and check_oid(OID_INS_NIA, production=True).use == "temp"
    assert nir.production_refused_oids() == {OID_INS_NIR_TEST, OID_INS_NIR_DEMO} == {
        "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
    assert nir.refused_in_production("urn:oid:1.2.250.1.213.1.4.10")
    assert not nir.refused_in_production(OID_INS_NIR)
    assert not nir.refused_in_production("1.2.3")
    assert check_oid("urn:oid:1.2.250.1.213.1.4.10", production=False).type_code == "INS-NIR-TEST"
    assert check_oid(OID_INS_NIR, production=True).system == "urn:oid:1.2.250.1.213.1.4.8"


@pytest.mark.parametrize("oid", [OID_INS_NIR_TEST, OID_INS_NIR_DEMO])
def test_test_and_demo_oids_are_refused_in_production(oid: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        check_oid(oid, production=True, expression="Patient.identifier[0].system")
    label = nir.INS_OIDS[oid]
    assert caught.value.issues[0].diagnostics == (
        f"OID {oid} ({label.label_fr}) refusé en production / "
        f"OID {oid} ({label.label_en}) is refused in production mode")
    assert caught.value.issues[0].expression == ["Patient.identifier[0].system"]


def test_unknown_oid_is_refused() -> None:
    # The social-security use of the NIR (…4.13), met in official examples, is not an INS system.
    oids = {i["oid"] for i in IDENTITIES}
    assert "1.2.250.1.213.1.4.13" in oids
    with pytest.raises(Unprocessable, match=r"OID INS inconnu « 1\.2\.250\.1\.213\.1\.4\.13 »"):
        check_oid("1.2.250.1.213.1.4.13", production=False)


# -- Property: any single-character change of a valid matricule is rejected ----------------------------

_places = st.one_of(
    st.integers(1, 95).map(lambda d: f"{d:02d}").flatmap(
        lambda d: st.integers(1, 999).map(lambda c: f"{d}{c:03d}")),
    st.sampled_from(["2A", "2B", "99"]).flatmap(lambda d: st.integers(1, 999).map(lambda c: f"{d}{c:03d}")),
    st.sampled_from(sorted(nir.OVERSEAS)).flatmap(lambda d: st.integers(1, 99).map(lambda c: f"{d}{c:02d}")),
)
_months = st.one_of(st.integers(1, 12), st.integers(20, 42), st.integers(50, 99))
matricules = st.builds(
    lambda sex, year, month, place, order: make_matricule(f"{sex}{year:02d}{month:02d}{place}{order:03d}"),
    st.sampled_from("1278"), st.integers(0, 99), _months, _places, st.integers(1, 999))


@given(matricules)
def test_generated_matricules_are_valid(value: str) -> None:
    m = parse_matricule(value)
    assert m.value == value and m.formatted.replace(" ", "") == value
    assert int(value[:13].replace("2A", "19").replace("2B", "18")) % 97 == (97 - int(m.key)) % 97


@given(matricules, st.integers(0, 14), st.characters(codec="utf-8", exclude_categories=["Cs"]))
def test_any_single_character_change_is_rejected(value: str, index: int, replacement: str) -> None:
    # Upper-casing is part of reading a matricule, so "a" for "A" is the same matricule, not a change.
    if replacement.upper() == value[index]:
        replacement = "X" if value[index] != "X" else "Y"
    changed = value[:index] + replacement + value[index + 1:]
    with pytest.raises(Unprocessable):
        parse_matricule(changed)
    assert not check_key(changed)
