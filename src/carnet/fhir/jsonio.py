"""FHIR JSON in and out, keeping decimals exactly as written.

FHIR decimals carry their precision (``1.50`` is not ``1.5``), so a float round trip is not
enough. The fast path parses with orjson; when the body holds a number whose float form would
print differently, it is parsed again with ``Decimal`` for every float, and those are written back
verbatim through ``orjson.Fragment``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from carnet.errors import Invalid, Issue

# A JSON number with a fraction or an exponent (also matches inside strings: a false positive
# only sends the body down the exact path, which is correct too).
_FLOAT_TOKEN = re.compile(rb"(?<=[:\[,])\s*(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(?=[,\]}])")


def _floats_round_trip(body: bytes) -> bool:
    for match in _FLOAT_TOKEN.finditer(body):
        token = match.group(1)
        if b"." not in token and b"e" not in token and b"E" not in token:
            if len(token) > 18:  # beyond 64 bits orjson reads an integer as a float
                return False
            continue
        try:
            if orjson.dumps(float(token)) != token:
                return False
        except ValueError:
            return False
    return True


class FhirDecimal(Decimal):
    """A decimal that remembers the exact text it was written with."""

    text: str

    def __new__(cls, text: str) -> FhirDecimal:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _int(text: str) -> int | FhirDecimal:
    value = int(text)
    return value if -(2**63) <= value < 2**63 else FhirDecimal(text)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate property {key!r}")
        out[key] = value
    return out


def loads(body: bytes | str) -> Any:
    """Parse a FHIR JSON body. Raises :class:`Invalid` with the position on bad JSON."""
    if isinstance(body, str):
        body = body.encode()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # the exact parser below decides, and says where the problem is
    else:
        keys, floats = _scan(value)
        if body.count(b'":') == keys and (not floats or _floats_round_trip(body)):
            return value
    try:
        return json.loads(body, parse_float=FhirDecimal, parse_int=_int,
                          object_pairs_hook=_reject_duplicates)
    except ValueError as exc:
        message = f"the body is not valid FHIR JSON: {exc}"
        raise Invalid(message, issues=[Issue("fatal", "structure", message)]) from None


def _scan(value: Any) -> tuple[int, bool]:
    """(number of object keys, whether any number parsed as a float) of a parsed tree.

    The keys screen for duplicates, which orjson silently collapses: their count is compared with
    the '"key":' tokens of the text (a mismatch, also caused by such text inside strings, sends the
    body to the exact parser, which decides). Without floats no decimal can lose its precision, and
    the text need not be searched for them (a long base64 document made that search the cost of
    parsing)."""
    keys, floats = 0, False
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            keys += len(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float):
            floats = True
    return keys, floats


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            return None
        return orjson.Fragment(getattr(obj, "text", None) or str(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
