"""Search parameters: the R4 definitions, compiled into fast value extractors.

The definitions (``definitions/search_parameters.json``) come from the spec's own
SearchParameter resources; ``definitions/search_parameters_ihe.json`` adds the few that IHE profiles
define for their transactions (MHD's ``creation``, ``designationType``, ``sourceId``), each with its
canonical URL and source. Their FHIRPath expressions use a small subset of the language
(paths, ``|``, ``as``/``ofType``, ``where(resolve() is T)``, ``where(field='value')``,
``extension('url')``); that subset is compiled here into plain Python closures, which cost a few
microseconds per resource. Anything else falls back to fhirpathpy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

DEFINITIONS = Path(__file__).parent / "definitions"

Extractor = Callable[[dict[str, Any]], list[Any]]


@dataclass(frozen=True)
class SearchParam:
    resource_type: str
    code: str
    type: str  # string | token | date | reference | number | quantity | uri
    expression: str
    targets: tuple[str, ...] = ()
    extract: Extractor = field(compare=False, repr=False, default=lambda _r: [])
    definition: str | None = None  # canonical URL, for parameters not defined by FHIR R4 itself


@cache
def resource_types() -> frozenset[str]:
    return frozenset(json.loads((DEFINITIONS / "resource_types.json").read_text()))


# Search parameters defined outside FHIR R4 (by IHE profiles), merged with the spec's own.
EXTRA_DEFINITIONS = ("search_parameters_ihe.json",)


@cache
def _raw_definitions() -> dict[str, dict[str, dict[str, Any]]]:
    data: dict[str, dict[str, dict[str, Any]]] = json.loads(
        (DEFINITIONS / "search_parameters.json").read_text())
    for name in EXTRA_DEFINITIONS:
        extra: dict[str, dict[str, dict[str, Any]]] = json.loads(
            (DEFINITIONS / name).read_text())["parameters"]
        for rtype, params in extra.items():
            if rtype not in data:
                raise ValueError(f"{name}: unknown resource type {rtype}")
            clash = data[rtype].keys() & params.keys()
            if clash:  # an extra definition never silently replaces the spec's own
                raise ValueError(f"{name}: {rtype} already defines {', '.join(sorted(clash))}")
            data[rtype] = {**data[rtype], **params}
    return data


@cache
def params_for(resource_type: str) -> dict[str, SearchParam]:
    """Every indexed search parameter of a resource type, by code (``_id``/``_lastUpdated``
    are answered from the resource table and are not in this map)."""
    out = {}
    for code, d in _raw_definitions().get(resource_type, {}).items():
        if code in ("_id", "_lastUpdated"):
            continue
        out[code] = SearchParam(resource_type, code, d["type"], d["expression"],
                                tuple(d.get("target", ())), compile_expression(d["expression"]),
                                d.get("url"))
    return out


# --------------------------------------------------------------------------------------------
# Expression compiler

_AS = re.compile(r"^\((.+) as (\w+)\)(?:\.(.+))?$")
_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")
_WHERE_RESOLVE = re.compile(r"^where\(resolve\(\) is (\w+)\)$")
_WHERE_EQ = re.compile(r"^where\((\w+) ?= ?'([^']*)'\)$")
_AS_FN = re.compile(r"^(?:as|ofType)\((\w+)\)$")
_EXTENSION = re.compile(r"^extension\('([^']+)'\)$")
_NAME = re.compile(r"^[a-zA-Z]\w*$")


def _split(expr: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in expr:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def _deceased(resource: dict[str, Any]) -> list[Any]:
    """``Patient.deceased.exists() and Patient.deceased != false`` (a boolean token)."""
    if resource.get("resourceType") != "Patient":
        return []
    flag = resource.get("deceasedBoolean")
    return [flag is True or (flag is None and "deceasedDateTime" in resource)]


SPECIAL: dict[str, Extractor] = {
    "Patient.deceased.exists() and Patient.deceased != false": _deceased,
}


def compile_expression(expr: str) -> Extractor:
    if expr in SPECIAL:
        return SPECIAL[expr]
    parts = _split(expr, "|")
    try:
        compiled = [_compile_path(p) for p in parts]
    except ValueError:
        return _fhirpath_fallback(expr)

    def run(resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for fn in compiled:
            out.extend(fn(resource))
        return out

    return run


def _fhirpath_fallback(expr: str) -> Extractor:
    import fhirpathpy
    from fhirpathpy.models import models

    fn = fhirpathpy.compile(expr, models["r4"])

    def run(resource: dict[str, Any]) -> list[Any]:
        try:
            return list(fn(resource, {}))
        except Exception:  # a parameter that cannot be evaluated on this resource indexes nothing
            return []

    return run


Step = Callable[[list[Any]], list[Any]]


def _compile_path(path: str) -> Callable[[dict[str, Any]], list[Any]]:
    as_type = None
    tail: list[str] = []
    m = _AS.match(path)
    if m:
        path, as_type = m.group(1), m.group(2)
        tail = _split(m.group(3), ".") if m.group(3) else []
    steps = _split(path, ".")
    if not steps or not _NAME.match(steps[0]):
        raise ValueError(path)
    root_type = steps[0]
    ops: list[Step] = []
    rest = steps[1:]
    last = len(rest) - 1  # the step an enclosing "(... as T)" applies to
    rest += tail
    i = 0
    while i < len(rest):
        step = rest[i]
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        if _NAME.match(step):
            m_as = _AS_FN.match(nxt) if nxt else None
            if m_as:
                ops.append(_choice(step, m_as.group(1)))
                i += 2
                continue
            if as_type is not None and i == last:
                ops.append(_choice(step, as_type))
            else:
                ops.append(_child(step))
        elif m := _INDEXED.match(step):
            ops.append(_child(m.group(1)))
            ops.append(_nth(int(m.group(2))))
        elif m := _WHERE_RESOLVE.match(step):
            ops.append(_resolves_to(m.group(1)))
        elif m := _WHERE_EQ.match(step):
            ops.append(_field_equals(m.group(1), m.group(2)))
        elif m := _EXTENSION.match(step):
            ops.append(_extension(m.group(1)))
        else:
            raise ValueError(step)
        i += 1

    def run(resource: dict[str, Any]) -> list[Any]:
        if resource.get("resourceType") != root_type:
            return []
        values: list[Any] = [resource]
        for op in ops:
            values = op(values)
            if not values:
                break
        return values

    return run


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        out.extend(v for v in value if v is not None)
    elif value is not None:
        out.append(value)


def _child(name: str) -> Step:
    def step(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for v in values:
            if not isinstance(v, dict):
                continue
            if name in v:
                _flatten(v[name], out)
            else:  # a choice element named without its type: value -> valueQuantity, ...
                for key, item in v.items():
                    if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
                        _flatten(item, out)
        return out

    return step


def _nth(n: int) -> Step:
    def step(values: list[Any]) -> list[Any]:
        return values[n:n + 1]

    return step


def _choice(name: str, type_name: str) -> Step:
    key = name + type_name[0].upper() + type_name[1:]

    def step(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for v in values:
            if isinstance(v, dict) and key in v:
                _flatten(v[key], out)
        return out

    return step


def _resolves_to(type_name: str) -> Step:
    prefix = type_name + "/"
    marker = "/" + type_name + "/"

    def step(values: list[Any]) -> list[Any]:
        out = []
        for v in values:
            ref = v.get("reference") if isinstance(v, dict) else None
            if isinstance(ref, str) and (ref.startswith(prefix) or marker in ref):
                out.append(v)
        return out

    return step


def _field_equals(name: str, expected: str) -> Step:
    def step(values: list[Any]) -> list[Any]:
        return [v for v in values if isinstance(v, dict) and v.get(name) == expected]

    return step


def _extension(url: str) -> Step:
    def step(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for v in values:
            if isinstance(v, dict):
                out.extend(e for e in v.get("extension", ()) if isinstance(e, dict) and e.get("url") == url)
        return out

    return step


def extension_values(values: Iterable[Any]) -> list[Any]:
    """An Extension found by ``extension('url')`` indexes its ``value[x]``."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, dict) and "url" in v and any(k.startswith("value") for k in v):
            out.extend(item for k, item in v.items() if k.startswith("value"))
        else:
            out.append(v)
    return out
