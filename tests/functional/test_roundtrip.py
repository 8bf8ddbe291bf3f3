"""Every (non-Bundle) FHIR spec example survives PUT then GET unchanged, apart from
meta.versionId and meta.lastUpdated: narrative, extensions, contained resources, decimals as
written (``1.50``), base64 data."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, Fhir

# AuditEvents are written by the server alone (carnet.audit.fhir): a client's PUT is refused, as
# tests/functional/test_audit_api.py shows.
EXAMPLES = sorted(p for p in (FIXTURES / "fhir-r4-examples").glob("*/*.json")
                  if p.parent.name not in ("Bundle", "AuditEvent"))


def exact(raw: bytes | str) -> Any:
    """Parse keeping every number's text, so 1.50 and 1.5 differ."""
    return json.loads(raw, parse_float=lambda s: ("decimal", s), parse_int=lambda s: ("int", s))


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def test_there_are_examples_to_check() -> None:
    assert len(EXAMPLES) > 100


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_round_trips_unchanged(fhir: Fhir, path: Path) -> None:
    raw = path.read_bytes()
    original = exact(raw)
    url = f"{original['resourceType']}/{original['id']}"
    r = fhir.put(url, content=raw)
    assert r.status_code == 201, r.text
    # Binary answers its raw content unless the client asks for the FHIR resource (FHIR REST, Binary)
    got = fhir.get(url, headers={"Accept": "application/fhir+json"})
    assert got.status_code == 200
    stored = exact(got.content)
    assert stored["meta"]["versionId"] == "1"
    assert without_server_meta(stored) == without_server_meta(original)


def test_decimal_text_is_kept_by_the_comparison() -> None:
    assert exact(b'{"v": 1.50}') != exact(b'{"v": 1.5}')
    assert Decimal("1.50") == Decimal("1.5")  # which is why a numeric comparison would not do
