"""Turn a resource into search-index rows, one list per index table."""

from __future__ import annotations

from typing import Any

from carnet.fhir.searchparams import extension_values, params_for
from carnet.fhir.values import MAX_US, MIN_US, date_range, normalise, number_range

Rows = dict[str, list[dict[str, Any]]]

_CONTACT_KINDS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})

_STRING_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district",
                 "state", "postalCode", "country")


def patient_of(resource: dict[str, Any], rows: Rows) -> str | None:
    """The patient whose compartment holds this resource (used to distribute data by patient)."""
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    for row in rows.get("reference", ()):
        if row["target_type"] == "Patient" and row["param"] in ("patient", "subject", "beneficiary"):
            return str(row["target_id"])
    return None


PARAM_MAX = 64  # the length of the index tables' ``param`` column


def contained_param(ref_param: str, contained_type: str, code: str) -> str:
    """The ``param`` of the index rows a container holds for the resources it contains: a chain
    ``author.given`` through ``author: #in-author`` (a contained Practitioner) reads the
    container's rows ``author:Practitioner.given``. No search parameter code has ``:`` or ``.``."""
    return f"{ref_param}:{contained_type}.{code}"


# Pairs of string parameters indexed together (rows ``a+b`` holding "<a value>\x1f<b value>"), so
# that a search on both — a directory's ``family=martin&given=jean`` — scans one index range of
# the first and filters the second inside the index, instead of checking each of the thousands of
# Martins one by one. The driver these rows give is a candidate set: every criterion is still
# checked on the candidates, so cutting long values (PAIR_PART) only ever widens it.
STRING_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "Practitioner": (("family", "given"), ("family", "name")),
}
PAIR_SEPARATOR = "\x1f"
PAIR_PART = 126  # 126 + 1 + 126 < 255, the length of idx_string.value


def pair_param(first: str, second: str) -> str:
    return f"{first}+{second}"


def _pair_rows(rows: Rows, rtype: str, rid: str) -> None:
    strings = rows.get("string")
    if not strings:
        return
    by_param: dict[str, list[str]] = {}
    for row in strings:
        by_param.setdefault(row["param"], []).append(row["value"][:PAIR_PART])
    for first, second in STRING_PAIRS[rtype]:
        values = {f"{a}{PAIR_SEPARATOR}{b}"
                  for a in by_param.get(first, ()) for b in by_param.get(second, ())}
        strings.extend({"value": v, "exact": "", "res_type": rtype, "res_id": rid,
                        "param": pair_param(first, second)} for v in sorted(values))


def index_rows(resource: dict[str, Any]) -> Rows:
    rtype = resource["resourceType"]
    rid = resource["id"]
    rows: Rows = {}
    params = params_for(rtype)
    references: list[tuple[str, list[Any]]] = []
    for param in params.values():
        values = param.extract(resource)
        if values:
            _add_rows(rows, rtype, rid, param.code, param.type, values)
            if param.type == "reference":
                references.append((param.code, values))
    if resource.get("contained"):
        _contained_rows(resource, references, rows, {p.type for p in params.values()})
    if rtype in STRING_PAIRS:
        _pair_rows(rows, rtype, rid)
    return rows


def _add_rows(rows: Rows, rtype: str, rid: str, code: str, ptype: str, values: list[Any]) -> None:
    if any(isinstance(v, dict) and "url" in v for v in values):
        values = extension_values(values)
    maker = _MAKERS[ptype]
    out = rows.setdefault(ptype, [])
    seen: set[tuple[Any, ...]] = set()
    for value in values:
        for row in maker(value):
            key = tuple(row.values())
            if key in seen:
                continue
            seen.add(key)
            row["res_type"] = rtype
            row["res_id"] = rid
            row["param"] = code
            out.append(row)


def _contained_rows(resource: dict[str, Any], references: list[tuple[str, list[Any]]], rows: Rows,
                    kinds: set[str]) -> None:
    """Index, under the container, the resources it contains that one of its reference parameters
    points to (``"reference": "#id"``), so that chained searches are evaluated inside contained
    resources as FHIR requires: MHD's authors (``author.given``) are usually contained Practitioners.
    Only the kinds of index the container's type has are written: they are the ones the store
    clears and rewrites for it."""
    contained = {c.get("id"): c for c in resource.get("contained") or ()
                 if isinstance(c, dict) and isinstance(c.get("id"), str)
                 and isinstance(c.get("resourceType"), str)}
    if not contained:
        return
    rtype, rid = resource["resourceType"], resource["id"]
    done: set[tuple[str, str]] = set()
    for ref_code, values in references:
        for value in values:
            ref = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(ref, str) or not ref.startswith("#") or (ref_code, ref) in done:
                continue
            done.add((ref_code, ref))
            inner = contained.get(ref[1:])
            if inner is None:
                continue
            ctype = inner["resourceType"]
            for param in params_for(ctype).values():
                name = contained_param(ref_code, ctype, param.code)
                if param.code.startswith("_") or param.type not in kinds or len(name) > PARAM_MAX:
                    continue
                found = param.extract(inner)
                if found:
                    _add_rows(rows, rtype, rid, name, param.type, found)


def _strings(value: Any) -> list[dict[str, Any]]:
    texts: list[str] = []
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        for part in _STRING_PARTS:
            item = value.get(part)
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, list):
                texts.extend(s for s in item if isinstance(s, str))
    return [{"value": normalise(t), "exact": t[:1024]} for t in texts if t]


def _token(system: Any, code: Any, text: Any = None, **extra: Any) -> dict[str, Any]:
    return {"system": system if isinstance(system, str) else None,
            "code": str(code)[:255] if code is not None else None,
            "text": normalise(text) if isinstance(text, str) and text else None,
            "type_system": extra.get("type_system"), "type_code": extra.get("type_code")}


def _tokens(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, bool):
        return [_token(None, "true" if value else "false")]
    if isinstance(value, str):
        return [_token(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        codings = value.get("coding") or []
        rows = [_token(c.get("system"), c.get("code"), c.get("display") or value.get("text"))
                for c in codings if isinstance(c, dict) and (c.get("code") or c.get("system"))]
        if not rows and isinstance(value.get("text"), str):
            rows.append(_token(None, None, value["text"]))
        return rows
    if "code" in value and "value" not in value:  # Coding
        return [_token(value.get("system"), value.get("code"), value.get("display"))]
    if "value" in value:  # Identifier or ContactPoint
        extra: dict[str, Any] = {}
        id_type = value.get("type")
        if isinstance(id_type, dict):
            for c in id_type.get("coding") or []:
                if isinstance(c, dict):
                    extra = {"type_system": c.get("system"), "type_code": c.get("code")}
                    break
        system = value.get("system")
        if system in _CONTACT_KINDS:
            system = None  # ContactPoint.system is a kind of contact, not a namespace
        return [_token(system, value.get("value"), None, **extra)]
    return []


def _dates(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        rng = date_range(value)
        return [{"low": rng[0], "high": rng[1]}] if rng else []
    if isinstance(value, dict):
        if "start" in value or "end" in value:  # Period: an open end is unbounded
            lo = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            hi = date_range(value["end"]) if isinstance(value.get("end"), str) else None
            return [{"low": lo[0] if lo else MIN_US, "high": hi[1] if hi else MAX_US}]
        if "event" in value:  # Timing
            return [r for e in value.get("event") or [] for r in _dates(e)]
    return []


def _numbers(value: Any) -> list[dict[str, Any]]:
    rng = number_range(value)
    return [{"value": rng[0], "low": rng[1], "high": rng[2]}] if rng else []


def _quantities(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict) or "value" not in value:
        return []
    rng = number_range(value["value"])
    if not rng:
        return []
    return [{"value": rng[0], "low": rng[1], "high": rng[2], "system": value.get("system"),
             "code": value.get("code"), "unit": value.get("unit")}]


def split_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """(type, id, absolute url) of a reference string; relative ``Type/id[/_history/v]``."""
    if ref.startswith("#"):
        return None, None, None
    if "://" in ref or ref.startswith("urn:"):
        parts = ref.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-2][:1].isupper() and "://" in ref:
            return parts[-2], parts[-1], ref
        return None, None, ref
    parts = ref.split("/")
    if len(parts) >= 2 and parts[0][:1].isupper():
        return parts[0], parts[1], None
    return None, None, ref


def _references(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):  # canonical
        return [{"target_type": None, "target_id": None, "url": value[:1024],
                 "id_system": None, "id_value": None}]
    if not isinstance(value, dict):
        return []
    rows = []
    ref = value.get("reference")
    if isinstance(ref, str):
        rtype, rid, url = split_reference(ref)
        if rtype or url:
            rows.append({"target_type": rtype, "target_id": rid, "url": url[:1024] if url else None,
                         "id_system": None, "id_value": None})
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        rows.append({"target_type": value.get("type"), "target_id": None, "url": None,
                     "id_system": ident.get("system"), "id_value": str(ident["value"])[:255]})
    return rows


def _uris(value: Any) -> list[dict[str, Any]]:
    return [{"value": value[:1024]}] if isinstance(value, str) else []


_MAKERS = {
    "string": _strings,
    "token": _tokens,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "reference": _references,
    "uri": _uris,
}
