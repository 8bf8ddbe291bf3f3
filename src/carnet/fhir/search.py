"""FHIR search: parse the query string, compile it into one SQL statement over the index tables.

Every parameter becomes an ``EXISTS`` over its index table, correlated on the resource, so that
each clause is an index lookup; repeated parameters are ANDed, comma-separated values ORed.
Paging is by offset within a snapshot: the first page fixes an instant, and later pages ignore
resources created after it, so links stay correct while others insert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    false,
    func,
    intersect,
    literal,
    not_,
    or_,
    select,
    union_all,
)

from carnet.db.tables import INDEX_TABLES, idx_reference, idx_string, resources
from carnet.errors import Invalid, NotSupported, TooLarge, bilingual
from carnet.fhir.indexer import PAIR_PART, PAIR_SEPARATOR, STRING_PAIRS, contained_param, pair_param
from carnet.fhir.searchparams import SearchParam, params_for, resource_types
from carnet.fhir.values import date_range, normalise, number_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = {"_count", "_offset", "_snapshot", "_sort", "_summary",
                 "_elements", "_total", "_format", "_pretty", "_contained", "_containedType"}
_MODIFIERS = {
    "string": {"", "exact", "contains", "missing"},
    "token": {"", "not", "text", "of-type", "missing"},
    "date": {"", "missing"},
    "number": {"", "missing"},
    "quantity": {"", "missing"},
    "reference": {"", "identifier", "missing"},  # plus a resource type, checked separately
    "uri": {"", "below", "above", "missing"},
}


@dataclass
class Clause:
    param: str
    modifier: str
    values: list[str]
    chain: list[tuple[str, str | None]] = field(default_factory=list)  # [(ref param, target type)]


@dataclass
class Include:
    source_type: str
    param: str
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass
class SearchRequest:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    snapshot: int | None = None
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] = field(default_factory=list)
    total: str | None = None
    driver: int | None = None  # the clause that drives the search, when chosen by probing
    driver_rows: int | None = None  # how many index rows the probes counted for it (capped)


# The caller's read predicate for the resources a search reaches through a reference (a chain's
# targets, a reference value's target), set around the compilation of one request's statements:
# (target type, alias of ``resources``) -> predicate on the alias, or None when nothing is hidden.
TargetFilter = Callable[[str, Any], Any]
_TARGET_FILTER: ContextVar[TargetFilter | None] = ContextVar("carnet_search_target_filter", default=None)
# targets that can be hidden from a caller who reads the resource pointing at them (masked
# documents, consents, content of no record): a reference to one matches only when it is visible
GUARDED_TARGETS = frozenset({"DocumentReference", "Binary", "Consent", "Bundle"})


@contextmanager
def target_filter(fn: TargetFilter | None) -> Iterator[None]:
    token = _TARGET_FILTER.set(fn)
    try:
        yield
    finally:
        _TARGET_FILTER.reset(token)


def _target_visible(rtype: str, id_col: Any) -> ColumnElement[bool] | None:
    """``id_col`` names a ``rtype`` the caller may read (None: no filter for this caller)."""
    fn = _TARGET_FILTER.get()
    if fn is None:
        return None
    alias = resources.alias(f"target_{rtype.lower()}")
    pred = fn(rtype, alias)
    if pred is None:
        return None
    return exists(select(alias.c.res_id).where(alias.c.res_type == rtype, alias.c.res_id == id_col, pred))


def integer_param(name: str, value: str) -> int:
    """A whole-number parameter (``_count``, ``_offset``...): 0 to 2^63 - 1, else Invalid (400)."""
    try:
        out = int(value)
    except ValueError:
        out = -1
    if not 0 <= out < 2**63:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise Invalid(bilingual(f"{name} doit être un entier positif ou nul, pas « {shown} »",
                                f"{name} must be a whole number, not '{shown}'"), expression=[name])
    return out


def parse(resource_type: str, query: list[tuple[str, str]], *, default_count: int = 20,
          max_count: int = 1000, max_terms: int | None = None) -> SearchRequest:
    """The search a query asks for. ``max_terms`` bounds its criteria (:func:`check_terms`)."""
    req = _parse(resource_type, query, default_count, max_count)
    if max_terms is not None:
        check_terms(req, max_terms, max_count)
    return req


def check_terms(req: SearchRequest, max_terms: int, max_ids: int) -> None:
    """Refuse (413) a search with more criteria than ``max_terms``: the values of its parameters,
    its _sort keys and its includes. Each costs SQL (SQLite refuses an expression deeper than a
    thousand) and work; ``_id`` values, a plain list of keys, count apart, up to ``max_ids``."""
    ids = sum(len(c.values) for c in req.clauses if c.param == "_id" and not c.chain)
    terms = (sum(len(c.values) for c in req.clauses if c.param != "_id" or c.chain)
             + len(req.sort) + len(req.includes))
    if terms > max_terms:
        raise TooLarge(bilingual(f"la recherche compte {terms} critères (valeurs, tris, inclusions) ; "
                                 f"au plus {max_terms} sont acceptés",
                                 f"the search has {terms} criteria (values, sort keys, includes); "
                                 f"at most {max_terms} are accepted"))
    if ids > max_ids:
        raise TooLarge(bilingual(f"la recherche nomme {ids} _id ; au plus {max_ids} sont acceptés",
                                 f"the search names {ids} _id values; at most {max_ids} are accepted"),
                       expression=["_id"])


def _parse(resource_type: str, query: list[tuple[str, str]], default_count: int,
           max_count: int) -> SearchRequest:
    req = SearchRequest(resource_type, count=default_count)
    known = params_for(resource_type)
    for name, value in query:
        if name in RESULT_PARAMS:
            _result_param(req, name, value, max_count)
            continue
        if name.startswith("_include") or name.startswith("_revinclude"):
            _include_param(req, name, value)
            continue
        base, _, modifier = name.partition(":")
        chain: list[tuple[str, str | None]] = []
        if "." in name:
            head, _, tail = name.partition(".")
            ref_param, _, target = head.partition(":")
            base, _, modifier = tail.partition(":")
            chain.append((ref_param, target or None))
            ref = known.get(ref_param)
            if ref is None or ref.type != "reference":
                raise NotSupported(f"'{ref_param}' is not a reference parameter of {resource_type}",
                                   expression=[name])
            targets = [target] if target else list(ref.targets)
            if not targets or not all(t in resource_types() for t in targets):
                raise NotSupported(f"cannot chain through '{head}'", expression=[name])
            if not any(base in params_for(t) or base in ("_id", "_lastUpdated") for t in targets):
                raise NotSupported(f"'{base}' is not a search parameter of {', '.join(targets)}",
                                   expression=[name])
            if not any(_modifier_allowed(t, base, modifier) for t in targets):
                raise NotSupported(f"the modifier ':{modifier}' is not supported on '{base}'",
                                   expression=[name])
        elif base not in known and base not in ("_id", "_lastUpdated"):
            raise NotSupported(f"'{base}' is not a supported search parameter of {resource_type}",
                               expression=[name])
        elif not _modifier_allowed(resource_type, base, modifier):
            raise NotSupported(f"the modifier ':{modifier}' is not supported on '{base}'",
                               expression=[name])
        if "\x00" in value:  # PostgreSQL refuses it in text, and an escaped "\|" stands for it below
            raise Invalid(bilingual(f"la valeur de {name} contient le caractère NUL",
                                    f"the value of {name} holds the NUL character"), expression=[name])
        req.clauses.append(Clause(base, modifier, _split_values(value), chain))
    return req


def _modifier_allowed(resource_type: str, base: str, modifier: str) -> bool:
    """Whether ``base`` is a parameter of the type that takes ``modifier``."""
    if base == "_id":
        ptype = "token"
    elif base == "_lastUpdated":
        ptype = "date"
    elif base in params_for(resource_type):
        ptype = params_for(resource_type)[base].type
    else:
        return False
    return modifier in _MODIFIERS[ptype] or (ptype == "reference" and modifier in resource_types())


def _split_values(value: str) -> list[str]:
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",").replace("\\|", "\x00") for p in parts]


def _plain(value: str) -> str:
    """A value with its escaped pipes (``\\|``, held as NUL by :func:`_split_values`) back as ``|``:
    for the parts of values where ``|`` separates nothing, so that no NUL reaches the database."""
    return value.replace("\x00", "|")


def _result_param(req: SearchRequest, name: str, value: str, max_count: int) -> None:
    if name == "_count":
        req.count = min(integer_param(name, value), max_count)
    elif name == "_offset":
        req.offset = integer_param(name, value)
    elif name == "_snapshot":
        req.snapshot = integer_param(name, value)
    elif name == "_sort":
        for key in value.split(","):
            key = key.strip()
            desc = key.startswith("-")
            key = key.lstrip("-")
            if key not in ("_id", "_lastUpdated") and key not in params_for(req.resource_type):
                raise NotSupported(f"cannot sort by '{key}'", expression=["_sort"])
            req.sort.append((key, desc))
    elif name == "_summary":
        if value == "true":
            raise NotSupported("_summary=true is not supported; use _elements", expression=["_summary"])
        if value not in ("false", "text", "data", "count"):
            raise Invalid(f"_summary must be true, false, text, data or count, not '{value}'",
                          expression=["_summary"])
        req.summary = None if value == "false" else value
    elif name == "_elements":
        req.elements = [e.strip() for e in value.split(",") if e.strip()]
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise Invalid("_total must be none, estimate or accurate", expression=["_total"])
        req.total = value
    elif name in ("_contained", "_containedType"):
        raise NotSupported(f"{name} is not supported", expression=[name])


def _include_param(req: SearchRequest, name: str, value: str) -> None:
    kind, _, mod = name.partition(":")
    if kind not in ("_include", "_revinclude") or mod not in ("", "iterate", "recurse"):
        raise NotSupported(f"'{name}' is not supported", expression=[name])
    reverse = kind == "_revinclude"
    if value == "*":
        req.includes.append(Include(req.resource_type, "*", None, bool(mod), reverse))
        return
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise Invalid(f"{name} must be Type:parameter[:target], not '{value}'", expression=[name])
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in resource_types() or (target is not None and target not in resource_types()):
        raise Invalid(f"unknown resource type in {name}={value}", expression=[name])
    p = params_for(source).get(param)
    if p is None or p.type != "reference":
        raise Invalid(f"'{param}' is not a reference parameter of {source}", expression=[name])
    req.includes.append(Include(source, param, target, bool(mod), reverse))


# --------------------------------------------------------------------------------------------
# SQL compilation


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _prefix(col: Any, prefix: str) -> ColumnElement[bool]:
    """Starts-with as a range, so that the (type, param, value) index serves it on both engines
    (LIKE cannot use a binary-collated index in SQLite)."""
    return and_(col >= prefix, col < prefix + "\U0010ffff")


def _own_rows(table: Any, conds: list[Any]) -> ColumnElement[bool]:
    return exists(select(1).select_from(table).where(*conds))


def _selectivity(rtype: str, c: Clause) -> int:
    """A rank (lower = likely fewer matches) choosing the clause that drives a search."""
    if c.modifier in ("not", "missing"):
        return 9  # cannot drive: an exclusion
    if c.param == "_id":
        return 0
    if c.chain:
        return 5
    if c.param == "_lastUpdated":
        return 8
    ptype = params_for(rtype)[c.param].type
    if ptype == "reference":
        return 1
    if ptype == "token" and (c.param == "identifier" or c.modifier == "of-type"):
        return 2
    if ptype == "string":
        return 4 if c.modifier != "contains" else 7
    if ptype in ("token", "uri"):
        return 6
    return 8


@cache
def _single_valued(rtype: str, ref_param: str) -> bool:
    """Whether a reference parameter reads one element of cardinality 0..1 (PractitionerRole's
    ``practitioner``): criteria chained through it then concern the same referenced resource."""
    from carnet.fhir.validation.definitions import definitions

    expression = params_for(rtype)[ref_param].expression
    parts = expression.split(".")
    if len(parts) != 2 or parts[0] != rtype or not parts[1].isidentifier():
        return False
    typedef = definitions().types.get(rtype)
    element = typedef.elements.get(parts[1]) if typedef is not None else None
    return element is not None and element.single


def _bounded(rtype: str, c: Clause) -> bool:
    """Whether each value of the clause is a bounded range of its value index (an equality or a
    prefix), so that a capped probe reads no more index rows than its cap. ``date=ge2025`` is not:
    its rows are scattered through the index, and a probe would walk everything before them."""
    if c.param in ("_id", "_lastUpdated") or c.modifier not in ("", "exact"):
        return False
    ptype = params_for(rtype)[c.param].type
    if ptype == "date":
        return all(_prefixed(v)[0] == "eq" for v in c.values)
    return ptype in ("string", "token", "reference", "uri")


def _prefixed(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-+."):
        return value[:2], value[2:]
    return "eq", value


def _date_cond(low: Any, high: Any, value: str, name: str) -> ColumnElement[bool]:
    prefix, text = _prefixed(value)
    rng = date_range(text)
    if rng is None:
        raise Invalid(f"'{text}' is not a valid date for {name}", expression=[name])
    ps, pe = rng
    if prefix == "eq":
        # low <= pe follows from high <= pe, but says it to the index: a bounded range on low
        return and_(low >= ps, low <= pe, high <= pe)
    if prefix == "ne":
        return not_(and_(low >= ps, high <= pe))
    if prefix == "gt":
        return high > pe
    if prefix == "lt":
        return low < ps
    if prefix == "ge":
        return high >= ps
    if prefix == "le":
        return low <= pe
    if prefix == "sa":
        return low > pe
    if prefix == "eb":
        return high < ps
    width = max((pe - ps) // 10, 86_400_000_000)  # ap: within 10% of the range, at least a day
    return and_(low <= pe + width, high >= ps - width)


def _number_cond(col: Any, value: str, name: str) -> ColumnElement[bool]:
    prefix, text = _prefixed(value)
    rng = number_range(text)
    if rng is None:
        raise Invalid(f"'{text}' is not a valid number for {name}", expression=[name])
    v, lo, hi = rng
    return {
        "eq": lambda: and_(col >= lo, col < hi),
        "ne": lambda: or_(col < lo, col >= hi),
        "gt": lambda: col > v,
        "lt": lambda: col < v,
        "ge": lambda: col >= v,
        "le": lambda: col <= v,
        "sa": lambda: col > v,
        "eb": lambda: col < v,
        "ap": lambda: col.between(v - abs(v) * 0.1, v + abs(v) * 0.1),
    }[prefix]()


def _token_parts(value: str) -> tuple[str | None, str | None, bool]:
    """(system, code, system given) from ``code``, ``|code``, ``system|code``, ``system|``."""
    if "|" not in value:
        return None, value.replace("\x00", "|"), False
    system, _, code = value.partition("|")
    return (_plain(system) or None), (code.replace("\x00", "|") or None), True


class Compiler:
    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url.rstrip("/")

    def value_cond(self, p: SearchParam | str, modifier: str, value: str, t: Any,
                   name: str) -> ColumnElement[bool]:
        ptype = p if isinstance(p, str) else p.type
        if ptype in ("string", "date", "number", "uri") or (ptype == "token" and modifier == "text"):
            value = _plain(value)
        if ptype == "string":
            if modifier == "exact":
                return t.c.exact == value
            norm = normalise(value)
            if modifier == "contains":
                return t.c.value.like(f"%{_like_escape(norm)}%", escape="\\")
            return _prefix(t.c.value, norm)
        if ptype == "token":
            if modifier == "text":
                return _prefix(t.c.text, normalise(value))
            if modifier == "of-type":
                parts = [_plain(part) for part in value.split("|")]
                if len(parts) != 3:
                    raise Invalid(f"{name} needs system|code|value", expression=[name])
                return and_(t.c.type_system == parts[0], t.c.type_code == parts[1], t.c.code == parts[2])
            system, code, has_system = _token_parts(value)
            conds = []
            if code is not None:
                conds.append(t.c.code == code)
            if has_system:
                conds.append(t.c.system == system if system else t.c.system.is_(None))
            if not conds:
                raise Invalid(f"empty token value for {name}", expression=[name])
            return and_(*conds)
        if ptype == "date":
            return _date_cond(t.c.low, t.c.high, value, name)
        if ptype == "number":
            return _number_cond(t.c.value, value, name)
        if ptype == "quantity":
            number, _, rest = value.partition("|")
            conds = [_number_cond(t.c.value, number, name)]
            if rest:
                system, _, code = rest.partition("|")
                system, code = _plain(system), _plain(code)
                if system:
                    conds.append(t.c.system == system)
                if code:
                    conds.append(t.c.code == code if system else or_(t.c.code == code, t.c.unit == code))
            return and_(*conds)
        if ptype == "reference":
            return self._reference_cond(p, modifier, value, t, name)
        if ptype == "uri":
            if modifier == "below":
                return t.c.value.like(f"{_like_escape(value)}%", escape="\\")
            if modifier == "above":
                return literal(value).like(t.c.value + "%")
            return t.c.value == value
        raise NotSupported(f"search on {ptype} parameters is not supported", expression=[name])

    def _reference_cond(self, p: SearchParam | str, modifier: str, value: str, t: Any,
                        name: str) -> ColumnElement[bool]:
        if modifier == "identifier":
            system, code, has_system = _token_parts(value)
            conds = [t.c.id_value == code] if code else []
            if has_system and system:
                conds.append(t.c.id_system == system)
            return and_(*conds) if conds else false()
        target = modifier or None
        if self.base_url and value.startswith(self.base_url + "/"):
            value = value[len(self.base_url) + 1:]
        if "://" in value or value.startswith("urn:"):
            url = _plain(value.partition("|")[0])
            return t.c.url == url
        value = _plain(value)
        parts = value.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2:
            rtype, rid = parts[-2], parts[-1]
            if target and rtype != target:
                return false()
            seen = _target_visible(rtype, t.c.target_id) if rtype in GUARDED_TARGETS else None
            return and_(t.c.target_type == rtype, t.c.target_id == rid,
                        *((seen,) if seen is not None else ()))
        conds = [t.c.target_id == value]
        if target:
            conds.append(t.c.target_type == target)
        elif isinstance(p, SearchParam) and len(p.targets) == 1:
            conds.append(t.c.target_type == p.targets[0])
        return and_(*conds)

    def clause(self, rtype: str, c: Clause, id_col: Any) -> ColumnElement[bool]:
        """``id_col IN (ids of rtype matching c)``: the subquery is uncorrelated, so the database
        runs it once through the (type, param, value) index, then looks resources up by key."""
        ids, negate = self.matching_ids(rtype, c)
        return id_col.not_in(ids) if negate else id_col.in_(ids)

    def check(self, rtype: str, c: Clause, type_col: Any, id_col: Any) -> ColumnElement[bool]:
        """The same criterion as a check on one resource: an EXISTS over that resource's own
        index rows (a handful), for the clauses that do not drive the search."""
        if c.chain or c.param in ("_id", "_lastUpdated"):
            return self.clause(rtype, c, id_col)
        name = c.param + (f":{c.modifier}" if c.modifier else "")
        p = params_for(rtype)[c.param]
        table = INDEX_TABLES[p.type]
        own = [table.c.res_type == type_col, table.c.res_id == id_col, table.c.param == p.code]
        if c.modifier == "missing":
            if len(c.values) != 1 or c.values[0] not in ("true", "false"):
                raise Invalid(f"{name} takes true or false", expression=[name])
            present = _own_rows(table, own)
            return not_(present) if c.values[0] == "true" else present
        modifier = "" if c.modifier == "not" else c.modifier
        found = _own_rows(table, [*own, or_(*(self.value_cond(p, modifier, v, table, name)
                                               for v in c.values))])
        return not_(found) if c.modifier == "not" else found

    def matching_ids(self, rtype: str, c: Clause) -> tuple[Any, bool]:
        """(a SELECT of matching ids, or a list of them; whether the clause excludes them)."""
        name = c.param + (f":{c.modifier}" if c.modifier else "")
        if c.chain:
            return self._chain(rtype, c), False
        if c.param == "_id":
            return [_plain(v) for v in c.values], c.modifier == "not"
        if c.param == "_lastUpdated":
            lu = resources.c.last_updated
            return (select(resources.c.res_id).where(
                resources.c.res_type == rtype, or_(*(_date_cond(lu, lu, v, name) for v in c.values)))), False
        p = params_for(rtype)[c.param]
        table = INDEX_TABLES[p.type]
        base = [table.c.res_type == rtype, table.c.param == p.code]
        if c.modifier == "missing":
            if len(c.values) != 1 or c.values[0] not in ("true", "false"):
                raise Invalid(f"{name} takes true or false", expression=[name])
            return select(table.c.res_id).where(*base), c.values[0] == "true"
        modifier = "" if c.modifier == "not" else c.modifier
        values = or_(*(self.value_cond(p, modifier, v, table, name) for v in c.values))
        return select(table.c.res_id).where(*base, values), c.modifier == "not"

    def _chain(self, rtype: str, c: Clause) -> Any:
        """Ids of ``rtype`` whose reference ``ref_param`` points to a resource matching the chained
        criterion: a resource of the server (through ``idx_reference``), or one the resource contains
        (through the rows the indexer writes for contained resources under the container), as FHIR
        evaluates chains inside contained resources. Without a type modifier, every target type that
        has the parameter (and takes its modifier) is tried."""
        ref_param, target = c.chain[0]
        ref = params_for(rtype)[ref_param]
        targets = [target] if target else list(ref.targets)
        r = idx_reference
        inner_conds = []
        contained: dict[tuple[str, tuple[str, ...]], tuple[SearchParam, list[str]]] = {}
        for tt in targets:
            if not _modifier_allowed(tt, c.param, c.modifier):
                continue
            inner = Clause(c.param, c.modifier, c.values)
            seen = _target_visible(tt, r.c.target_id)  # a hidden target matches nothing
            inner_conds.append(and_(r.c.target_type == tt, self.clause(tt, inner, r.c.target_id),
                                    *((seen,) if seen is not None else ())))
            p = params_for(tt).get(c.param)
            if p is not None and c.modifier not in ("not", "missing"):
                # one statement per index table (and, for references, per set of targets, which
                # changes how a bare id is read), whatever the number of target types
                key = (p.type, p.targets if p.type == "reference" else ())
                contained.setdefault(key, (p, []))[1].append(contained_param(ref_param, tt, p.code))
        stmt = select(r.c.res_id).where(r.c.res_type == rtype, r.c.param == ref_param, or_(*inner_conds))
        parts = self._contained_parts(rtype, c, ref_param, contained)
        return union_all(stmt, *parts) if parts else stmt

    def _contained_parts(self, rtype: str, c: Clause, ref_param: str,
                         contained: dict[tuple[str, tuple[str, ...]], tuple[SearchParam, list[str]]]
                         ) -> list[Select[Any]]:
        name = f"{ref_param}.{c.param}" + (f":{c.modifier}" if c.modifier else "")
        parts: list[Select[Any]] = []
        for p, names in contained.values():
            table = INDEX_TABLES[p.type]
            parts.append(select(table.c.res_id).where(
                table.c.res_type == rtype, table.c.param.in_(names),
                or_(*(self.value_cond(p, c.modifier, v, table, name) for v in c.values))))
        return parts

    def chain_group_driver(self, req: SearchRequest) -> tuple[Any, set[int]] | None:
        """Several chained criteria through one single-valued reference
        (``PractitionerRole?practitioner.family=martin&practitioner.given=jean``): the referenced
        resources matching them all are found by one search of the target type (with its own
        drivers: the pair index), instead of each criterion listing its thousands of matches.
        Exact, because the reference holds one resource: the criteria need no other check (the
        indexes of the clauses it answers come back with it). A reference to a contained resource
        matches when the contained rows match every criterion."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, c in enumerate(req.clauses):
            if len(c.chain) != 1 or c.modifier in ("not", "missing"):
                continue
            ref_param, target = c.chain[0]
            targets = [target] if target else list(params_for(req.resource_type)[ref_param].targets)
            if len(targets) == 1 and _modifier_allowed(targets[0], c.param, c.modifier):
                groups.setdefault((ref_param, targets[0]), []).append(i)
        for (ref_param, target), indexes in groups.items():
            if len(indexes) < 2 or not _single_valued(req.resource_type, ref_param):
                continue
            clauses = [req.clauses[i] for i in indexes]
            inner = SearchRequest(target, clauses=[Clause(c.param, c.modifier, c.values) for c in clauses])
            ids = self._target_ids(inner)
            r = idx_reference
            stmt = select(r.c.res_id).where(r.c.res_type == req.resource_type, r.c.param == ref_param,
                                            r.c.target_type == target, r.c.target_id.in_(ids))
            inside: list[Select[Any]] = []
            for c in clauses:
                p = params_for(target)[c.param]
                key = (p.type, p.targets if p.type == "reference" else ())
                inside += self._contained_parts(req.resource_type, c, ref_param, {
                    key: (p, [contained_param(ref_param, target, p.code)])})
            contained = inside[0]
            if len(inside) > 1:  # a subquery: SQLite takes no parenthesised compound in a compound
                both = intersect(*inside).subquery()
                contained = select(both.c.res_id)
            return union_all(stmt, contained), set(indexes)
        return None

    def _target_ids(self, inner: SearchRequest) -> Select[Any]:
        """Ids of the chained criteria's targets the caller may read (a hidden target matches
        nothing, as in :meth:`_chain`). When the pair index answers every criterion and no
        predicate hides targets, its rows are the answer: index rows exist only for resources
        that are not deleted (``Repository.delete`` clears them), so the resources need not be
        read, which at 500k practitioners was a third of a directory chain's cost."""
        fn = _TARGET_FILTER.get()
        seen = fn(inner.resource_type, resources) if fn is not None else None
        if seen is None and len(self.pair_answers(inner)) == len(inner.clauses):
            direct = self.pair_ids(inner)
            if direct is not None:
                return direct
        return select(resources.c.res_id).where(*self.where(inner), *((seen,) if seen is not None else ())
                                                ).correlate(None)

    def sort_key(self, rtype: str, key: str, desc: bool) -> Any:
        if key == "_id":
            return resources.c.res_id
        if key == "_lastUpdated":
            return resources.c.last_updated
        p = params_for(rtype)[key]
        table = INDEX_TABLES[p.type]
        col = {"string": "value", "token": "code", "date": "high" if desc else "low", "number": "value",
               "quantity": "value", "reference": "target_id", "uri": "value"}[p.type]
        agg = func.max if desc else func.min
        return (select(agg(table.c[col]))
                .where(table.c.res_type == resources.c.res_type, table.c.res_id == resources.c.res_id,
                       table.c.param == p.code)
                .scalar_subquery())

    def probe_candidates(self, req: SearchRequest) -> list[int]:
        """The clauses worth probing to choose the driver: two or more that could drive, whose
        values are bounded index ranges, when none is an id, a reference or an identifier (those
        drive without asking)."""
        ranks = [_selectivity(req.resource_type, c) for c in req.clauses]
        if min(ranks, default=9) <= 2:  # an id, a reference or an identifier: selective enough
            return []
        found = sorted((i for i, (c, rank) in enumerate(zip(req.clauses, ranks, strict=True))
                        if rank < 9 and not c.chain and _bounded(req.resource_type, c)),
                       key=lambda i: ranks[i])
        return found if len(found) > 1 else []

    def probes(self, req: SearchRequest, indexes: list[int], cap: int) -> Select[Any]:
        """One statement answering, for each clause in ``indexes``, how many index rows it matches,
        counting no further than ``cap``: bounded range scans of the value indexes."""
        counts = []
        for i in indexes:
            ids, _ = self.matching_ids(req.resource_type, req.clauses[i])
            counts.append(select(func.count()).select_from(ids.limit(cap).subquery()).scalar_subquery())
        return select(*counts)

    PAIR_BEATS = 33  # a probed driver with fewer rows than this beats the pair scan

    def _pair(self, req: SearchRequest) -> tuple[str, str, str, str] | None:
        """(first, second, first value, second value) of the pair index serving two criteria.
        Values are cut to PAIR_PART like the rows: a cut value makes the pair a candidate set."""
        pairs = STRING_PAIRS.get(req.resource_type)
        if not pairs or any(_selectivity(req.resource_type, c) <= 2 for c in req.clauses):
            return None  # none, or an id, a reference or an identifier drives better
        simple = {c.param: c for c in req.clauses
                  if not c.chain and c.modifier == "" and len(c.values) == 1 and c.values[0]}
        for first, second in pairs:
            if first in simple and second in simple:
                a = normalise(_plain(simple[first].values[0]))
                b = normalise(_plain(simple[second].values[0]))
                if a and b:
                    return first, second, a, b
        return None

    def pair_answers(self, req: SearchRequest) -> set[int]:
        """The clauses the pair driver answers exactly (no check needed): both, unless a value is
        longer than the indexed part."""
        found = self._pair(req)
        if found is None:
            return set()
        first, second, a, b = found
        if len(a) > PAIR_PART or len(b) > PAIR_PART:
            return set()
        mine = [i for i, c in enumerate(req.clauses) if c.param in (first, second) and not c.chain]
        return set(mine) if len(mine) == 2 else set()  # family=a&family=b: the pair holds one of them

    def pair_applies(self, req: SearchRequest) -> bool:
        return self._pair(req) is not None

    def pair_driver(self, req: SearchRequest) -> Select[Any] | None:
        """The ids of the pair rows of two string criteria (see indexer.STRING_PAIRS), when they
        drive the search."""
        if req.driver_rows is not None and req.driver_rows < self.PAIR_BEATS:
            return None
        return self.pair_ids(req)

    def pair_ids(self, req: SearchRequest) -> Select[Any] | None:
        """The ids of the pair rows of two string criteria: one range of the first parameter's
        values, the second filtered inside the index."""
        found = self._pair(req)
        if found is None:
            return None
        first, second, a, b = found
        a, b = a[:PAIR_PART], b[:PAIR_PART]
        t = INDEX_TABLES["string"]
        v = t.c.value
        # the first value equal to ``a``: one narrow range; longer ones starting with ``a``
        # (martinez for martin): their own range, the second value filtered in the index
        pattern = f"{_like_escape(a)}%{PAIR_SEPARATOR}{_like_escape(b)}%"
        longer = and_(v >= a + chr(ord(PAIR_SEPARATOR) + 1), v < a + "\U0010ffff",
                      v.like(pattern, escape="\\"))
        ids = select(t.c.res_id).where(
            t.c.res_type == req.resource_type, t.c.param == pair_param(first, second),
            or_(_prefix(v, a + PAIR_SEPARATOR + b), longer))
        return ids

    def where(self, req: SearchRequest) -> list[ColumnElement[bool]]:
        r = resources.c
        conds = [r.res_type == req.resource_type, r.deleted.is_(False)]
        if req.snapshot is not None:
            conds.append(r.created_at <= req.snapshot)
        order = sorted(range(len(req.clauses)), key=lambda i: _selectivity(req.resource_type, req.clauses[i]))
        if req.driver is not None:
            order.remove(req.driver)
            order.insert(0, req.driver)
        driver = self.pair_driver(req)
        answered: set[int] = self.pair_answers(req) if driver is not None else set()
        if driver is None and not any(_selectivity(req.resource_type, c) <= 2 for c in req.clauses):
            group = self.chain_group_driver(req)
            if group is not None:
                driver, answered = group
        rest: list[Clause] = []
        for n, i in enumerate(order):
            c = req.clauses[i]
            if i in answered:
                continue
            if n == 0 and driver is None and _selectivity(req.resource_type, c) < 9:
                ids, negate = self.matching_ids(req.resource_type, c)
                if negate or isinstance(ids, list):  # an id list: nothing to look up
                    conds.append(self.clause(req.resource_type, c, r.res_id))
                else:
                    driver = ids
            elif driver is not None:
                rest.append(c)
            else:
                conds.append(self.check(req.resource_type, c, r.res_type, r.res_id))
        if driver is not None:
            conds.append(r.res_id.in_(self._checked(req.resource_type, driver, rest)))
        return conds

    def _checked(self, rtype: str, driver: Any, clauses: list[Clause]) -> Any:
        """The driver's ids that pass the other criteria, checked on the ids' own index rows
        before any resource is read: a check needs only the id, and a resource row is larger
        and further away than an index entry (a directory chain with 781 candidate roles and a
        ``role=`` check: 8.4 ms checking after reading each resource, 4.4 ms before)."""
        if not clauses:
            return driver
        d = driver.subquery("driver")
        return select(d.c.res_id).where(*(self.check(rtype, c, rtype, d.c.res_id) for c in clauses))

    def page(self, req: SearchRequest, visible: list[ColumnElement[bool]]) -> Select[Any]:
        r = resources.c
        stmt = select(r.res_id, r.version, r.last_updated, r.content, r.patient_id).where(
            *self.where(req), *visible)
        order = []
        for key, desc in req.sort:
            expr = self.sort_key(req.resource_type, key, desc)
            order.append(expr.desc().nulls_last() if desc else expr.asc().nulls_last())
        if not req.sort and req.clauses:
            # An expression, not the column: a filtered search must be driven by its (selective)
            # criteria, then sort the few matches, rather than walk the whole type in index order.
            order.append((r.created_at + 0).asc())
        elif not req.sort:
            order.append(r.created_at.asc())
        order.append(r.res_id.asc())
        return stmt.order_by(*order).limit(req.count + 1).offset(req.offset)

    def page_rows(self, conn: Connection, req: SearchRequest,
                  visible: list[ColumnElement[bool]]) -> list[Any]:
        """The rows of a search page (``count + 1`` of them at most, to tell whether a next page
        exists). A search with no criteria sorted on one string parameter (``Patient?_sort=name``)
        walks that parameter's value index in order, so that the first page costs a few rows
        instead of one sort key computed for every resource of the type (seconds at 200,000)."""
        sort = self._string_sort(req)
        if sort is None:
            return list(conn.execute(self.page(req, visible)).all())
        param, desc = sort
        r = resources.c
        t, other = idx_string, idx_string.alias("other_value")
        before = (other.c.value > t.c.value) if desc else (other.c.value < t.c.value)
        earlier = (other.c.exact > t.c.exact) if desc else (other.c.exact < t.c.exact)
        # the resource's first value in sort order (its min, or max when descending): one row each
        first = ~exists().where(other.c.res_type == t.c.res_type, other.c.res_id == t.c.res_id,
                                other.c.param == t.c.param,
                                or_(before, and_(other.c.value == t.c.value, earlier)))
        columns = (r.res_id, r.version, r.last_updated, r.content, r.patient_id)
        # the resources with a value, each once: the page's rows, and (below) how many there are
        joined = t.join(resources, and_(r.res_type == t.c.res_type, r.res_id == t.c.res_id))
        valued = [t.c.res_type == req.resource_type, t.c.param == param, first, *self.where(req), *visible]
        named = list(conn.execute(
            select(*columns).select_from(joined).where(*valued)
            .order_by(t.c.value.desc() if desc else t.c.value.asc(), t.c.res_id.asc())
            .limit(req.count + 1).offset(req.offset)).all())
        if len(named) > req.count:
            return named
        # then, as NULLS LAST, the resources without a value, by id
        valueless = [*self.where(req), *visible, ~exists().where(
            other.c.res_type == r.res_type, other.c.res_id == r.res_id, other.c.param == param)]
        if named:
            skip = 0
        else:  # the page starts after every resource with a value: how many of them there are
            counted = select(func.count()).select_from(joined).where(*valued)
            skip = max(req.offset - conn.execute(counted).scalar_one(), 0)
        rest = conn.execute(select(*columns).where(*valueless).order_by(r.res_id.asc())
                            .limit(req.count + 1 - len(named)).offset(skip)).all()
        return [*named, *rest]

    def _string_sort(self, req: SearchRequest) -> tuple[str, bool] | None:
        """(parameter code, descending) when the page may walk a string parameter's value index."""
        if req.clauses or len(req.sort) != 1:
            return None
        key, desc = req.sort[0]
        p = params_for(req.resource_type).get(key)
        if p is None or p.type != "string":
            return None
        return p.code, desc

    def count(self, req: SearchRequest, visible: list[ColumnElement[bool]]) -> Select[Any]:
        return select(func.count()).select_from(resources).where(*self.where(req), *visible)
