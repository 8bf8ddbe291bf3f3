"""The transparency log's whole-number parameters: a value the databases cannot hold, or digits
that are not ASCII, are a 400 with the log's JSON error (they answered 500: SQLite's INTEGER
overflow, and ``int("²")`` after ``str.isdigit``). The inputs are those schemathesis and the
OpenAPI document's bounds lead to."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer


@pytest.mark.parametrize("query", [
    "/ledger/checkpoints?after=9999999999999999999",
    "/ledger/entries?start=9999999999999999998&end=9999999999999999999",
    "/ledger/proof/inclusion?size=9223372036854775808&index=0",
    "/ledger/proof/consistency?old=1&new=9223372036854775808",
    "/ledger/checkpoints?after=%C2%B2",  # "²"
    "/ledger/entries?start=0&end=%C2%B9%C2%B2",  # "¹²"
])
def test_a_whole_number_out_of_range_or_not_ascii_is_a_400(live: LiveServer, query: str) -> None:
    r = httpx.get(live.url + query, timeout=30)
    assert r.status_code == 400, r.text
    assert "entier positif" in r.json()["error"] and "whole number" in r.json()["error"]


def test_the_largest_whole_number_is_taken(live: LiveServer) -> None:
    r = httpx.get(live.url + "/ledger/checkpoints?after=9223372036854775807", timeout=30)
    assert r.status_code == 200 and r.json() == {"checkpoints": []}
    r = httpx.get(live.url + "/ledger/entries?start=9223372036854775806&end=9223372036854775807", timeout=30)
    assert r.status_code == 200 and r.json() == {"entries": []}
