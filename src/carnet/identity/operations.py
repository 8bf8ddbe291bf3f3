"""The identity workflow as FHIR operations on Patient instances (see :mod:`carnet.identity.services`).

- ``POST Patient/{id}/$ins-verify``: ask INSi (no body needed).
- ``POST Patient/{id}/$identity-check``: Parameters ``documentType`` (PA passport, CN identity card,
  CS residence permit, LEP family record book + a parent's document for a minor).
- ``POST Patient/{id}/$identity-flag``: Parameters ``flag`` (douteuse | fictive), ``value`` (boolean,
  default true; false clears it).
- ``GET Patient/{id}/$identity-history``: the current status and every transition.
"""

from __future__ import annotations

from typing import Any

from carnet.errors import Invalid
from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter, Operation
from carnet.fhir.store import Repository
from carnet.identity.services import IdentityService


def parameters(req: FhirRequest) -> dict[str, Any]:
    """The ``name -> value[x]`` of a Parameters body (empty when there is no body)."""
    body = req.body
    if body is None or body == b"":
        return {}
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Invalid("the operation takes a Parameters resource", expression=["resourceType"])
    out: dict[str, Any] = {}
    for i, p in enumerate(body.get("parameter") or []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            where = f"Parameters.parameter[{i}]"
            raise Invalid(f"{where} needs a name", expression=[where])
        values = [v for k, v in p.items() if k.startswith("value")]
        out[p["name"]] = values[0] if values else p.get("resource")
    return out


def register_identity_operations(router: FhirRouter, service: IdentityService) -> None:
    def ins_verify(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        return FhirResponse(200, service.verify(repo, rid))

    def identity_check(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        doc = parameters(req).get("documentType")
        if not isinstance(doc, str | dict):
            raise Invalid("documentType (code) is required", expression=["Parameters.parameter"])
        code = doc if isinstance(doc, str) else str(doc.get("code", ""))
        return FhirResponse(200, service.check_document(repo, rid, code))

    def identity_flag(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        params = parameters(req)
        flag = params.get("flag")
        if not isinstance(flag, str):
            raise Invalid("flag (douteuse or fictive) is required", expression=["Parameters.parameter"])
        present = params.get("value", True)
        if not isinstance(present, bool):
            raise Invalid("value must be a boolean (valueBoolean): true sets the flag, false clears it",
                          expression=["Parameters.parameter"])
        return FhirResponse(200, service.flag(repo, rid, flag, present))

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
