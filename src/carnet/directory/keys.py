"""National identifiers of health professionals and organisations, and their check keys.

=========  ===========  ===========================================================================
kind       length       rule
=========  ===========  ===========================================================================
RPPS       11 digits    the last digit is a Luhn check digit over the 11 digits
ADELI      9            département (two digits; 2A/2B Corsica; 9A-9F overseas) then 7 digits.
                        *Assumption*: no public text defines a check digit for ADELI and public
                        tooling that verifies ADELI numbers checks none, so only the format is
                        checked; enforcing a Luhn key would reject genuine numbers.
FINESS     9            département (01-95, 2A, 2B, 97 overseas, 98 Mayotte), 6 digits, then a Luhn
                        check digit over the 9 characters, the Corsican A and B counting as 1 and 2.
                        The Luhn rule and the A→1, B→2 reading were checked against published
                        establishment numbers (123 mainland and 5 Corsican ones all verify).
SIREN      9 digits     Luhn
SIRET      14 digits    its SIREN (positions 1-9) is a valid SIREN, and the 14 digits verify by Luhn;
                        La Poste (SIREN 356000000) is the exception: except for its head office
                        35600000000048, the sum of the 14 digits must be a multiple of 5.
=========  ===========  ===========================================================================

``PS_IdNat`` (OID 1.2.250.1.71.4.2.1), the national identifier of a person in health information
systems, is a one-character type followed by the identifier: ``8`` + RPPS, ``0`` + ADELI; for staff
identified by their organisation, ``3`` + FINESS, ``4`` + SIREN, ``5`` + SIRET or ``6`` + RPPS practice
identifier, usually followed by ``/`` and the organisation's own identifier for the person.
Organisations (OID 1.2.250.1.71.4.2.2) use ``1`` + FINESS, ``2`` + SIREN, ``3`` + SIRET, ``4`` + RPPS
practice identifier.

Bad values raise :class:`carnet.errors.Unprocessable` with a French / English message that names the
identifier kind and what is wrong, positions being 1-based in the value once spaces are removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

from carnet.errors import Issue, Unprocessable

PS_IDNAT_OID = "1.2.250.1.71.4.2.1"
STRUCTURE_IDNAT_OID = "1.2.250.1.71.4.2.2"
TRE_G15_OID = "1.2.250.1.213.1.1.5.5"

LA_POSTE_SIREN = "356000000"
LA_POSTE_HEAD_OFFICE_SIRET = "35600000000048"

_PROFESSIONS_FILE = Path(__file__).with_name("tre_g15_professions.json")


# -- Messages --------------------------------------------------------------------------------------

def _fail(kind: str, value: str, fr: str, en: str, expression: str | None) -> NoReturn:
    if value:
        text = f"{kind} invalide « {value} » : {fr} / Invalid {kind} \"{value}\": {en}"
    else:
        text = f"{kind} invalide : {fr} / Invalid {kind}: {en}"
    raise Unprocessable(text, issues=[Issue("error", "value", text, [expression] if expression else [])])


def _span(first: int, last: int) -> tuple[str, str]:
    if first == last:
        return f"position {first}", f"position {first}"
    return f"positions {first}–{last}", f"positions {first}-{last}"


def _compact(value: str) -> str:
    return "".join(value.split()).upper()


def _check_length(kind: str, value: str, length: int, expression: str | None) -> None:
    if len(value) != length:
        n = len(value)
        _fail(kind, value, f"{n} caractère{'s' if n > 1 else ''} au lieu de {length}",
              f"{n} character{'s' if n != 1 else ''} instead of {length}", expression)


def _check_digits(kind: str, value: str, expression: str | None, start: int = 1) -> None:
    for i, c in enumerate(value[start - 1:], start=start):
        if not (c.isascii() and c.isdigit()):
            _fail(kind, value, f"caractère « {c} » non numérique en position {i}",
                  f'non-digit character "{c}" at position {i}', expression)


# -- Luhn --------------------------------------------------------------------------------------------

def luhn_checksum(digits: str) -> int:
    """The Luhn sum mod 10 of a digit string (0 for a valid number): from the right, every second
    digit is doubled, and 9 taken off when the double exceeds 9."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10


def luhn_is_valid(digits: str) -> bool:
    return digits.isascii() and digits.isdigit() and luhn_checksum(digits) == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that, appended to ``payload``, makes a valid Luhn number."""
    return str((10 - luhn_checksum(payload + "0")) % 10)


def _check_luhn(kind: str, value: str, digits: str, expression: str | None) -> None:
    expected = luhn_check_digit(digits[:-1])
    if expected != digits[-1]:
        pos = len(value)
        _fail(kind, value,
              f"clé de contrôle (Luhn) attendue {expected}, trouvée {value[-1]} (position {pos})",
              f"expected Luhn check digit {expected}, found {value[-1]} (position {pos})", expression)


# -- RPPS ----------------------------------------------------------------------------------------------

def validate_rpps(value: str, *, expression: str | None = None) -> str:
    """The compact RPPS number, or Unprocessable."""
    v = _compact(value)
    _check_length("RPPS", v, 11, expression)
    _check_digits("RPPS", v, expression)
    _check_luhn("RPPS", v, v, expression)
    return v


def make_rpps(first10: str) -> str:
    """A valid RPPS number from its first 10 digits (demo data)."""
    body = _compact(first10)
    if len(body) != 10 or not (body.isascii() and body.isdigit()):
        raise ValueError(f"make_rpps expects 10 digits, got {first10!r}")
    return body + luhn_check_digit(body)


# -- ADELI -----------------------------------------------------------------------------------------------

ADELI_OVERSEAS = MappingProxyType({"9A": "971", "9B": "972", "9C": "973", "9D": "974", "9E": "975",
                                   "9F": "976"})


def validate_adeli(value: str, *, expression: str | None = None) -> str:
    """The compact ADELI number (format only, see the module documentation), or Unprocessable."""
    v = _compact(value)
    _check_length("ADELI", v, 9, expression)
    dept = v[:2]
    if not ((dept.isascii() and dept.isdigit() and dept != "00") or dept in ("2A", "2B")
            or dept in ADELI_OVERSEAS):
        _fail("ADELI", v, f"département « {dept} » (positions 1–2) : attendu 01–99, 2A, 2B ou 9A–9F",
              f'département "{dept}" (positions 1-2): expected 01-99, 2A, 2B or 9A-9F', expression)
    _check_digits("ADELI", v, expression, start=3)
    return v


def adeli_departement(value: str) -> str:
    """The département of an ADELI number, overseas codes spelled out (9A → 971)."""
    dept = validate_adeli(value)[:2]
    return ADELI_OVERSEAS.get(dept, dept)


# -- FINESS ------------------------------------------------------------------------------------------------

def _finess_digits(v: str) -> str:
    return v[0] + {"A": "1", "B": "2"}.get(v[1], v[1]) + v[2:]


def validate_finess(value: str, *, expression: str | None = None) -> str:
    """The compact FINESS number, or Unprocessable."""
    v = _compact(value)
    _check_length("FINESS", v, 9, expression)
    dept = v[:2]
    if not ((dept.isascii() and dept.isdigit() and 1 <= int(dept) <= 95) or dept in ("2A", "2B", "97", "98")):
        _fail("FINESS", v, f"département « {dept} » (positions 1–2) : attendu 01–95, 2A, 2B, 97 ou 98",
              f'département "{dept}" (positions 1-2): expected 01-95, 2A, 2B, 97 or 98', expression)
    _check_digits("FINESS", v, expression, start=3)
    _check_luhn("FINESS", v, _finess_digits(v), expression)
    return v


def make_finess(first8: str) -> str:
    """A valid FINESS number from its first 8 characters (demo data); 2A/2B allowed."""
    body = _compact(first8)
    corsica = body[:2] in ("2A", "2B")
    if len(body) != 8 or not (body[:1] + body[2:]).isdigit() or not (body[1:2].isdigit() or corsica):
        raise ValueError(f"make_finess expects 8 characters (digits, or 2A/2B first), got {first8!r}")
    return body + luhn_check_digit(_finess_digits(body))


def finess_departement(value: str) -> str:
    return validate_finess(value)[:2]


# -- SIREN, SIRET ------------------------------------------------------------------------------------------

def validate_siren(value: str, *, expression: str | None = None) -> str:
    v = _compact(value)
    _check_length("SIREN", v, 9, expression)
    _check_digits("SIREN", v, expression)
    _check_luhn("SIREN", v, v, expression)
    return v


def validate_siret(value: str, *, expression: str | None = None) -> str:
    v = _compact(value)
    _check_length("SIRET", v, 14, expression)
    _check_digits("SIRET", v, expression)
    siren = v[:9]
    if luhn_checksum(siren):
        expected = luhn_check_digit(siren[:-1])
        _fail("SIRET", v, f"le SIREN (positions 1–9) a une clé de contrôle (Luhn) invalide : attendue "
              f"{expected}, trouvée {siren[-1]} (position 9)",
              f"its SIREN (positions 1-9) has an invalid Luhn check digit: expected {expected}, found "
              f"{siren[-1]} (position 9)", expression)
    if siren == LA_POSTE_SIREN and v != LA_POSTE_HEAD_OFFICE_SIRET:
        total = sum(int(c) for c in v)
        if total % 5:
            _fail("SIRET", v, f"règle La Poste : la somme des chiffres ({total}) doit être un multiple de 5",
                  f"La Poste rule: the sum of the digits ({total}) must be a multiple of 5", expression)
        return v
    _check_luhn("SIRET", v, v, expression)
    return v


# -- PS_IdNat and structure identifiers ----------------------------------------------------------------------

class IdNatKind(StrEnum):
    """Type prefix of a person's PS_IdNat."""

    ADELI = "0"
    FINESS = "3"
    SIREN = "4"
    SIRET = "5"
    RPPS_PRACTICE = "6"
    RPPS = "8"


class StructureIdNatKind(StrEnum):
    """Type prefix of an organisation's national identifier."""

    FINESS = "1"
    SIREN = "2"
    SIRET = "3"
    RPPS_PRACTICE = "4"


def _validate_practice_id(value: str, *, expression: str | None = None) -> str:
    v = _compact(value)
    if not v or not v.isascii() or not v.isalnum():
        _fail("identifiant de cabinet RPPS", v, "attendu des chiffres ou des lettres",
              "expected digits or letters", expression)
    return v


_VALIDATORS: Mapping[str, Callable[..., str]] = MappingProxyType({
    "ADELI": validate_adeli, "FINESS": validate_finess, "SIREN": validate_siren, "SIRET": validate_siret,
    "RPPS_PRACTICE": _validate_practice_id, "RPPS": validate_rpps,
})


@dataclass(frozen=True)
class PsIdNat:
    kind: IdNatKind
    identifier: str  # the RPPS, ADELI, FINESS... without the type prefix
    local_id: str | None = None  # the organisation's own identifier for the person (types 3-6)

    @property
    def value(self) -> str:
        return self.kind.value + self.identifier + (f"/{self.local_id}" if self.local_id else "")

    @property
    def system(self) -> str:
        return f"urn:oid:{PS_IDNAT_OID}"


@dataclass(frozen=True)
class StructureIdNat:
    kind: StructureIdNatKind
    identifier: str

    @property
    def value(self) -> str:
        return self.kind.value + self.identifier

    @property
    def system(self) -> str:
        return f"urn:oid:{STRUCTURE_IDNAT_OID}"


def parse_ps_idnat(value: str, *, expression: str | None = None) -> PsIdNat:
    """Split and check a person's PS_IdNat; the local identifier after "/" keeps its case."""
    v = "".join(value.split())
    if not v:
        _fail("PS_IdNat", v, "valeur vide", "empty value", expression)
    try:
        kind = IdNatKind(v[0])
    except ValueError:
        _fail("PS_IdNat", v, f"type « {v[0]} » (position 1) : attendu 0 (ADELI), 3 (FINESS), 4 (SIREN), "
              "5 (SIRET), 6 (cabinet RPPS) ou 8 (RPPS)",
              f'type "{v[0]}" (position 1): expected 0 (ADELI), 3 (FINESS), 4 (SIREN), 5 (SIRET), '
              "6 (RPPS practice) or 8 (RPPS)", expression)
    body, sep, local = v[1:].partition("/")
    v = v[0] + body.upper() + sep + local
    if sep and kind in (IdNatKind.ADELI, IdNatKind.RPPS):
        _fail("PS_IdNat", v,
              f"pas d'identifiant local (« /{local} ») pour le type {kind.value} ({kind.name})",
              f'no local identifier ("/{local}") for type {kind.value} ({kind.name})', expression)
    if sep and not local:
        _fail("PS_IdNat", v, "identifiant local vide après « / »", 'empty local identifier after "/"',
              expression)
    identifier = _VALIDATORS[kind.name](body, expression=expression)
    return PsIdNat(kind=kind, identifier=identifier, local_id=local or None)


def ps_idnat(kind: IdNatKind | str, identifier: str, local_id: str | None = None) -> str:
    """Build a PS_IdNat from its parts, checking the identifier: ``ps_idnat("8", rpps)``."""
    k = IdNatKind(kind)
    return parse_ps_idnat(k.value + identifier + (f"/{local_id}" if local_id else "")).value


def parse_structure_idnat(value: str, *, expression: str | None = None) -> StructureIdNat:
    v = _compact(value)
    if not v:
        _fail("identifiant national de structure", v, "valeur vide", "empty value", expression)
    try:
        kind = StructureIdNatKind(v[0])
    except ValueError:
        _fail("identifiant national de structure", v, f"type « {v[0]} » (position 1) : attendu 1 (FINESS), "
              "2 (SIREN), 3 (SIRET) ou 4 (cabinet RPPS)",
              f'type "{v[0]}" (position 1): expected 1 (FINESS), 2 (SIREN), 3 (SIRET) or 4 (RPPS practice)',
              expression)
    return StructureIdNat(kind=kind, identifier=_VALIDATORS[kind.name](v[1:], expression=expression))


# -- Professions (TRE_G15) ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Profession:
    code: str
    label_fr: str
    label_en: str


@cache
def _profession_data() -> tuple[Mapping[str, Profession], Mapping[str, str]]:
    raw = json.loads(_PROFESSIONS_FILE.read_text(encoding="utf-8"))
    table = {p["code"]: Profession(p["code"], p["label_fr"], p["label_en"]) for p in raw["professions"]}
    meta = {k: str(raw[k]) for k in ("terminology", "oid", "fhir_system", "version", "source")}
    return MappingProxyType(table), MappingProxyType(meta)


def professions() -> Mapping[str, Profession]:
    """The TRE_G15 profession codes this server knows, by code."""
    return _profession_data()[0]


def professions_metadata() -> Mapping[str, str]:
    """Terminology name, OID, FHIR system, version and source of the profession table."""
    return _profession_data()[1]


def profession(code: str, *, expression: str | None = None) -> Profession:
    table = professions()
    found = table.get(code.strip())
    if found is None:
        known = ", ".join(f"{p.code} {p.label_fr}" for p in table.values())
        known_en = ", ".join(f"{p.code} {p.label_en}" for p in table.values())
        text = (f"Code profession TRE_G15 inconnu « {code} » : attendu {known} / "
                f'Unknown TRE_G15 profession code "{code}": expected {known_en}')
        raise Unprocessable(text, issues=[Issue("error", "code-invalid", text,
                                                [expression] if expression else [])])
    return found
