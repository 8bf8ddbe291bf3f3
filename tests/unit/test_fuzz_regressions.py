"""Inputs that broke a parser under fuzzing (``bench/fuzz/``), each kept as it was found: the exact
input, what it must give now, and, where a server was reached, the answer over HTTP on both
databases."""

from __future__ import annotations

from carnet.fhir.values import number_range
from tests.conftest import Fhir

# -- numbers whose exponent is beyond the decimal context ------------------------------------------
# number_range("1e1000001") raised decimal.Overflow (and "1e-999999999" InvalidOperation) from the
# implicit precision's half unit: a search on a number or quantity parameter answered 500, and so
# did the indexing of a resource holding such a value.


def test_a_number_beyond_the_decimal_range_is_not_a_number() -> None:
    for text in ("1e1000001", "1e-999999999", "9e999999999999999999"):
        assert number_range(text) is None
    assert number_range("1e999999") == (float("inf"), float("inf"), float("inf"))


def test_a_search_on_a_number_beyond_the_decimal_range_is_refused(fhir: Fhir) -> None:
    for query in ("Observation?value-quantity=1e1000001", "RiskAssessment?probability=gt1e-999999999"):
        r = fhir.get(query)
        assert r.status_code == 400, (query, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"


def test_a_resource_holding_such_a_number_is_stored(fhir: Fhir) -> None:
    body = (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"},'
            b' "valueQuantity": {"value": 1e1000001, "unit": "kg"}}')
    r = fhir.post("Observation", content=body)
    assert r.status_code in (201, 400, 422), (r.status_code, r.text)
    if r.status_code == 201:
        assert fhir.get(f"Observation/{r.json()['id']}").status_code == 200
