"""A small FHIRPath evaluator for the invariants of the base FHIR R4 definitions.

It compiles an expression once into nested closures working directly on the parsed FHIR JSON
(dicts, lists, strings, numbers), which is one to two orders of magnitude cheaper per call than
a general-purpose interpreter. It covers the part of FHIRPath that the R4 invariants use
(navigation with choice types, boolean logic with empty propagation, comparisons including
partial dates, collection and string functions); anything else raises :class:`Unsupported` at
compile time so that the caller can leave that invariant out.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

Collection = list[Any]
Compiled = Callable[[Collection, "Env"], Collection]


class Unsupported(Exception):
    """The expression uses a FHIRPath feature this evaluator does not implement."""


class EvalError(Exception):
    """The expression cannot be evaluated on this input (e.g. a multi-item collection as a boolean)."""


class Node:
    """A value reached through a choice element or carrying primitive extensions (``_name``)."""

    __slots__ = ("ext", "type", "value")

    def __init__(self, value: Any, ext: Any = None, type_: str | None = None) -> None:
        self.value = value
        self.ext = ext
        self.type = type_

    def __eq__(self, other: object) -> bool:
        other_value = other.value if isinstance(other, Node) else other
        return bool(self.value == other_value and self.value is not None)

    def __hash__(self) -> int:
        return hash(self.value) if not isinstance(self.value, dict | list) else id(self)


class Env:
    __slots__ = ("context", "index", "resource", "root", "this", "total")

    def __init__(self, resource: Any, root: Any, context: Any) -> None:
        self.resource = resource
        self.root = root
        self.context = context
        self.this: Any = context
        self.index = 0
        self.total: Any = None


# Choice element base name -> JSON keys it may appear as; filled from the structure data.
CHOICE_KEYS: dict[str, dict[str, str]] = {}
_NON_DOMAIN = frozenset({"Bundle", "Parameters", "Binary"})
_STRING_TYPES = frozenset({
    "string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "base64Binary",
    "date", "dateTime", "instant", "time", "xhtml", "String", "Date", "DateTime", "Time",
})
_SYSTEM_TYPES = {"Boolean": "boolean", "String": "string", "Integer": "integer", "Decimal": "decimal",
                 "Date": "date", "DateTime": "dateTime", "Time": "time", "Quantity": "Quantity"}
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "Integer"})
_DECIMAL_TYPES = frozenset({"decimal", "Decimal"})
_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


def unwrap(value: Any) -> Any:
    return value.value if type(value) is Node else value


# ------------------------------------------------------------------------------------------
# Lexer and parser
# ------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<date>@T?[0-9][0-9:\-T.+Z]*)
  | (?P<num>[0-9]+(?:\.[0-9]+)?)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]*`|'[^']*'))
  | (?P<special>\$(?:this|index|total))
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
  | (?P<op><=|>=|!=|!~|[-+*/&|<>=~.,()\[\]{}])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

_BINARY = {
    "implies": 1, "or": 2, "xor": 2, "and": 3, "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5, "<": 6, ">": 6, "<=": 6, ">=": 6, "|": 7,
    "is": 8, "as": 8, "+": 9, "-": 9, "&": 9, "*": 10, "/": 10, "div": 10, "mod": 10,
}
_CALENDAR = {"year", "years", "month", "months", "week", "weeks", "day", "days", "hour", "hours",
             "minute", "minutes", "second", "seconds", "millisecond", "milliseconds"}


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and i + 5 < len(text):
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise Unsupported(f"cannot tokenise at {text[pos:pos + 10]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind == "ws":
            continue
        tokens.append((kind, match.group()))
    tokens.append(("eof", ""))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        _, text = self.take()
        if text != value:
            raise Unsupported(f"expected {value!r}, found {text!r}")

    def parse(self) -> tuple[Any, ...]:
        tree = self.expression(0)
        if self.peek()[0] != "eof":
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return tree

    def binding(self, token: tuple[str, str]) -> int:
        kind, text = token
        if kind == "op" and text in (".", "["):
            return 12
        if kind in ("op", "id") and text in _BINARY:
            return _BINARY[text]
        return 0

    def expression(self, rbp: int) -> tuple[Any, ...]:
        left = self.prefix()
        while rbp < self.binding(self.peek()):
            _, text = self.take()
            if text == ".":
                left = self.invocation(left)
            elif text == "[":
                index = self.expression(0)
                self.expect("]")
                left = ("index", left, index)
            elif text in ("is", "as"):
                left = (text, left, self.type_specifier())
            else:
                right = self.expression(_BINARY[text])
                left = ("op", text, left, right)
        return left

    def type_specifier(self) -> str:
        kind, text = self.take()
        if kind != "id":
            raise Unsupported("type name expected")
        name = text.strip("`")
        while self.peek()[1] == "." and self.tokens[self.pos + 1][0] == "id":
            self.take()
            name = self.take()[1].strip("`")
        return name

    def invocation(self, left: tuple[Any, ...] | None) -> tuple[Any, ...]:
        kind, text = self.take()
        if kind == "special":
            return ("this",) if text == "$this" else ("special", text)
        if kind != "id":
            raise Unsupported(f"name expected, found {text!r}")
        name = text.strip("`")
        if self.peek()[1] == "(":
            self.take()
            args: list[tuple[Any, ...]] = []
            if self.peek()[1] != ")":
                args.append(self.expression(0))
                while self.peek()[1] == ",":
                    self.take()
                    args.append(self.expression(0))
            self.expect(")")
            return ("fn", left, name, args)
        return ("member", left, name)

    def prefix(self) -> tuple[Any, ...]:
        kind, text = self.peek()
        if kind == "num":
            self.take()
            number: Any = Decimal(text) if "." in text else int(text)
            nkind, ntext = self.peek()
            if nkind == "str" or (nkind == "id" and ntext in _CALENDAR):
                self.take()
                unit = _unescape(ntext[1:-1]) if nkind == "str" else ntext
                return ("lit", {"value": Decimal(text), "code": unit, "unit": unit})
            return ("lit", number)
        if kind == "str":
            self.take()
            return ("lit", _unescape(text[1:-1]))
        if kind == "date":
            self.take()
            return ("lit", text[1:])
        if kind == "var":
            self.take()
            return ("var", text[1:].strip("`'"))
        if kind == "id" and text in ("true", "false"):
            self.take()
            return ("lit", text == "true")
        if kind in ("id", "special"):
            return self.invocation(None)
        if text == "(":
            self.take()
            inner = self.expression(0)
            self.expect(")")
            return inner
        if text == "{":
            self.take()
            self.expect("}")
            return ("empty",)
        if text in ("-", "+"):
            self.take()
            operand = self.expression(11)
            return ("neg", operand) if text == "-" else operand
        raise Unsupported(f"unexpected token {text!r}")


def parse(text: str) -> tuple[Any, ...]:
    return _Parser(text).parse()


# ------------------------------------------------------------------------------------------
# Value helpers
# ------------------------------------------------------------------------------------------


def to_bool(collection: Collection) -> bool | None:
    if not collection:
        return None
    if len(collection) == 1:
        value = unwrap(collection[0])
        if value is True or value is False:
            return value
        return True
    raise EvalError("a collection of several items used as a boolean")


def _singleton(collection: Collection) -> Any:
    if not collection:
        return None
    if len(collection) > 1:
        raise EvalError("a collection of several items where one is expected")
    return unwrap(collection[0])


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return None


_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(\.\d+)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")
_TIME_RE = re.compile(r"T?(\d{2})(?::(\d{2})(?::(\d{2})(\.\d+)?)?)?$")


def _date_key(text: str) -> tuple[int, tuple[Any, ...]] | None:
    """(precision, comparable tuple) of a FHIR date/dateTime/instant, or None."""
    match = _DATE_RE.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, tz = match.groups()
    if hour is None:
        parts = [int(year)] + [int(p) for p in (month, day) if p is not None]
        return len(parts), tuple(parts)
    moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute or 0),  # noqa: DTZ001
                         int(second or 0), round(float(fraction or 0) * 1_000_000))
    if tz:
        offset = dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])) if tz != "Z" else dt.timedelta()
        moment = moment - offset if tz.startswith("+") or tz == "Z" else moment + offset
    return 4, (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
               moment.microsecond)


def _time_key(text: str) -> tuple[int, tuple[int, ...]] | None:
    match = _TIME_RE.match(text)
    if match is None:
        return None
    hour, minute, second, fraction = match.groups()
    parts = [int(hour)] + [int(p) for p in (minute, second) if p is not None]
    if fraction:
        parts.append(round(float(fraction) * 1000))
    return len(parts), tuple(parts)


def _compare_partial(a: tuple[int, tuple[Any, ...]], b: tuple[int, tuple[Any, ...]]) -> int | None:
    (pa, ka), (pb, kb) = a, b
    if pa == pb:
        return (ka > kb) - (ka < kb)
    common = min(pa, pb, 3) if max(pa, pb) == 4 else min(pa, pb)
    ca, cb = ka[:common], kb[:common]
    if ca != cb:
        return (ca > cb) - (ca < cb)
    return None


def compare(a: Any, b: Any) -> int | None:
    """-1/0/1, or None when the values are not comparable or the result is unknown."""
    a, b = unwrap(a), unwrap(b)
    if a is None or b is None:
        return None
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    if isinstance(a, str) and isinstance(b, str):
        da, db = _date_key(a), _date_key(b)
        if da is not None and db is not None:
            return _compare_partial(da, db)
        ta, tb = _time_key(a), _time_key(b)
        if ta is not None and tb is not None and ":" in a and ":" in b:
            return _compare_partial(ta, tb)
        return (a > b) - (a < b)
    if isinstance(a, dict) and isinstance(b, dict) and "value" in a and "value" in b:
        unit_a = a.get("code") or a.get("unit")
        unit_b = b.get("code") or b.get("unit")
        if unit_a != unit_b:
            return None
        return compare(a["value"], b["value"])
    return None


def equals(a: Any, b: Any) -> bool | None:
    a, b = unwrap(a), unwrap(b)
    if a is None or b is None:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na == nb
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        da, db = _date_key(a), _date_key(b)
        if da is not None and db is not None:
            result = _compare_partial(da, db)
            return None if result is None else result == 0
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a == b
    return False


def _equivalent(a: Any, b: Any) -> bool:
    a, b = unwrap(a), unwrap(b)
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return bool(equals(a, b))


def _key(item: Any) -> Any:
    """A hashable stand-in with the equality of ``equals`` for the values found in resources."""
    value = unwrap(item)
    if isinstance(value, bool):
        return ("b", value)
    number = _number(value)
    if number is not None:
        return ("n", number)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, dict | list):
        return ("j", json.dumps(value, sort_keys=True, default=str))
    return ("o", id(value))


def _contains_item(collection: Collection, item: Any) -> bool:
    if len(collection) > 8:
        return _key(item) in {_key(other) for other in collection}
    return any(equals(item, other) for other in collection)


def _distinct(collection: Collection) -> Collection:
    out: Collection = []
    seen: set[Any] = set()
    for item in collection:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def type_matches(item: Any, name: str) -> bool:
    if name.startswith(("FHIR.", "System.")):
        name = name.split(".", 1)[1]
    if type(item) is Node:
        if item.type is not None:
            return item.type == name or _SYSTEM_TYPES.get(name) == item.type or (
                name == "DateTime" and item.type == "instant")
        item = item.value
    if isinstance(item, dict):
        rtype = item.get("resourceType")
        if rtype is None:
            return False
        if name == rtype or name == "Resource":
            return True
        return name == "DomainResource" and rtype not in _NON_DOMAIN
    if isinstance(item, bool):
        return name in ("boolean", "Boolean")
    if isinstance(item, int):
        return name in _INTEGER_TYPES
    if isinstance(item, float | Decimal):
        return name in _DECIMAL_TYPES
    if isinstance(item, str):
        return name in _STRING_TYPES
    return False


def navigate(items: Collection, name: str) -> Collection:
    out: Collection = []
    for item in items:
        if type(item) is Node:
            item = item.ext if item.ext is not None else item.value
        if type(item) is not dict:
            continue
        value = item.get(name)
        ext = item.get("_" + name) if len(item) > 1 else None
        if value is None:
            if ext is not None:
                if isinstance(ext, list):
                    out.extend(Node(None, e) for e in ext if e is not None)
                else:
                    out.append(Node(None, ext))
                continue
            keys = CHOICE_KEYS.get(name)
            if keys:
                for key, type_name in keys.items():
                    if key in item:
                        choice_value = item[key]
                        choice_ext = item.get("_" + key)
                        out.append(Node(choice_value, choice_ext, type_name))
                    elif "_" + key in item:
                        out.append(Node(None, item["_" + key], type_name))
            elif name[:1].isupper() and item.get("resourceType") == name:
                out.append(item)
            continue
        if ext is not None:
            if isinstance(value, list):
                exts = ext if isinstance(ext, list) else []
                for i, v in enumerate(value):
                    e = exts[i] if i < len(exts) else None
                    if v is not None or e is not None:
                        out.append(Node(v, e))
            else:
                out.append(Node(value, ext))
        elif isinstance(value, list):
            out.extend(v for v in value if v is not None)
        else:
            out.append(value)
    return out


def children(items: Collection) -> Collection:
    out: Collection = []
    for item in items:
        if type(item) is Node:
            item = item.ext if item.ext is not None else item.value
        if type(item) is not dict:
            continue
        for key in item:
            if key == "resourceType":
                continue
            if key.startswith("_"):
                if key[1:] not in item:
                    out.extend(navigate([item], key[1:]))
                continue
            out.extend(navigate([item], key))
    return out


def descendants(items: Collection) -> Collection:
    out: Collection = []
    level = children(items)
    depth = 0
    while level and depth < 64:
        out.extend(level)
        level = children(level)
        depth += 1
    return out


# ------------------------------------------------------------------------------------------
# Compiler
# ------------------------------------------------------------------------------------------


def compile_expression(text: str) -> Compiled:
    """Compile an expression; raises :class:`Unsupported` for features outside the subset."""
    return _compile(parse(text))


def _compile(node: tuple[Any, ...]) -> Compiled:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        literal = [value]
        return lambda focus, env: literal
    if kind == "empty":
        return lambda focus, env: []
    if kind == "this":
        return lambda focus, env: [env.this]
    if kind == "special":
        if node[1] == "$index":
            return lambda focus, env: [env.index]
        return lambda focus, env: [] if env.total is None else [env.total]
    if kind == "var":
        return _compile_var(node[1])
    if kind == "member":
        name = node[2]
        if node[1] is None:
            return lambda focus, env: navigate(focus, name)
        left = _compile(node[1])
        return lambda focus, env: navigate(left(focus, env), name)
    if kind == "index":
        left = _compile(node[1])
        index = _compile(node[2])

        def run_index(focus: Collection, env: Env) -> Collection:
            items = left(focus, env)
            position = _singleton(index(focus, env))
            if not isinstance(position, int) or position < 0 or position >= len(items):
                return []
            return [items[position]]
        return run_index
    if kind == "neg":
        operand = _compile(node[1])

        def run_neg(focus: Collection, env: Env) -> Collection:
            value = _singleton(operand(focus, env))
            number = _number(value)
            return [] if number is None else [-number]
        return run_neg
    if kind in ("is", "as"):
        left = _compile(node[1])
        type_name = node[2]
        if kind == "is":
            def run_is(focus: Collection, env: Env) -> Collection:
                items = left(focus, env)
                if not items:
                    return []
                if len(items) > 1:
                    raise EvalError("'is' on several items")
                return [type_matches(items[0], type_name)]
            return run_is
        return lambda focus, env: [i for i in left(focus, env) if type_matches(i, type_name)]
    if kind == "op":
        return _compile_op(node[1], _compile(node[2]), _compile(node[3]))
    if kind == "fn":
        return _compile_function(node[2], None if node[1] is None else _compile(node[1]), node[3])
    raise Unsupported(f"node {kind}")


def _compile_var(name: str) -> Compiled:
    if name == "resource":
        return lambda focus, env: [env.resource]
    if name == "rootResource":
        return lambda focus, env: [env.root]
    if name == "context":
        return lambda focus, env: [env.context]
    if name in _CONSTANTS:
        constant = [_CONSTANTS[name]]
        return lambda focus, env: constant
    raise Unsupported(f"environment variable %{name}")


def _compile_op(op: str, left: Compiled, right: Compiled) -> Compiled:
    if op == "and":
        def run_and(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            if a is False:
                return [False]
            b = to_bool(right(focus, env))
            if b is False:
                return [False]
            return [True] if a is True and b is True else []
        return run_and
    if op == "or":
        def run_or(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            if a is True:
                return [True]
            b = to_bool(right(focus, env))
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
        return run_or
    if op == "xor":
        def run_xor(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            b = to_bool(right(focus, env))
            return [] if a is None or b is None else [a != b]
        return run_xor
    if op == "implies":
        def run_implies(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            if a is False:
                return [True]
            b = to_bool(right(focus, env))
            if a is True:
                return [] if b is None else [b]
            return [True] if b is True else []
        return run_implies
    if op in ("=", "!="):
        negate = op == "!="

        def run_equals(focus: Collection, env: Env) -> Collection:
            a = left(focus, env)
            b = right(focus, env)
            if not a or not b:
                return []
            if len(a) != len(b):
                return [negate]
            result: bool | None = True
            for x, y in zip(a, b, strict=True):
                same = equals(x, y)
                if same is None:
                    return []
                if not same:
                    result = False
                    break
            return [result != negate]
        return run_equals
    if op in ("~", "!~"):
        negate = op == "!~"

        def run_equivalent(focus: Collection, env: Env) -> Collection:
            a = left(focus, env)
            b = right(focus, env)
            if not a and not b:
                return [not negate]
            if len(a) != len(b):
                return [negate]
            same = all(_equivalent(x, y) for x, y in zip(a, b, strict=True))
            return [same != negate]
        return run_equivalent
    if op in ("<", ">", "<=", ">="):
        def run_compare(focus: Collection, env: Env) -> Collection:
            a = _singleton(left(focus, env))
            b = _singleton(right(focus, env))
            if a is None or b is None:
                return []
            result = compare(a, b)
            if result is None:
                return []
            if op == "<":
                return [result < 0]
            if op == ">":
                return [result > 0]
            if op == "<=":
                return [result <= 0]
            return [result >= 0]
        return run_compare
    if op in ("in", "contains"):
        def run_membership(focus: Collection, env: Env) -> Collection:
            a = left(focus, env)
            b = right(focus, env)
            item, collection = (a, b) if op == "in" else (b, a)
            if not item:
                return []
            if len(item) > 1:
                raise EvalError("membership test of several items")
            return [_contains_item(collection, item[0])]
        return run_membership
    if op == "|":
        return lambda focus, env: _distinct(left(focus, env) + right(focus, env))
    if op == "&":
        def run_concat(focus: Collection, env: Env) -> Collection:
            a = _singleton(left(focus, env))
            b = _singleton(right(focus, env))
            return [("" if a is None else str(a)) + ("" if b is None else str(b))]
        return run_concat
    if op in ("+", "-", "*", "/", "div", "mod"):
        def run_arithmetic(focus: Collection, env: Env) -> Collection:
            a = _singleton(left(focus, env))
            b = _singleton(right(focus, env))
            if a is None or b is None:
                return []
            if op == "+" and isinstance(a, str) and isinstance(b, str):
                return [a + b]
            na, nb = _number(a), _number(b)
            if na is None or nb is None:
                raise EvalError("arithmetic on non-numbers")
            try:
                if op == "+":
                    return [na + nb]
                if op == "-":
                    return [na - nb]
                if op == "*":
                    return [na * nb]
                if nb == 0:
                    return []
                if op == "/":
                    return [na / nb]
                if op == "div":
                    return [int(na // nb)]
                return [na % nb]
            except InvalidOperation:
                return []
        return run_arithmetic
    raise Unsupported(f"operator {op}")


def _iterate(items: Collection, criteria: Compiled, env: Env) -> list[tuple[Any, Collection]]:
    saved_this, saved_index = env.this, env.index
    results = []
    try:
        for index, item in enumerate(items):
            env.this = item
            env.index = index
            results.append((item, criteria([item], env)))
    finally:
        env.this, env.index = saved_this, saved_index
    return results


_regex_cache: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    compiled = _regex_cache.get(pattern)
    if compiled is None:
        compiled = re.compile(pattern, re.DOTALL)
        _regex_cache[pattern] = compiled
    return compiled


def _compile_function(name: str, target: Compiled | None, arg_nodes: list[tuple[Any, ...]]) -> Compiled:
    """Functions take their input from ``target`` (or the focus) and arguments evaluated on the focus."""
    if name in ("memberOf", "conformsTo", "aggregate", "repeat", "extension"):
        raise Unsupported(f"function {name}()")
    if name == "htmlChecks":
        return lambda focus, env: [True]  # narrative rules are checked by the validator itself
    if name in ("is", "as", "ofType"):
        if len(arg_nodes) != 1 or arg_nodes[0][0] != "member" or arg_nodes[0][1] is not None:
            raise Unsupported(f"{name}() with an unusual type argument")
        type_name = arg_nodes[0][2]
        source = _source(target)
        if name == "is":
            def run_is(focus: Collection, env: Env) -> Collection:
                items = source(focus, env)
                if not items:
                    return []
                return [type_matches(items[0], type_name)]
            return run_is
        return lambda focus, env: [i for i in source(focus, env) if type_matches(i, type_name)]
    args = [_compile(a) for a in arg_nodes]
    source = _source(target)
    handler = _FUNCTIONS.get(name)
    if handler is None:
        raise Unsupported(f"function {name}()")
    return handler(source, args)


def _source(target: Compiled | None) -> Compiled:
    if target is None:
        return lambda focus, env: focus
    return target


def _fn_empty(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: [not source(focus, env)]


def _fn_exists(source: Compiled, args: list[Compiled]) -> Compiled:
    if not args:
        return lambda focus, env: [bool(source(focus, env))]
    criteria = args[0]

    def run(focus: Collection, env: Env) -> Collection:
        return [any(to_bool(r) for _, r in _iterate(source(focus, env), criteria, env))]
    return run


def _fn_where(source: Compiled, args: list[Compiled]) -> Compiled:
    criteria = args[0]
    return lambda focus, env: [i for i, r in _iterate(source(focus, env), criteria, env) if to_bool(r)]


def _fn_select(source: Compiled, args: list[Compiled]) -> Compiled:
    projection = args[0]

    def run(focus: Collection, env: Env) -> Collection:
        out: Collection = []
        for _, result in _iterate(source(focus, env), projection, env):
            out.extend(result)
        return out
    return run


def _fn_all(source: Compiled, args: list[Compiled]) -> Compiled:
    criteria = args[0]
    return lambda focus, env: [all(to_bool(r) is True
                                   for _, r in _iterate(source(focus, env), criteria, env))]


def _fn_not(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        value = to_bool(source(focus, env))
        return [] if value is None else [not value]
    return run


def _fn_count(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: [len(source(focus, env))]


def _fn_has_value(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        items = source(focus, env)
        if len(items) != 1:
            return [False]
        value = unwrap(items[0])
        return [value is not None and not isinstance(value, dict | list)]
    return run


def _fn_distinct_check(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        items = source(focus, env)
        return [len(_distinct(items)) == len(items)]
    return run


def _fn_distinct(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: _distinct(source(focus, env))


def _fn_first(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: source(focus, env)[:1]


def _fn_last(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: source(focus, env)[-1:]


def _fn_tail(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: source(focus, env)[1:]


def _fn_single(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        items = source(focus, env)
        if len(items) > 1:
            raise EvalError("single() on several items")
        return items
    return run


def _fn_skip_take(skip: bool) -> Callable[[Compiled, list[Compiled]], Compiled]:
    def factory(source: Compiled, args: list[Compiled]) -> Compiled:
        def run(focus: Collection, env: Env) -> Collection:
            count = _singleton(args[0](focus, env))
            if not isinstance(count, int):
                return []
            items = source(focus, env)
            return items[count:] if skip else items[:max(count, 0)]
        return run
    return factory


Factory = Callable[[Compiled, list[Compiled]], Compiled]


def _string_function(operation: Callable[[str, list[Any]], Any]) -> Factory:
    def factory(source: Compiled, args: list[Compiled]) -> Compiled:
        def run(focus: Collection, env: Env) -> Collection:
            value = _singleton(source(focus, env))
            if not isinstance(value, str):
                return []
            values = []
            for arg in args:
                item = _singleton(arg(focus, env))
                if item is None:
                    return []
                values.append(item)
            result = operation(value, values)
            return [] if result is None else [result]
        return run
    return factory


def _substring(value: str, args: list[Any]) -> str | None:
    start = args[0]
    if not isinstance(start, int) or start < 0 or start >= len(value):
        return None
    if len(args) > 1:
        return value[start:start + max(int(args[1]), 0)]
    return value[start:]


def _to_integer(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        value = _singleton(source(focus, env))
        if isinstance(value, bool):
            return [int(value)]
        if isinstance(value, int):
            return [value]
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
            return [int(value)]
        return []
    return run


def _to_string(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        value = _singleton(source(focus, env))
        if value is None or isinstance(value, dict):
            return []
        if isinstance(value, bool):
            return ["true" if value else "false"]
        if isinstance(value, Decimal):
            return [getattr(value, "text", None) or str(value)]
        return [str(value)]
    return run


def _fn_trace(source: Compiled, args: list[Compiled]) -> Compiled:
    return source


def _fn_iif(source: Compiled, args: list[Compiled]) -> Compiled:
    criterion, when_true = args[0], args[1]
    when_false = args[2] if len(args) > 2 else None

    def run(focus: Collection, env: Env) -> Collection:
        items = source(focus, env)
        if to_bool(criterion(items, env)):
            return when_true(items, env)
        return when_false(items, env) if when_false is not None else []
    return run


def _fn_children(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: children(source(focus, env))


def _fn_descendants(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: descendants(source(focus, env))


def _fn_combine(source: Compiled, args: list[Compiled]) -> Compiled:
    other = args[0]
    return lambda focus, env: source(focus, env) + other(focus, env)


def _fn_union(source: Compiled, args: list[Compiled]) -> Compiled:
    other = args[0]
    return lambda focus, env: _distinct(source(focus, env) + other(focus, env))


def _fn_intersect(source: Compiled, args: list[Compiled]) -> Compiled:
    other = args[0]

    def run(focus: Collection, env: Env) -> Collection:
        right = other(focus, env)
        return _distinct([i for i in source(focus, env) if _contains_item(right, i)])
    return run


def _fn_exclude(source: Compiled, args: list[Compiled]) -> Compiled:
    other = args[0]

    def run(focus: Collection, env: Env) -> Collection:
        right = other(focus, env)
        return [i for i in source(focus, env) if not _contains_item(right, i)]
    return run


def _fn_subset(subset: bool) -> Callable[[Compiled, list[Compiled]], Compiled]:
    def factory(source: Compiled, args: list[Compiled]) -> Compiled:
        other = args[0]

        def run(focus: Collection, env: Env) -> Collection:
            left, right = source(focus, env), other(focus, env)
            if not subset:
                left, right = right, left
            return [all(_contains_item(right, i) for i in left)]
        return run
    return factory


def _fn_bool_aggregate(kind: str) -> Callable[[Compiled, list[Compiled]], Compiled]:
    def factory(source: Compiled, args: list[Compiled]) -> Compiled:
        def run(focus: Collection, env: Env) -> Collection:
            values = [unwrap(i) for i in source(focus, env)]
            if kind == "allTrue":
                return [all(v is True for v in values)]
            if kind == "anyTrue":
                return [any(v is True for v in values)]
            if kind == "allFalse":
                return [all(v is False for v in values)]
            return [any(v is False for v in values)]
        return run
    return factory


def _fn_resolve(source: Compiled, args: list[Compiled]) -> Compiled:
    # References are not resolved here: the result is empty, as for an unresolvable reference.
    return lambda focus, env: []


def _fn_now(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: [dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")]


def _fn_today(source: Compiled, args: list[Compiled]) -> Compiled:
    return lambda focus, env: [dt.datetime.now(dt.UTC).date().isoformat()]


def _fn_length(source: Compiled, args: list[Compiled]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        value = _singleton(source(focus, env))
        return [len(value)] if isinstance(value, str) else []
    return run


def _fn_matches(source: Compiled, args: list[Compiled]) -> Compiled:
    return _string_function(lambda v, a: bool(_regex(a[0]).search(v)) if isinstance(a[0], str) else None)(
        source, args)


def _fn_replace_matches(source: Compiled, args: list[Compiled]) -> Compiled:
    return _string_function(
        lambda v, a: _regex(a[0]).sub(a[1].replace("$", "\\"), v)
        if isinstance(a[0], str) and isinstance(a[1], str) else None)(source, args)


_FUNCTIONS: dict[str, Callable[[Compiled, list[Compiled]], Compiled]] = {
    "empty": _fn_empty,
    "exists": _fn_exists,
    "where": _fn_where,
    "select": _fn_select,
    "all": _fn_all,
    "not": _fn_not,
    "count": _fn_count,
    "hasValue": _fn_has_value,
    "isDistinct": _fn_distinct_check,
    "distinct": _fn_distinct,
    "first": _fn_first,
    "last": _fn_last,
    "tail": _fn_tail,
    "single": _fn_single,
    "skip": _fn_skip_take(True),
    "take": _fn_skip_take(False),
    "startsWith": _string_function(lambda v, a: v.startswith(a[0]) if isinstance(a[0], str) else None),
    "endsWith": _string_function(lambda v, a: v.endswith(a[0]) if isinstance(a[0], str) else None),
    "contains": _string_function(lambda v, a: a[0] in v if isinstance(a[0], str) else None),
    "indexOf": _string_function(lambda v, a: v.find(a[0]) if isinstance(a[0], str) else None),
    "upper": _string_function(lambda v, a: v.upper()),
    "lower": _string_function(lambda v, a: v.lower()),
    "replace": _string_function(
        lambda v, a: v.replace(a[0], a[1]) if isinstance(a[0], str) and isinstance(a[1], str) else None),
    "substring": _string_function(_substring),
    "matches": _fn_matches,
    "replaceMatches": _fn_replace_matches,
    "length": _fn_length,
    "toInteger": _to_integer,
    "toString": _to_string,
    "trace": _fn_trace,
    "iif": _fn_iif,
    "children": _fn_children,
    "descendants": _fn_descendants,
    "combine": _fn_combine,
    "union": _fn_union,
    "intersect": _fn_intersect,
    "exclude": _fn_exclude,
    "subsetOf": _fn_subset(True),
    "supersetOf": _fn_subset(False),
    "allTrue": _fn_bool_aggregate("allTrue"),
    "anyTrue": _fn_bool_aggregate("anyTrue"),
    "allFalse": _fn_bool_aggregate("allFalse"),
    "anyFalse": _fn_bool_aggregate("anyFalse"),
    "resolve": _fn_resolve,
    "now": _fn_now,
    "today": _fn_today,
}


def evaluate_invariant(compiled: Compiled, context: Any, resource: Any, root: Any) -> bool | None:
    """True/False for a passed/failed invariant, None when it cannot be decided."""
    env = Env(resource, root, context)
    try:
        result = compiled([context], env)
    except (EvalError, TypeError, ValueError, ArithmeticError):
        return None
    if not result:
        return True  # an empty result does not fail an invariant
    try:
        value = to_bool(result)
    except EvalError:
        return None
    return value is not False


# ------------------------------------------------------------------------------------------
# Static analysis: which children of the context node can change the result
# ------------------------------------------------------------------------------------------

_ITERATING = frozenset({"where", "select", "all", "exists", "repeat", "iif"})
_NO_INPUT = frozenset({"now", "today"})


class _Ineligible(Exception):
    pass


def context_names(text: str) -> frozenset[str] | None:
    """The element names the expression reads directly from its context node, or None.

    When an expression reads nothing else from its context (no ``$this``, ``%resource``,
    ``children()``... at the top level), its result on a node that has none of these elements is
    the same as on an empty node, so it can be computed once and reused.
    """
    try:
        return frozenset(_names(parse(text), True))
    except (_Ineligible, Unsupported):
        return None


def _names(node: tuple[Any, ...], at_context: bool) -> set[str]:
    kind = node[0]
    if kind in ("lit", "empty", "special"):
        return set()
    if kind == "this":
        if at_context:
            raise _Ineligible
        return set()
    if kind == "var":
        if node[1] in ("resource", "rootResource", "context"):
            raise _Ineligible
        return set()
    if kind == "member":
        if node[1] is None:
            return {node[2]} if at_context else set()
        return _names(node[1], at_context)
    if kind in ("index",):
        return _names(node[1], at_context) | _names(node[2], at_context)
    if kind in ("neg", "is", "as"):
        return _names(node[1], at_context)
    if kind == "op":
        return _names(node[2], at_context) | _names(node[3], at_context)
    if kind == "fn":
        target, name, args = node[1], node[2], node[3]
        if target is None:
            if at_context and name not in _NO_INPUT:
                raise _Ineligible
            found: set[str] = set()
        else:
            found = _names(target, at_context)
        if name in ("is", "as", "ofType"):
            return found
        args_at_context = at_context and name not in _ITERATING
        for arg in args:
            found |= _names(arg, args_at_context)
        return found
    raise _Ineligible
