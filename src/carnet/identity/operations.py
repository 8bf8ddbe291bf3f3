"""The identity workflow as FHIR operations on Patient instances (see :mod:`carnet.identity.services`).

- ``POST Patient/{id}/$ins-verify``: ask INSi (no body needed).
- ``POST Patient/{id}/$identity-check``: Parameters ``documentType`` (PA passport, CN identity card,
  CS residence permit, LEP family record book + a parent's document for a minor).
- ``POST Patient/{id}/$identity-flag``: Parameters ``flag`` (douteuse | fictive), ``value`` (boolean,
  default true; false clears it).
- ``GET Patient/{id}/$identity-history``: the current status and every transition.
"""

from __future__ import annotations

from carnet.errors import Invalid
from carnet.fhir.parameters import one, parameters, request_body
from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter, Operation
from carnet.fhir.store import Repository
from carnet.identity.services import IdentityService


def register_identity_operations(router: FhirRouter, service: IdentityService) -> None:
    def ins_verify(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        return FhirResponse(200, service.verify(repo, rid))

    def identity_check(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        params = parameters(request_body(req), "Patient/$identity-check")
        doc = one(params, "documentType", "valueCode", str)
        if doc is None:
            raise Invalid("documentType (valueCode: PA, CN, CS or LEP) is required",
                          expression=["documentType"])
        return FhirResponse(200, service.check_document(repo, rid, doc))

    def identity_flag(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        params = parameters(request_body(req), "Patient/$identity-flag")
        flag = one(params, "flag", "valueCode", str)
        if flag is None:
            raise Invalid("flag (valueCode: douteuse or fictive) is required", expression=["flag"])
        present = one(params, "value", "valueBoolean", bool)
        return FhirResponse(200, service.flag(repo, rid, flag, present is not False))

    def identity_history(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        return FhirResponse(200, service.history(repo, rid))

    for name, handler, methods, doc in (
            ("$ins-verify", ins_verify, ("POST",), "ask the INS teleservice (INSi); on a match record I and "
                                                   "take INSi's strict traits"),
            ("$identity-check", identity_check, ("POST",), "record that a high-trust identity document "
                                                           "was checked (C): documentType PA, CN, CS, LEP"),
            ("$identity-flag", identity_flag, ("POST",), "set or clear the doubtful / fictitious flag"),
            ("$identity-history", identity_history, ("GET",), "the identity status and every transition")):
        router.add_operation(Operation(name, "Patient", True, handler, methods, doc))
