"""Hostile FHIR-shaped requests on /fhir, on both databases (strategies in tests/support/fhir_fuzz.py):
never a 5xx, every 4xx an OperationOutcome with issue severity and code, and an answer within the
client's timeout (a hang fails as httpx.ReadTimeout). A bounded, derandomised run here; the long run
is ``bench/fuzz_http.py`` (``FHIR_FUZZ_EXAMPLES`` raises the count here too)."""

from __future__ import annotations

import os

import httpx
from hypothesis import HealthCheck, given, settings

from tests.conftest import Fhir
from tests.support.fhir_fuzz import FuzzRequest, fhir_requests, problems, seed, send

EXAMPLES = int(os.environ.get("FHIR_FUZZ_EXAMPLES", "40"))
TIMEOUT = httpx.Timeout(30.0)  # an answer slower than this is a hang


def test_hostile_fhir_requests_get_an_operation_outcome_and_never_a_5xx(fhir: Fhir) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        seed(client, fhir.live.url)

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request=fhir_requests())
        def answer_is_sound(request: FuzzRequest) -> None:
            response = send(client, fhir.live.url, request)
            found = problems(request, response)
            assert not found, f"{request}\n{found}"

        answer_is_sound()
