"""SMART App Launch v2 scopes: parsing, and what a client may be granted.

A clinical scope is ``<context>/<Type|*>.<permissions>``: context ``patient`` (the record of the
token's patient), ``user`` (what the signed-in user may see) or ``system`` (a backend service);
permissions are a subset of ``cruds`` in that order (v1 ``read``, ``write`` and ``*`` are read as
``rs``, ``cud`` and ``cruds``). Other scopes: ``openid``, ``fhirUser``, ``profile``, ``launch``,
``launch/patient``, ``offline_access``, ``online_access``.

What is granted is the intersection of what the client asked and what it is registered for:
``patient/DocumentReference.rs`` asked by a client registered for ``patient/*.cruds`` gives
``patient/DocumentReference.rs``; ``user/*.cruds`` asked by a client registered for
``user/Observation.rs`` gives ``user/Observation.rs``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PERMISSIONS = "cruds"
CONTEXTS = ("patient", "user", "system")
OTHER_SCOPES = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"}
)
_CLINICAL = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class ClinicalScope:
    context: str
    resource_type: str  # a type or "*"
    permissions: str  # ordered subset of "cruds"

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.permissions}"


def parse_clinical(scope: str) -> ClinicalScope | None:
    """A clinical scope, or None when ``scope`` is not one (or has permissions out of order)."""
    match = _CLINICAL.match(scope)
    if not match:
        return None
    context, rtype, perms = match.groups()
    perms = _V1.get(perms, perms)
    if (
        not perms
        or any(p not in PERMISSIONS for p in perms)
        or perms != "".join(p for p in PERMISSIONS if p in perms)
    ):
        return None
    return ClinicalScope(context, rtype, perms)


def split(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split() if s]


def is_known(scope: str) -> bool:
    return scope in OTHER_SCOPES or parse_clinical(scope) is not None


def _narrow(asked: ClinicalScope, registered: Iterable[ClinicalScope]) -> ClinicalScope | None:
    """The part of ``asked`` the registered scopes cover (the most permissions one of them allows)."""
    best = ""
    for reg in registered:
        if reg.context != asked.context or reg.resource_type not in ("*", asked.resource_type):
            continue
        perms = "".join(p for p in PERMISSIONS if p in asked.permissions and p in reg.permissions)
        if len(perms) > len(best):
            best = perms
    return ClinicalScope(asked.context, asked.resource_type, best) if best else None


def grant(
    asked: Iterable[str], registered: Iterable[str], *, contexts: Iterable[str] = CONTEXTS
) -> list[str]:
    """The scopes granted: each asked scope narrowed to what the client's registration covers,
    keeping only the clinical ``contexts`` allowed for this kind of sign-in. Unknown scopes are dropped."""
    registered = list(registered)
    reg_clinical = [c for c in (parse_clinical(s) for s in registered) if c is not None]
    reg_other = {s for s in registered if s in OTHER_SCOPES}
    allowed = set(contexts)
    out: list[str] = []
    for scope in asked:
        clinical = parse_clinical(scope)
        if clinical is None:
            if scope in reg_other and scope not in out:
                out.append(scope)
            continue
        if clinical.context not in allowed:
            continue
        narrowed = _narrow(clinical, reg_clinical)
        if narrowed is not None and str(narrowed) not in out:
            out.append(str(narrowed))
    return out


def supported() -> list[str]:
    """The scopes advertised in the discovery documents."""
    return [
        "openid",
        "fhirUser",
        "profile",
        "launch/patient",
        "offline_access",
        "online_access",
        "patient/*.cruds",
        "patient/*.rs",
        "user/*.cruds",
        "user/*.rs",
        "system/*.cruds",
        "system/*.rs",
    ]
