"""``carnet reindex``: resources stored before an index existed (or whose index rows were lost)
become findable again — search and identity matching — without new versions."""

from __future__ import annotations

from datetime import date

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select

from carnet.cli.main import main
from carnet.db.tables import idx_string, patient_match_keys, resource_versions
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import Traits
from tests.conftest import Fhir


def test_reindex_rebuilds_search_rows_and_match_keys(fhir: Fhir, monkeypatch: pytest.MonkeyPatch) -> None:
    traits = Traits("LEFEBVRE", ("CAMILLE", "ANNE"), date(1990, 6, 2), "female", "59350")
    patient = insfhir.build_patient(traits, matricule=nir.make_matricule("2900659350123"),
                                    oid=nir.OID_INS_NIR_TEST, resource_id="legacy")
    assert fhir.put("Patient/legacy", json=patient).status_code == 201
    fhir.create({"resourceType": "Practitioner", "name": [{"family": "Moreau", "given": ["Luc"]}]})
    engine = fhir.backend.engine
    with engine.connect().execution_options(carnet_write=True) as conn, conn.begin():  # as if stored long ago
        conn.execute(delete(idx_string))
        conn.execute(delete(patient_match_keys))
    assert fhir.search_ids("Patient?family=lefebvre") == []
    assert fhir.search_ids("Practitioner?name=moreau") == []
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
        "resourceType": "Patient", "name": [{"family": "Lefebvre", "given": ["Camille"]}],
        "birthDate": "1990-06-03", "gender": "female"}}]}  # a day off: found through the match keys
    before = fhir.post("Patient/$match", json=body).json().get("entry", [])
    monkeypatch.setenv("CARNET_DATABASE_URL", fhir.backend.url)
    result = CliRunner().invoke(main, ["reindex", "--data", str(fhir.backend.tmp)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "reindexed" in result.output
    assert fhir.search_ids("Patient?family=lefebvre") == ["legacy"]
    assert len(fhir.search_ids("Practitioner?name=moreau")) == 1
    after = fhir.post("Patient/$match", json=body).json()["entry"]
    assert [e["resource"]["id"] for e in after] == ["legacy"]
    assert before == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(resource_versions)).scalar_one() == 2
    # only some types, and an unknown type refused
    result = CliRunner().invoke(main, ["reindex", "--type", "Practitioner", "--data", str(fhir.backend.tmp)])
    assert result.exit_code == 0 and "1 resource(s) reindexed" in result.output
    result = CliRunner().invoke(main, ["reindex", "--type", "Nope", "--data", str(fhir.backend.tmp)])
    assert result.exit_code != 0 and "Nope" in result.output
