"""The Consent resources a patient writes to decide who reads their record (docs/access.md)."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def consent(pid: str, kind: str, actor: str | None = None, purpose: str | None = None) -> dict[str, Any]:
    """An active privacy Consent of ``Patient/pid``: ``permit`` or ``deny`` one professional
    (``actor``, a reference), or with ``purpose="ETREAT"`` and no actor, the opposition to
    emergency access."""
    provision: dict[str, Any] = {"type": kind}
    if actor:
        provision["actor"] = [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": actor}}]
    if purpose:
        provision["purpose"] = [{"system": ACT_REASON, "code": purpose}]
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTIN"}]},
            "patient": {"reference": f"Patient/{pid}"}, "provision": provision}


def actor_of(resource: dict[str, Any]) -> str | None:
    for actor in (resource.get("provision") or {}).get("actor") or []:
        ref = (actor.get("reference") or {}).get("reference")
        if ref:
            return str(ref)
    return None


def is_emergency_opposition(resource: dict[str, Any]) -> bool:
    provision = resource.get("provision") or {}
    return (provision.get("type") == "deny" and not provision.get("actor")
            and any(p.get("code") == "ETREAT" for p in provision.get("purpose") or []))
