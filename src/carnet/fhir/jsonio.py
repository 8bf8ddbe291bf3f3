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

from carnet.errors import Invalid, Issue, TooLarge, bilingual

# Deepest nesting of objects and arrays accepted. FHIR resources nest a dozen levels, the deepest
# examples of the specification seventeen; deeper, the storage (orjson writes at most 254 levels)
# and the exact parser (Python's recursion) would fail with an internal error.
MAX_DEPTH = 100
# Most values (objects, arrays, members: counted by their brackets and commas) in one body. Python
# holds a parsed value in some fifty to a hundred bytes: 48 MB of empty arrays would take 1.3 GB.
# Real FHIR JSON has a value per 58 bytes or so: 2 million is more than the largest body accepted.
MAX_VALUES = 2_000_000

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


def too_deep() -> Invalid:
    message = bilingual(f"le document est imbriqué sur plus de {MAX_DEPTH} niveaux",
                        f"the document is nested more than {MAX_DEPTH} levels deep")
    return Invalid(message, issues=[Issue("fatal", "too-costly", message)])


def check_depth(value: Any) -> None:
    """Refuse (Invalid) a parsed document nested deeper than :data:`MAX_DEPTH`."""
    _scan(value)


def loads(body: bytes | str) -> Any:
    """Parse a FHIR JSON body. Raises :class:`Invalid` with the position on bad JSON, and on a
    document nested deeper than :data:`MAX_DEPTH`."""
    if isinstance(body, str):
        body = body.encode()
    if len(body) > MAX_VALUES and body.count(b",") + body.count(b"[") + body.count(b"{") > MAX_VALUES:
        message = bilingual(f"le document compte plus de {MAX_VALUES} valeurs",
                            f"the document holds more than {MAX_VALUES} values")
        raise TooLarge(message, issues=[Issue("fatal", "too-costly", message)])
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson stops at 1024 levels
            raise too_deep() from None
        # else the exact parser below decides, and says where the problem is
    else:
        keys, floats = _scan(value)
        if body.count(b'":') == keys and (not floats or _floats_round_trip(body)):
            return value
    try:
        value = json.loads(body, parse_float=FhirDecimal, parse_int=_int,
                           object_pairs_hook=_reject_duplicates)
    except RecursionError:
        raise too_deep() from None
    except ValueError as exc:
        message = f"the body is not valid FHIR JSON: {exc}"
        raise Invalid(message, issues=[Issue("fatal", "structure", message)]) from None
    check_depth(value)
    return value


def _scan(value: Any) -> tuple[int, bool]:
    """(number of object keys, whether any number parsed as a float) of a parsed tree.

    The keys screen for duplicates, which orjson silently collapses: their count is compared with
    the '"key":' tokens of the text (a mismatch, also caused by such text inside strings, sends the
    body to the exact parser, which decides). Without floats no decimal can lose its precision, and
    the text need not be searched for them (a long base64 document made that search the cost of
    parsing)."""
    keys, floats = 0, False
    level, depth = [value], 0
    while level:  # one level of the tree at a time, so that the depth costs nothing per node
        depth += 1
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                keys += len(node)
                below.extend(node.values())
            elif isinstance(node, list):
                below.extend(node)
            elif isinstance(node, float):
                floats = True
        if below and depth >= MAX_DEPTH and any(isinstance(n, dict | list) for n in below):
            raise too_deep()
        level = below
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
