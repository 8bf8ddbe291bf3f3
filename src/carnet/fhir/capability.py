"""The CapabilityStatement: generated from what the engine actually implements."""

from __future__ import annotations

from functools import cache
from typing import Any

from carnet import __version__
from carnet.fhir.searchparams import params_for, resource_types

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                "create", "search-type"]
SEARCH_PARAM_DOCS = {
    "string": "default (starts with, case and accent insensitive), :exact, :contains, :missing",
    "token": "code, system|code, |code, system|, :not, :text, :of-type (identifiers), :missing",
    "date": "prefixes eq ne gt lt ge le sa eb ap, partial dates, periods, :missing",
    "reference": "Type/id, id, absolute URL, :Type, :identifier, one-level chains (also evaluated inside "
                 "contained resources), :missing",
    "number": "prefixes eq ne gt lt ge le sa eb ap, implicit precision, :missing",
    "quantity": "[prefix]number|system|code, :missing",
    "uri": "exact, :below, :above, :missing",
}


# Types the server alone writes, searched by a service of their own (carnet.audit.fhir).
SERVER_WRITTEN: dict[str, list[tuple[str, str, str]]] = {
    "AuditEvent": [
        ("patient", "reference", "the record concerned (a patient reads their own and their children's)"),
        ("agent", "reference", "who acted: Practitioner/<id>, Patient/<id>, or kind:subject"),
        ("date", "date", "when it was recorded: eq ge gt le lt"),
        ("action", "token", "C R U D E"),
        ("outcome", "token", "0 success, 4 minor failure, 8 refused, 12 server failure"),
        ("subtype", "token", "the interaction or operation: read, search, create, login, break-glass..."),
    ],
}


def _server_written(rtype: str) -> dict[str, Any]:
    params = [{"name": "_id", "type": "token"}]
    params += [{"name": n, "type": t, "documentation": d} for n, t, d in SERVER_WRITTEN[rtype]]
    return {"type": rtype, "interaction": [{"code": "read"}, {"code": "search-type"}],
            "documentation": "written by the server alone, in the transaction of what it records; served as "
                             "the exact bytes of its leaf in the transparency log (/ledger)",
            "readHistory": False, "updateCreate": False, "conditionalCreate": False,
            "conditionalUpdate": False, "conditionalDelete": "not-supported", "searchParam": params}


@cache
def capability_statement(base_url: str, date: str,
                         operations: tuple[tuple[str, str, str, str], ...] = (),
                         instantiates: tuple[str, ...] = (),
                         guides: tuple[str, ...] = ()) -> dict[str, Any]:
    """``instantiates``: canonical CapabilityStatements whose requirements the server meets (IHE
    actors); ``guides``: implementation guides it follows."""
    types = []
    for rtype in sorted(resource_types()):
        params = [{"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"}]
        params += [{"name": p.code, **({"definition": p.definition} if p.definition else {}),
                    "type": p.type, "documentation": SEARCH_PARAM_DOCS[p.type]}
                   for p in sorted(params_for(rtype).values(), key=lambda p: p.code)]
        ref_params = [p.code for p in params_for(rtype).values() if p.type == "reference"]
        if rtype in SERVER_WRITTEN:
            types.append(_server_written(rtype))
        else:
            types.append({
                "type": rtype,
                "interaction": [{"code": c} for c in INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalUpdate": True,
                "conditionalDelete": "multiple",
                "conditionalRead": "not-supported",
                "referencePolicy": ["literal", "logical"],
                "searchInclude": [f"{rtype}:{c}" for c in sorted(ref_params)] + ["*"],
                "searchRevInclude": ["*"],
                "searchParam": params,
            })
        ops = [{"name": name, "definition": definition or f"{base_url}/OperationDefinition/{rtype}-{name}",
                "documentation": doc} for t, name, definition, doc in operations if t == rtype]
        if ops:
            types[-1]["operation"] = ops
    return {
        "resourceType": "CapabilityStatement",
        "id": "carnet",
        "url": f"{base_url}/metadata",
        "name": "Carnet",
        "title": "Carnet FHIR R4 server",
        "status": "active",
        "experimental": False,
        "date": date,
        "publisher": "Carnet",
        "kind": "instance",
        "software": {"name": "Carnet", "version": __version__},
        "implementation": {"description": "Carnet FHIR R4 server", "url": base_url},
        **({"instantiates": list(instantiates)} if instantiates else {}),
        **({"implementationGuide": list(guides)} if guides else {}),
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search result parameters: _count, _offset, _sort (several keys, -desc), "
                             "_include / _revinclude (:iterate), _summary (count, text, data, false), "
                             "_elements, _total (none, estimate, accurate). GET and POST _search. "
                             "Resources may also be sent as FHIR XML (application/fhir+xml); "
                             "answers are JSON.",
            "resource": types,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        }],
    }
