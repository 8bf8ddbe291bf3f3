"""National identifiers of the directory: RPPS, ADELI, FINESS, SIREN, SIRET, PS_IdNat; TRE_G15 professions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carnet.directory import keys
from carnet.directory.keys import (
    IdNatKind,
    StructureIdNatKind,
    adeli_departement,
    finess_departement,
    luhn_check_digit,
    luhn_checksum,
    luhn_is_valid,
    make_finess,
    make_rpps,
    parse_ps_idnat,
    parse_structure_idnat,
    profession,
    professions,
    professions_metadata,
    ps_idnat,
    validate_adeli,
    validate_finess,
    validate_rpps,
    validate_siren,
    validate_siret,
)
from carnet.errors import Unprocessable


def message(check: Callable[..., object], value: str) -> str:
    with pytest.raises(Unprocessable) as caught:
        check(value, expression="Practitioner.identifier[0].value")
    (issue,) = caught.value.issues
    assert issue.expression == ["Practitioner.identifier[0].value"]
    assert issue.severity == "error" and caught.value.message == issue.diagnostics
    return issue.diagnostics


# -- Luhn --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "valid"), [
    ("79927398713", True), ("79927398710", False), ("0", True), ("18", True), ("4539319503436467", True),
    ("8273123273520569", False),
])
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_is_valid(number) is valid
    assert (luhn_checksum(number) == 0) is valid


def test_luhn_check_digit() -> None:
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_check_digit("") == "0"
    assert not luhn_is_valid("7992739871a") and not luhn_is_valid("٧٩")


# -- RPPS ----------------------------------------------------------------------------------------------------

# RPPS numbers found in the national agency's CDA examples, all of which verify.
RPPS_EXAMPLES = ["10000336601", "10000441302", "10004000922", "10100997245", "10101451689", "01234567897"]


@pytest.mark.parametrize("rpps", RPPS_EXAMPLES)
def test_valid_rpps(rpps: str) -> None:
    assert validate_rpps(rpps) == rpps


def test_rpps_spaces_are_ignored() -> None:
    assert validate_rpps(" 101 0099 7245 ") == "10100997245"


@pytest.mark.parametrize(("value", "diagnostics"), [
    ("10100997246", 'RPPS invalide « 10100997246 » : clé de contrôle (Luhn) attendue 5, trouvée 6 (position 11) / '
                    'Invalid RPPS "10100997246": expected Luhn check digit 5, found 6 (position 11)'),
    ("01234567893", 'RPPS invalide « 01234567893 » : clé de contrôle (Luhn) attendue 7, trouvée 3 (position 11) / '
                    'Invalid RPPS "01234567893": expected Luhn check digit 7, found 3 (position 11)'),
    ("1010099724", 'RPPS invalide « 1010099724 » : 10 caractères au lieu de 11 / '
                   'Invalid RPPS "1010099724": 10 characters instead of 11'),
    ("101009972451", 'RPPS invalide « 101009972451 » : 12 caractères au lieu de 11 / '
                     'Invalid RPPS "101009972451": 12 characters instead of 11'),
    ("1010099724X", 'RPPS invalide « 1010099724X » : caractère « X » non numérique en position 11 / '
                    'Invalid RPPS "1010099724X": non-digit character "X" at position 11'),
])
def test_invalid_rpps(value: str, diagnostics: str) -> None:
    assert message(validate_rpps, value) == diagnostics


def test_make_rpps() -> None:
    assert make_rpps("1000000000") == "10000000009"
    assert make_rpps("1010099724") == "10100997245"
    with pytest.raises(ValueError, match="10 digits"):
        make_rpps("101009972")
    with pytest.raises(ValueError, match="10 digits"):
        make_rpps("10100997X4")


@given(st.from_regex(r"[0-9]{10}", fullmatch=True), st.integers(0, 10), st.integers(1, 9))
def test_rpps_any_single_digit_change_is_rejected(first10: str, index: int, shift: int) -> None:
    valid = make_rpps(first10)
    assert validate_rpps(valid) == valid
    changed = valid[:index] + str((int(valid[index]) + shift) % 10) + valid[index + 1:]
    with pytest.raises(Unprocessable, match="Luhn"):
        validate_rpps(changed)


# -- ADELI ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("adeli", "dept"), [
    ("751234567", "75"), ("2A1234567", "2A"), ("2b1234567", "2B"), ("9A1234567", "971"), ("9D1234567", "974"),
    ("9F0000001", "976"), ("990000001", "99"),
])
def test_valid_adeli(adeli: str, dept: str) -> None:
    assert validate_adeli(adeli) == adeli.upper()
    assert adeli_departement(adeli) == dept


def test_adeli_has_no_check_digit() -> None:
    # No public rule defines one: any final digit is accepted (see the module documentation).
    assert {validate_adeli(f"75123456{d}") for d in "0123456789"} == {f"75123456{d}" for d in "0123456789"}


@pytest.mark.parametrize(("value", "diagnostics"), [
    ("75123456", 'ADELI invalide « 75123456 » : 8 caractères au lieu de 9 / '
                 'Invalid ADELI "75123456": 8 characters instead of 9'),
    ("001234567", 'ADELI invalide « 001234567 » : département « 00 » (positions 1–2) : attendu 01–99, 2A, 2B ou '
                  '9A–9F / Invalid ADELI "001234567": département "00" (positions 1-2): expected 01-99, 2A, 2B or '
                  '9A-9F'),
    ("9G1234567", 'ADELI invalide « 9G1234567 » : département « 9G » (positions 1–2) : attendu 01–99, 2A, 2B ou '
                  '9A–9F / Invalid ADELI "9G1234567": département "9G" (positions 1-2): expected 01-99, 2A, 2B or '
                  '9A-9F'),
    ("7512345A7", 'ADELI invalide « 7512345A7 » : caractère « A » non numérique en position 8 / '
                  'Invalid ADELI "7512345A7": non-digit character "A" at position 8'),
])
def test_invalid_adeli(value: str, diagnostics: str) -> None:
    assert message(validate_adeli, value) == diagnostics


# -- FINESS ----------------------------------------------------------------------------------------------------

# Establishment numbers published in an official list of health establishments (legal entity and site).
FINESS_PUBLISHED = [
    "240000059", "240000372", "330780495", "640017646", "150780088", "630780997", "210987665", "290000017",
    "080001969", "080000276", "090780107", "010780062", "070005566", "730000247", "750803454", "010780914",
]
FINESS_CORSICA = ["2A0000154", "2B0004246", "2B0000038", "2B0005342", "2B0005359"]


@pytest.mark.parametrize("finess", FINESS_PUBLISHED + FINESS_CORSICA)
def test_published_finess_numbers_verify(finess: str) -> None:
    assert validate_finess(finess) == finess


def test_corsican_letters_count_as_one_and_two() -> None:
    assert [finess_departement(f) for f in FINESS_CORSICA] == ["2A", "2B", "2B", "2B", "2B"]
    assert validate_finess("2a0000154") == "2A0000154"
    # Reading the letters as 0 (as some NIR code does) would reject every published Corsican number.
    assert not any(luhn_is_valid(f.replace("A", "0").replace("B", "0")) for f in FINESS_CORSICA)
    assert message(validate_finess, "2B0000154") == (
        'FINESS invalide « 2B0000154 » : clé de contrôle (Luhn) attendue 2, trouvée 4 (position 9) / '
        'Invalid FINESS "2B0000154": expected Luhn check digit 2, found 4 (position 9)')


@pytest.mark.parametrize(("value", "diagnostics"), [
    ("120456789", 'FINESS invalide « 120456789 » : clé de contrôle (Luhn) attendue 5, trouvée 9 (position 9) / '
                  'Invalid FINESS "120456789": expected Luhn check digit 5, found 9 (position 9)'),
    ("000000000", 'FINESS invalide « 000000000 » : département « 00 » (positions 1–2) : attendu 01–95, 2A, 2B, 97 '
                  'ou 98 / Invalid FINESS "000000000": département "00" (positions 1-2): expected 01-95, 2A, 2B, '
                  '97 or 98'),
    ("960000001", 'FINESS invalide « 960000001 » : département « 96 » (positions 1–2) : attendu 01–95, 2A, 2B, 97 '
                  'ou 98 / Invalid FINESS "960000001": département "96" (positions 1-2): expected 01-95, 2A, 2B, '
                  '97 or 98'),
    ("990000001", 'FINESS invalide « 990000001 » : département « 99 » (positions 1–2) : attendu 01–95, 2A, 2B, 97 '
                  'ou 98 / Invalid FINESS "990000001": département "99" (positions 1-2): expected 01-95, 2A, 2B, '
                  '97 or 98'),
    ("2C0000154", 'FINESS invalide « 2C0000154 » : département « 2C » (positions 1–2) : attendu 01–95, 2A, 2B, 97 '
                  'ou 98 / Invalid FINESS "2C0000154": département "2C" (positions 1-2): expected 01-95, 2A, 2B, '
                  '97 or 98'),
    ("75080345", 'FINESS invalide « 75080345 » : 8 caractères au lieu de 9 / '
                 'Invalid FINESS "75080345": 8 characters instead of 9'),
    ("7508O3454", 'FINESS invalide « 7508O3454 » : caractère « O » non numérique en position 5 / '
                  'Invalid FINESS "7508O3454": non-digit character "O" at position 5'),
])
def test_invalid_finess(value: str, diagnostics: str) -> None:
    assert message(validate_finess, value) == diagnostics


def test_overseas_finess() -> None:
    for first8 in ("97010022", "97040001", "98050001"):
        assert validate_finess(make_finess(first8))[:2] in ("97", "98")


def test_make_finess() -> None:
    assert make_finess("75080345") == "750803454"
    assert make_finess("2A000015") == "2A0000154"
    assert make_finess("2B000534") == "2B0005342"
    for bad in ("7508034", "2C000015", "7A000015", "750803X5"):
        with pytest.raises(ValueError, match="8 characters"):
            make_finess(bad)


@given(st.one_of(st.from_regex(r"(0[1-9]|[1-8][0-9]|9[0-5])[0-9]{6}", fullmatch=True),
                 st.from_regex(r"2[AB][0-9]{6}", fullmatch=True)),
       st.integers(2, 8), st.integers(1, 9))
def test_finess_any_single_digit_change_is_rejected(first8: str, index: int, shift: int) -> None:
    valid = make_finess(first8)
    assert validate_finess(valid) == valid
    changed = valid[:index] + str((int(valid[index]) + shift) % 10) + valid[index + 1:]
    with pytest.raises(Unprocessable, match="Luhn"):
        validate_finess(changed)


# -- SIREN / SIRET ------------------------------------------------------------------------------------------------

def test_siren() -> None:
    assert validate_siren("732 829 320") == "732829320"
    assert message(validate_siren, "732829321") == (
        'SIREN invalide « 732829321 » : clé de contrôle (Luhn) attendue 0, trouvée 1 (position 9) / '
        'Invalid SIREN "732829321": expected Luhn check digit 0, found 1 (position 9)')


@pytest.mark.parametrize("siret", ["73282932000074", "732 829 320 00074", "35600000000048", "35600000049837"])
def test_valid_siret(siret: str) -> None:
    assert validate_siret(siret) == siret.replace(" ", "")


@pytest.mark.parametrize(("value", "diagnostics"), [
    ("73282932000079", 'SIRET invalide « 73282932000079 » : clé de contrôle (Luhn) attendue 4, trouvée 9 '
                       '(position 14) / Invalid SIRET "73282932000079": expected Luhn check digit 4, found 9 '
                       '(position 14)'),
    ("73282932100074", 'SIRET invalide « 73282932100074 » : le SIREN (positions 1–9) a une clé de contrôle (Luhn) '
                       'invalide : attendue 0, trouvée 1 (position 9) / Invalid SIRET "73282932100074": its SIREN '
                       '(positions 1-9) has an invalid Luhn check digit: expected 0, found 1 (position 9)'),
    # passes Luhn, but La Poste numbers follow their own rule
    ("35600000000014", 'SIRET invalide « 35600000000014 » : règle La Poste : la somme des chiffres (19) doit être '
                       'un multiple de 5 / Invalid SIRET "35600000000014": La Poste rule: the sum of the digits '
                       '(19) must be a multiple of 5'),
    ("7328293200007", 'SIRET invalide « 7328293200007 » : 13 caractères au lieu de 14 / '
                      'Invalid SIRET "7328293200007": 13 characters instead of 14'),
])
def test_invalid_siret(value: str, diagnostics: str) -> None:
    assert message(validate_siret, value) == diagnostics


def test_la_poste_rule_is_not_luhn() -> None:
    assert luhn_is_valid("35600000000014") and not luhn_is_valid("35600000049837")
    assert luhn_is_valid(keys.LA_POSTE_HEAD_OFFICE_SIRET)


# -- PS_IdNat and structure identifiers --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "kind", "identifier", "local"), [
    ("810100997245", IdNatKind.RPPS, "10100997245", None),
    ("801234567897", IdNatKind.RPPS, "01234567897", None),
    ("0751234567", IdNatKind.ADELI, "751234567", None),
    ("3750803454/ABC-12", IdNatKind.FINESS, "750803454", "ABC-12"),
    ("32a0000154", IdNatKind.FINESS, "2A0000154", None),
    ("4732829320/agent.7", IdNatKind.SIREN, "732829320", "agent.7"),
    ("573282932000074/1234", IdNatKind.SIRET, "73282932000074", "1234"),
    ("6C1234/med", IdNatKind.RPPS_PRACTICE, "C1234", "med"),
])
def test_parse_ps_idnat(value: str, kind: IdNatKind, identifier: str, local: str | None) -> None:
    parsed = parse_ps_idnat(value)
    assert (parsed.kind, parsed.identifier, parsed.local_id) == (kind, identifier, local)
    assert parsed.system == "urn:oid:1.2.250.1.71.4.2.1" and keys.PS_IDNAT_OID == "1.2.250.1.71.4.2.1"
    assert parsed.value == value[0] + value[1:].split("/")[0].upper() + (f"/{local}" if local else "")


def test_build_ps_idnat() -> None:
    assert ps_idnat(IdNatKind.RPPS, "10100997245") == "810100997245"
    assert ps_idnat("0", "2A1234567") == "02A1234567"
    assert ps_idnat(IdNatKind.FINESS, "750803454", "X9") == "3750803454/X9"
    with pytest.raises(Unprocessable, match="RPPS invalide"):
        ps_idnat(IdNatKind.RPPS, "10100997246")


@pytest.mark.parametrize(("value", "diagnostics"), [
    ("810100997246", 'RPPS invalide « 10100997246 » : clé de contrôle (Luhn) attendue 5, trouvée 6 (position 11) / '
                     'Invalid RPPS "10100997246": expected Luhn check digit 5, found 6 (position 11)'),
    ("7123", 'PS_IdNat invalide « 7123 » : type « 7 » (position 1) : attendu 0 (ADELI), 3 (FINESS), 4 (SIREN), '
             '5 (SIRET), 6 (cabinet RPPS) ou 8 (RPPS) / Invalid PS_IdNat "7123": type "7" (position 1): expected '
             '0 (ADELI), 3 (FINESS), 4 (SIREN), 5 (SIRET), 6 (RPPS practice) or 8 (RPPS)'),
    ("810100997245/x", 'PS_IdNat invalide « 810100997245/x » : pas d\'identifiant local (« /x ») pour le type 8 '
                       '(RPPS) / Invalid PS_IdNat "810100997245/x": no local identifier ("/x") for type 8 (RPPS)'),
    ("3750803454/", 'PS_IdNat invalide « 3750803454/ » : identifiant local vide après « / » / '
                    'Invalid PS_IdNat "3750803454/": empty local identifier after "/"'),
    ("", "PS_IdNat invalide : valeur vide / Invalid PS_IdNat: empty value"),
    ("  ", "PS_IdNat invalide : valeur vide / Invalid PS_IdNat: empty value"),
    ("1120456789", 'PS_IdNat invalide « 1120456789 » : type « 1 » (position 1) : attendu 0 (ADELI), 3 (FINESS), '
                   '4 (SIREN), 5 (SIRET), 6 (cabinet RPPS) ou 8 (RPPS) / Invalid PS_IdNat "1120456789": type "1" '
                   '(position 1): expected 0 (ADELI), 3 (FINESS), 4 (SIREN), 5 (SIRET), 6 (RPPS practice) or 8 '
                   '(RPPS)'),
])
def test_invalid_ps_idnat(value: str, diagnostics: str) -> None:
    assert message(parse_ps_idnat, value) == diagnostics


def test_structure_idnat() -> None:
    parsed = parse_structure_idnat("1750803454")
    assert (parsed.kind, parsed.identifier, parsed.value) == (StructureIdNatKind.FINESS, "750803454", "1750803454")
    assert parsed.system == "urn:oid:1.2.250.1.71.4.2.2"
    assert parse_structure_idnat("2732829320").kind is StructureIdNatKind.SIREN
    assert parse_structure_idnat("373282932000074").kind is StructureIdNatKind.SIRET
    assert parse_structure_idnat("4C1234").kind is StructureIdNatKind.RPPS_PRACTICE
    # The structure identifier used throughout the agency's examples carries a FINESS whose key does not verify.
    assert message(parse_structure_idnat, "1120456789").startswith(
        "FINESS invalide « 120456789 » : clé de contrôle (Luhn) attendue 5, trouvée 9 (position 9)")
    assert message(parse_structure_idnat, "9120456789").startswith(
        "identifiant national de structure invalide « 9120456789 » : type « 9 » (position 1)")
    assert "cabinet RPPS" in message(parse_structure_idnat, "4C-12")


# -- Professions ---------------------------------------------------------------------------------------------

def test_professions_table() -> None:
    table = professions()
    assert {code: p.label_fr for code, p in table.items()} == {
        "10": "Médecin", "21": "Pharmacien", "40": "Chirurgien-dentiste", "50": "Sage-femme", "60": "Infirmier",
        "70": "Masseur-kinésithérapeute", "80": "Pédicure-podologue"}
    assert all(p.label_en and p.label_en != p.label_fr for p in table.values())
    assert profession("10").label_en == "Physician" and profession(" 60 ").label_en == "Nurse"
    meta = professions_metadata()
    assert meta["oid"] == keys.TRE_G15_OID == "1.2.250.1.213.1.1.5.5"
    assert meta["version"] and "TRE_G15" in meta["source"]


def test_professions_data_file_is_beside_the_code() -> None:
    path = Path(keys.__file__).with_name("tre_g15_professions.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert [p["code"] for p in raw["professions"]] == list(professions())


def test_unknown_profession() -> None:
    with pytest.raises(Unprocessable) as caught:
        profession("99", expression="PractitionerRole.code[0].coding[0].code")
    issue = caught.value.issues[0]
    assert issue.code == "code-invalid" and issue.expression == ["PractitionerRole.code[0].coding[0].code"]
    assert issue.diagnostics.startswith("Code profession TRE_G15 inconnu « 99 » : attendu 10 Médecin, 21 Pharmacien")
    assert 'Unknown TRE_G15 profession code "99": expected 10 Physician, 21 Pharmacist' in issue.diagnostics
