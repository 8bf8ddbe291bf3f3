#!/usr/bin/env python3
"""Fuzz harness of the matricule INS parser (``carnet.identity.nir``).

The input is read as UTF-8 (invalid bytes replaced) and parsed with the key checked and waived.
Properties, beyond "no unexpected exception":

* a refusal is an ``Unprocessable`` whose issues are bilingual and carry the caller's expression;
* the parser agrees with an independent reading of the layout of the module's docstring and of the
  key (97 - N mod 97, 2A read as 19 and 2B as 18): it accepts exactly what that reading accepts,
  with the key checked or not, and says whether the key is right;
* a parsed matricule is a round trip: its value and its formatted display parse to the same
  matricule, its fields are the characters they come from;
* ``check_key``, ``is_valid``, ``compute_key`` and ``make_matricule`` agree with it.

Run: ``.venv/bin/python bench/fuzz/run.py matricule`` (or this file with libFuzzer flags).
"""

from __future__ import annotations

import re

if __name__ == "__main__":
    from _fuzzing import instrumented

    instrumented("carnet.identity.nir")

from _fuzzing import check_error, fuzz, require

from carnet.errors import Unprocessable
from carnet.identity import nir

EXPRESSION = "Patient.identifier[0].value"
_SPACE = re.compile(r"\s+")
_OVERSEAS = {f"97{d}" for d in "12345678"} | {f"98{d}" for d in "45678"}


def oracle_key(first13: str) -> str:
    """97 - N mod 97, N the 13 characters read as a number with 2A as 19 and 2B as 18."""
    digits = first13[:5] + {"2A": "19", "2B": "18"}.get(first13[5:7], first13[5:7]) + first13[7:]
    return f"{97 - int(digits) % 97:02d}"


def oracle(text: str) -> tuple[str, bool, bool]:
    """(the value without white space, upper-cased; whether its layout is valid; whether its key is
    right), read from the table of ``carnet.identity.nir``'s docstring."""
    v = _SPACE.sub("", text).upper()
    shape = (len(v) == 15 and all(c in "0123456789" for c in v[:6] + v[7:])
             and (v[6] in "0123456789" or v[5:7] in ("2A", "2B")))
    if not shape:
        return v, False, False
    month = int(v[3:5])
    if v[5:7] in ("97", "98"):
        place = v[5:8] in _OVERSEAS and v[8:10] != "00"
    else:
        place = (v[5:7] in ("2A", "2B", "99") or 1 <= int(v[5:7]) <= 95) and v[7:10] != "000"
    layout = (v[0] in "1278" and (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99) and place
              and v[10:13] != "000")
    return v, layout, layout and oracle_key(v[:13]) == v[13:]


def _parse(text: str, verify_key: bool) -> nir.Matricule | None:
    try:
        return nir.parse_matricule(text, expression=EXPRESSION, verify_key=verify_key)
    except Unprocessable as exc:
        check_error(exc, (Unprocessable,), bilingual=True, expression=[EXPRESSION])
        return None


def check_text(text: str) -> None:
    v, layout, key_ok = oracle(text)
    checked = _parse(text, True)
    waived = _parse(text, False)
    require((checked is not None) == key_ok,
            f"{text!r}: parsed with the key checked: {checked is not None}, oracle says {key_ok}")
    require((waived is not None) == layout,
            f"{text!r}: parsed with the key waived: {waived is not None}, oracle layout says {layout}")
    require(nir.is_valid(text) == key_ok, f"{text!r}: is_valid disagrees with the oracle ({key_ok})")
    if checked is not None:
        require(checked == waived, f"{text!r}: key checked and waived give different matricules")
    if len(v) == 15 and all(c in "0123456789" for c in v[:6] + v[7:]) and (
            v[6].isdigit() or v[5:7] in ("2A", "2B")):
        require(nir.compute_key(v[:13]) == oracle_key(v[:13]), f"{text!r}: compute_key disagrees")
        require(nir.make_matricule(v[:13]) == v[:13] + oracle_key(v[:13]), f"{text!r}: make_matricule")
        require(nir.check_key(text) == (oracle_key(v[:13]) == v[13:]), f"{text!r}: check_key disagrees")
    else:
        require(isinstance(nir.check_key(text), bool), "check_key must answer a bool")
    if waived is None:
        return
    m = waived
    require(m.key_valid == key_ok, f"{text!r}: key_valid {m.key_valid}, oracle {key_ok}")
    overseas = v[5:7] in ("97", "98")
    require((m.value, m.sex, m.year, m.month, m.order, m.key)
            == (v, v[0], int(v[1:3]), int(v[3:5]), int(v[10:13]), v[13:]), f"{text!r}: fields")
    require((m.departement, m.commune) == ((v[5:8], v[8:10]) if overseas else (v[5:7], v[7:10])),
            f"{text!r}: place of birth fields")
    require(m.birthplace_code == v[5:10] and m.is_overseas == overseas, f"{text!r}: birthplace code")
    require(m.formatted.replace(" ", "") == v and str(m) == v, f"{text!r}: formatted display")
    for again in (m.value, m.formatted, m.formatted.lower()):
        require(nir.parse_matricule(again, verify_key=False) == m, f"{text!r}: no round trip via {again!r}")


def check(data: bytes) -> None:
    check_text(data.decode("utf-8", errors="replace"))


if __name__ == "__main__":
    fuzz(check)
