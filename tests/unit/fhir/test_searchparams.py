"""The compiled search-parameter expressions agree with the FHIRPath engine, and the indexer
produces the rows search relies on."""

from __future__ import annotations

import json
from pathlib import Path

import fhirpathpy
import pytest
from fhirpathpy.models import models

from carnet.fhir.indexer import index_rows, split_reference
from carnet.fhir.searchparams import params_for

EXAMPLES = sorted((Path(__file__).parents[2] / "fixtures" / "fhir-r4-examples").glob("*/*.json"))


def _normal(values: list[object]) -> set[str]:
    """Compare as sets (FHIRPath unions drop duplicates), decimals as numbers."""
    return {json.dumps(v, sort_keys=True, default=float) for v in values}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_compiled_expressions_match_fhirpath(path: Path) -> None:
    resource = json.loads(path.read_text())
    compared = 0
    for param in params_for(resource["resourceType"]).values():
        if "resolve()" in param.expression:
            continue  # fhirpathpy does not implement resolve(); covered by the search tests
        try:
            expected = fhirpathpy.evaluate(resource, param.expression, {}, models["r4"])
        except ValueError:
            continue  # fhirpathpy insists on singletons for 'as'; the spec's expressions do not
        got = param.extract(resource)
        assert _normal(got) == _normal(expected), param.code
        compared += 1
    assert compared > 0


def test_patient_index_rows() -> None:
    rows = index_rows({"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1980",
                       "name": [{"family": "Lefèvre", "given": ["Émilie"]}],
                       "generalPractitioner": [{"reference": "Practitioner/d1"}]})
    strings = {(r["param"], r["value"]) for r in rows["string"]}
    assert ("family", "lefevre") in strings
    assert ("given", "emilie") in strings
    assert {(r["param"], r["code"]) for r in rows["token"]} >= {("gender", "female")}
    refs = {(r["param"], r["target_type"], r["target_id"]) for r in rows["reference"]}
    assert ("general-practitioner", "Practitioner", "d1") in refs


def test_split_reference() -> None:
    assert split_reference("Patient/1") == ("Patient", "1", None)
    assert split_reference("Patient/1/_history/2") == ("Patient", "1", None)
    assert split_reference("http://x.org/fhir/Patient/1") == ("Patient", "1", "http://x.org/fhir/Patient/1")
    assert split_reference("urn:uuid:abc") == (None, None, "urn:uuid:abc")
    assert split_reference("#contained") == (None, None, None)
