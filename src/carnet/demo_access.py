"""Who may read the demo records (DICAH), set the way a patient and a hospital would:

- every adult patient with an INS names the libéral physician as médecin traitant;
- every record has a care team with the libéral nurse and pharmacist and the salaried physician;
- the first adult patient blocks the salaried physician (in the care team, and refused all the same)
  and authorises the salaried dentist;
- the second adult patient opposes emergency access.

So that ``carnet token --as practitioner:<national id>`` of these professionals shows the rules at
work on the demo data (README, "Access control").
"""

from __future__ import annotations

from typing import Any

from carnet.auth.principal import Principal
from carnet.demo_people import DemoDirectory, DemoIdentity
from carnet.directory import keys
from carnet.fhir import jsonio
from carnet.policy.consents import consent as _consent


def roles(directory: DemoDirectory) -> dict[str, str]:
    """``"<profession>/<L|S>"`` → ``Practitioner/<id>`` (the directory lists a libéral and a salaried
    practitioner of each profession, in this order)."""
    out = {}
    for n, code in enumerate(keys.professions()):
        out[f"{code}/L"] = directory.performers[2 * n]
        out[f"{code}/S"] = directory.performers[2 * n + 1]
    return out


def grant(router: Any, principal: Principal, identities: list[DemoIdentity], directory: DemoDirectory) -> int:
    """Write the demo records' access rules; answers how many resources were written."""
    from carnet.fhir.router import FhirRequest

    who = roles(directory)

    def call(method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None) -> Any:
        resp = router.handle(FhirRequest(method, path, query or [], {},
                                         jsonio.dumps(body) if body is not None else None), principal)
        if resp.status not in (200, 201):
            raise RuntimeError(f"demo access step {method} {path} refused: {resp.json_bytes()[:500]!r}")
        return jsonio.loads(resp.json_bytes())

    entries: list[dict[str, Any]] = []
    adults = 0
    for identity in identities:
        if not identity.carries_ins:
            continue
        found = call("GET", "Patient", query=[("identifier", f"urn:oid:{identity.oid}|{identity.matricule}")])
        for e in found.get("entry") or []:
            patient = e["resource"]
            pid = patient["id"]
            if not identity.minor:
                patient["generalPractitioner"] = [{"reference": who["10/L"]}]
                call("PUT", f"Patient/{pid}", patient)
            entries.append({"resource": {
                "resourceType": "CareTeam", "status": "active", "name": "Équipe de soins",
                "subject": {"reference": f"Patient/{pid}"},
                "participant": [{"member": {"reference": who[k]}} for k in ("60/L", "21/L", "10/S")]},
                "request": {"method": "POST", "url": "CareTeam"}})
            if not identity.minor:
                adults += 1
                if adults == 1:
                    for body in (_consent(pid, "deny", who["10/S"]), _consent(pid, "permit", who["40/S"])):
                        entries.append({"resource": body, "request": {"method": "POST", "url": "Consent"}})
                elif adults == 2:
                    entries.append({"resource": _consent(pid, "deny", purpose="ETREAT"),
                                    "request": {"method": "POST", "url": "Consent"}})
    if entries:
        call("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return len(entries)


CAST = (
    ("10/L", "médecin traitant de chaque adulte", "every adult's médecin traitant"),
    ("60/L", "infirmier, équipe de soins", "nurse, care team"),
    ("21/L", "pharmacien, équipe de soins", "pharmacist, care team"),
    ("10/S", "médecin bloqué par « patient »", "physician blocked by 'patient'"),
    ("40/S", "chirurgien-dentiste autorisé par « patient »", "dentist authorised by 'patient'"),
)


def cast(directory: DemoDirectory) -> list[tuple[str, str, str]]:
    """(name, French role, English role) of the demo professionals the README's tour uses; the
    médecin traitant is also the Centre 15 regulating doctor (the development provider's
    « régulation (Centre 15) » choice)."""
    who = roles(directory)
    names = {f"Practitioner/{e['resource']['id']}": e["resource"] for e in directory.bundle["entry"]
             if e["resource"]["resourceType"] == "Practitioner"}
    from carnet.auth.people import display_of

    return [(display_of(names[who[key]]), fr, en) for key, fr, en in CAST]
