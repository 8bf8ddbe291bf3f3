"""Reading the Parameters body of a FHIR operation: one way for every operation, with the same
errors (400, an OperationOutcome naming the parameter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carnet.errors import Invalid
from carnet.fhir import jsonio
from carnet.fhir.router import FhirRequest

Params = Mapping[str, list[dict[str, Any]]]


def _both(fr: str, en: str) -> str:
    return f"{fr} / {en}"


def request_body(req: FhirRequest) -> Any:
    """The operation's body, parsed; a missing one is an error."""
    if req.body is None or req.body == b"" or req.body == "":
        raise Invalid(_both("La requête n'a pas de corps : une ressource Parameters est attendue",
                            "The request has no body: a Parameters resource is expected"))
    if isinstance(req.body, bytes | str):
        return jsonio.loads(req.body)
    return req.body


def parameters(body: Any, operation: str) -> dict[str, list[dict[str, Any]]]:
    """The ``parameter`` entries of a Parameters resource, by name."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Invalid(_both(f"{operation} attend une ressource Parameters",
                            f"{operation} takes a Parameters resource"), expression=["resourceType"])
    out: dict[str, list[dict[str, Any]]] = {}
    for i, p in enumerate(body.get("parameter") or []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise Invalid(_both("Paramètre sans nom", "Parameter without a name"),
                          expression=[f"Parameters.parameter[{i}]"])
        out.setdefault(p["name"], []).append(p)
    return out


def one(params: Params, name: str, key: str, kind: type) -> Any:
    """The ``key`` (``valueCode``, ``resource``...) of the parameter ``name``, of type ``kind``;
    None when absent; an error when repeated or of another type."""
    found = params.get(name) or []
    if len(found) > 1:
        raise Invalid(_both(f"Le paramètre « {name} » est répété", f'Parameter "{name}" is repeated'),
                      expression=[name])
    if not found:
        return None
    value = found[0].get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Invalid(_both(f"Le paramètre « {name} » doit porter {key}",
                            f'Parameter "{name}" must carry {key}'), expression=[name])
    return value
