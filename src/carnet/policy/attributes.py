"""Access attributes of a stored resource: what the read predicates test without opening its JSON.

A DocumentReference carries its type code, its visibility bits (TRE_A07 codes in ``securityLabel``)
and the professional who published it; a Binary the same as the DocumentReference its
``securityContext`` names. The write path (carnet.fhir.store) puts them in the ``resources`` row.
"""

from __future__ import annotations

from enum import IntFlag
from typing import Any

from carnet.auth.principal import Kind, Principal

VISIBILITY_SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                     "TRE-A07-StatutVisibiliteDocument")
VISIBILITY_OID = "urn:oid:1.2.250.1.213.1.1.4.13"


class Visibility(IntFlag):
    """Bits of ``resources.visibility``."""

    NONE = 0
    MASQUE_PS = 1  # hidden from professionals but its author and full-rights ones
    INVISIBLE_PATIENT = 2  # hidden from the patient and representatives
    INVISIBLE_REPRESENTANTS_LEGAUX = 4  # hidden from a minor's representatives
    PATIENT_LIFTED = 8  # INVISIBLE_PATIENT was lifted once: it may never be set again


CODES = {"MASQUE_PS": Visibility.MASQUE_PS, "INVISIBLE_PATIENT": Visibility.INVISIBLE_PATIENT,
         "INVISIBLE_REPRESENTANTS_LEGAUX": Visibility.INVISIBLE_REPRESENTANTS_LEGAUX}


def labels_of(resource: dict[str, Any]) -> Visibility:
    """The TRE_A07 codes among a resource's security labels (system checked when given)."""
    found = Visibility.NONE
    for label in resource.get("securityLabel") or (resource.get("meta") or {}).get("security") or []:
        codings = label.get("coding") if isinstance(label, dict) and "coding" in label else [label]
        for coding in codings or []:
            if not isinstance(coding, dict):
                continue
            code, system = coding.get("code"), coding.get("system")
            if code in CODES and system in (None, VISIBILITY_SYSTEM, VISIBILITY_OID):
                found |= CODES[code]
    return found


def doc_type_of(resource: dict[str, Any]) -> str | None:
    for coding in (resource.get("type") or {}).get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"])[:64]
    return None


def author_of(resource: dict[str, Any], principal: Principal | None) -> str | None:
    """The publishing professional: the caller when a professional publishes, else the first
    literal Practitioner reference among the authors."""
    if principal is not None and principal.kind == Kind.PRACTITIONER and principal.fhir_user:
        return principal.fhir_user[:80]
    for author in resource.get("author") or []:
        ref = author.get("reference") if isinstance(author, dict) else None
        if isinstance(ref, str) and ref.startswith("Practitioner/"):
            return ref[:80]
    return None


def document_attributes(resource: dict[str, Any], principal: Principal | None,
                        previous: dict[str, Any] | None) -> dict[str, Any]:
    """The access attributes of a DocumentReference being written (``previous``: the stored row's
    attributes, None for a new document). The author never changes once published."""
    bits = labels_of(resource)
    if previous is not None:
        before = Visibility(previous.get("visibility") or 0)
        if before & Visibility.PATIENT_LIFTED or (
                before & Visibility.INVISIBLE_PATIENT and not bits & Visibility.INVISIBLE_PATIENT):
            bits |= Visibility.PATIENT_LIFTED
    author = previous.get("author") if previous is not None else None
    return {"doc_type": doc_type_of(resource), "visibility": int(bits),
            "author": author or author_of(resource, principal)}


NO_ATTRIBUTES: dict[str, Any] = {"doc_type": None, "visibility": 0, "author": None}


def binary_ids(resource: dict[str, Any]) -> list[str]:
    """Ids of the Binaries a DocumentReference's attachments point at (``…/Binary/<id>``)."""
    ids = []
    for content in resource.get("content") or []:
        url = ((content or {}).get("attachment") or {}).get("url") if isinstance(content, dict) else None
        if isinstance(url, str) and "Binary/" in url:
            rid = url.rsplit("Binary/", 1)[1].split("/", 1)[0].split("?", 1)[0]
            if rid:
                ids.append(rid)
    return ids


def security_context(resource: dict[str, Any]) -> tuple[str, str] | None:
    """The (type, id) a Binary's securityContext names, when it is a literal relative reference."""
    ref = (resource.get("securityContext") or {}).get("reference")
    if isinstance(ref, str) and ref.count("/") >= 1 and not ref.startswith(("urn:", "#")):
        parts = ref.split("/")
        return parts[-2], parts[-1]
    return None
