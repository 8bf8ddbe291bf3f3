#!/usr/bin/env python3
"""Fuzz harness of the FHIR search-parameter parser and compiler (``carnet.fhir.search``).

The input is ``Type?query`` (a known resource type, else ``Patient`` and the whole input is the
query), the query read as the HTTP layer reads it (the raw bytes as Latin-1, then ``parse_qsl`` with
blank values kept: what Starlette's ``request.query_params`` gives the router). Properties, beyond
"no unexpected exception":

* a refusal by the parser is ``Invalid``, ``NotSupported`` or ``TooLarge`` (400 or 413), with issues;
* a search the parser accepted never fails later with anything else: the router's statements
  (the probes that choose the driver, the page, the count), compiled under a caller's read
  predicate for referenced resources, either refuse with those same errors or run on SQLite (an
  in-memory database with Carnet's tables) and compile for PostgreSQL, whose text values can hold no
  NUL character.

Run: ``.venv/bin/python bench/fuzz/run.py search`` (or this file with libFuzzer flags).
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import parse_qsl

if __name__ == "__main__":
    from _fuzzing import instrumented

    instrumented("carnet.fhir.search")

from _fuzzing import check_error, fuzz, require
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects import postgresql

from carnet.db.tables import metadata
from carnet.errors import Invalid, NotSupported, TooLarge
from carnet.fhir import search
from carnet.fhir.searchparams import resource_types

ALLOWED = (Invalid, NotSupported, TooLarge)
MAX_COUNT = 1000  # the server's defaults: CARNET_MAX_PAGE_SIZE, CARNET_MAX_SEARCH_TERMS
MAX_TERMS = 100
TYPES = resource_types()
COMPILER = search.Compiler("http://127.0.0.1/fhir")
PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def warm_up() -> None:
    """Load what the first search of each kind loads once (every type's parameters, the structure
    definitions a chain looks up), so that the time limit per input measures the input."""
    from carnet.fhir.searchparams import params_for
    from carnet.fhir.validation.definitions import definitions

    for rtype in TYPES:
        params_for(rtype)
    definitions()
    engine()


@cache
def engine() -> Engine:
    eng = create_engine("sqlite://")
    metadata.create_all(eng)
    return eng


def hide_patients(rtype: str, alias: Any) -> Any:
    """A caller's read predicate for referenced resources (as the DICAH policy gives a professional)."""
    return alias.c.patient_id.is_(None)


def request_of(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    text = data.decode("latin-1")
    rtype, sep, qs = text.partition("?")
    if not sep or rtype not in TYPES:
        rtype, qs = "Patient", text
    return rtype, parse_qsl(qs, keep_blank_values=True)


def _no_nul(stmt: Any) -> None:
    params = stmt.compile(dialect=PG).params
    for name, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            require(not (isinstance(v, str) and "\x00" in v),
                    f"NUL in the value of {name}: PostgreSQL refuses it ({v!r})")


def check(data: bytes) -> None:
    rtype, query = request_of(data)
    try:
        req = search.parse(rtype, query, default_count=20, max_count=MAX_COUNT, max_terms=MAX_TERMS)
    except ALLOWED as exc:
        check_error(exc, ALLOWED, bilingual=False)
        return
    require(req.resource_type == rtype and 0 <= req.count <= MAX_COUNT, "count out of bounds")
    try:
        with search.target_filter(hide_patients):
            statements = []
            candidates = COMPILER.probe_candidates(req)
            if candidates:
                statements.append(COMPILER.probes(req, candidates, 33))
                req.driver = candidates[-1]
                req.driver_rows = 40
            statements += [COMPILER.page(req, []), COMPILER.count(req, [])]
    except ALLOWED as exc:  # a value the compiler cannot read (a bad date, a bad number): still 400
        check_error(exc, ALLOWED, bilingual=False)
        return
    with engine().connect() as conn:
        for stmt in statements:
            conn.execute(stmt).all()
            _no_nul(stmt)


if __name__ == "__main__":
    warm_up()
    fuzz(check)
