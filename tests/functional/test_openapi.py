"""The OpenAPI document of the endpoints outside /fhir (``GET /openapi.json``): every route the
application mounts is in it with each of its methods, and it describes no route that is not there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from carnet.api.openapi import OPERATIONS, route_operations
from carnet.app import create_app
from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade
from tests.conftest import LiveServer


def _app(tmp_path: Path, **extra: object) -> object:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}",
                        secret_key="test-key-not-secret", **extra)
    engine = make_engine(settings)
    upgrade(engine)
    engine.dispose()
    return create_app(settings)


@pytest.mark.parametrize("psc", [False, True], ids=["default-methods", "with-pro-sante-connect"])
def test_every_route_outside_fhir_is_described_with_each_of_its_methods(tmp_path: Path, psc: bool) -> None:
    extra = ({"psc_issuer": "http://127.0.0.1:1", "psc_client_id": "carnet", "psc_client_secret": "s3cret",
              "signin_methods": "development,patient,psc"} if psc else {})
    app = _app(tmp_path, **extra)
    mounted = route_operations(app.routes)  # type: ignore[attr-defined]
    assert "/ledger/entries" in mounted and "/fhir" not in mounted and "/oauth/token" in mounted
    assert ("/oauth/psc/callback" in mounted) is psc
    missing = {(path, m) for path, methods in mounted.items() for m in methods
               if m not in OPERATIONS.get(path, {})}
    assert not missing, f"routes without an OpenAPI operation: {sorted(missing)}"
    if psc:  # every route the document declares is mounted in this configuration
        stale = {(path, m) for path, ops in OPERATIONS.items() for m in ops
                 if m not in mounted.get(path, set())}
        assert not stale, f"OpenAPI operations without a route: {sorted(stale)}"


def test_the_document_is_served_and_every_reference_and_path_parameter_resolves(live: LiveServer) -> None:
    r = httpx.get(live.url + "/openapi.json", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["servers"] == [{"url": live.settings.public_base_url}]
    assert doc["paths"]["/oauth/token"]["post"]["requestBody"]["content"].keys() == {
        "application/x-www-form-urlencoded"}
    assert not any(p == "/fhir" or (p.startswith("/fhir/") and "well-known" not in p) for p in doc["paths"])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs and refs <= doc["components"]["schemas"].keys()  # every reference resolves
    for path, ops in doc["paths"].items():
        named = set(re.findall(r"\{(\w+)\}", path))
        for op in ops.values():
            assert op["responses"] and op["summary"]
            assert named == {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}, path
