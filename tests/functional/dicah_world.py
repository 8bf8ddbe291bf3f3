"""A readable world for access-control scenarios: patients with qualified identities, professionals
of each profession, care teams, consents, blocks, representatives and documents, built over real
HTTP by the operator (system) and then read through tokens issued by the server itself.

    world = World(fhir)
    alice = world.patient("alice")
    gp = world.professional("gp", "10")
    world.treating(alice, gp)
    doc = world.document(alice, "11502-2", labels=("MASQUE_PS",))
    assert world.sees(gp, f"DocumentReference/{doc}")
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx

from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.directory.keys import luhn_check_digit
from carnet.documents.valuesets import CLASS_SYSTEM
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import Traits
from carnet.policy.attributes import VISIBILITY_SYSTEM
from tests.conftest import Fhir

DEMO = nir.OID_INS_NIR_DEMO
LOINC = "http://loinc.org"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
EMERGENCY = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
NORMAL = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}
PDF = b"%PDF-1.4\n% a small document\n%%EOF\n"
# document types and their class (ASS_X04): a lab report is a "compte rendu" (10), a prescription 42,
# reimbursement data 60 (physicians only in the default matrix)
LAB_REPORT, PRESCRIPTION, VACCINATION = "11502-2", "57833-6", "87273-9"


@dataclass
class Actor:
    name: str
    kind: Kind
    id: str
    national_id: str = ""
    profession: str | None = None
    matricule: str = ""
    strong: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{'Patient' if self.kind == Kind.PATIENT else 'Practitioner'}/{self.id}"


_MATRICULES = itertools.count(uuid.uuid4().int % 999)


class World:
    def __init__(self, fhir: Fhir) -> None:
        self.fhir = fhir
        self.issuer = fhir.live.app.state.issuer
        self.insi_path = fhir.backend.settings.data_dir / "insi" / "identities.json"
        self.identities: list[dict[str, Any]] = []
        self.count = 0

    # -- people -------------------------------------------------------------------------------
    def _matricule(self, born: date, female: bool) -> str:
        """A matricule no other patient of this test process has: worlds accumulate in one database
        across a property test's examples, and two patients sharing an INS would share rights
        (a representative is recognised by the INS a minor's RelatedPerson carries)."""
        self.count += 1
        order = next(_MATRICULES) % 999 + 1  # each test empties the database: 999 per test is plenty
        first13 = f"{2 if female else 1}{born.year % 100:02d}{born.month:02d}76540{order:03d}"
        return nir.make_matricule(first13)

    def patient(self, name: str, *, born: date = date(1980, 5, 17), qualified: bool = True,
                female: bool = True) -> Actor:
        matricule = self._matricule(born, female)
        family = f"{name.upper()}-{uuid.uuid4().hex[:6].upper()}"
        traits = Traits(family, (name.upper(),), born, "female" if female else "male", "76540")
        resource = insfhir.build_patient(traits, matricule=matricule, oid=DEMO,
                                         status=insfhir.IdentityStatus.QUAL)
        pid = self.fhir.create(resource)["id"]
        if qualified:
            self.identities.append({"matricule": matricule, "oid": DEMO, "traits": {
                "birth_family_name": family, "birth_given_names": [name.upper()],
                "birth_date": born.isoformat(), "sex": traits.sex, "birthplace_code": "76540"}})
            self.insi_path.parent.mkdir(parents=True, exist_ok=True)
            self.insi_path.write_text(json.dumps({"identities": self.identities}), encoding="utf-8")
            for path, body in ((f"Patient/{pid}/$ins-verify", None), (f"Patient/{pid}/$identity-check", {
                    "resourceType": "Parameters", "parameter": [{"name": "documentType", "valueCode": "PA"}]})):
                r = self.fhir.post(path, json=body)
                assert r.status_code == 200, r.text
        return Actor(name, Kind.PATIENT, pid, matricule=matricule)

    def minor(self, name: str, parent: Actor, *, born: date | None = None) -> Actor:
        child = self.patient(name, born=born or date(date.today().year - 8, 2, 3))
        self.fhir.create({"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{child.id}"},
                          "relationship": [{"coding": [{
                              "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}],
                          "identifier": [{"system": f"urn:oid:{DEMO}", "value": parent.matricule}]})
        return child

    def professional(self, name: str, profession: str, *, strong: bool = True) -> Actor:
        base = "10" + f"{uuid.uuid4().int % 10**8:08d}"
        rpps = base + luhn_check_digit(base)
        pid = self.fhir.create({"resourceType": "Practitioner", "active": True,
                                "identifier": [{"system": RPPS, "value": "8" + rpps}],
                                "name": [{"family": name.upper(), "given": ["Test"]}]})["id"]
        return Actor(name, Kind.PRACTITIONER, pid, national_id="8" + rpps, profession=profession,
                     strong=strong)

    # -- the record's rules ---------------------------------------------------------------------
    def treating(self, patient: Actor, doctor: Actor) -> None:
        current = self.fhir.get(f"Patient/{patient.id}").json()
        current["generalPractitioner"] = [{"reference": doctor.ref}]
        r = self.fhir.put(f"Patient/{patient.id}", json=current)
        assert r.status_code == 200, r.text

    def care_team(self, patient: Actor, *members: Actor, status: str = "active") -> str:
        return str(self.fhir.create({
            "resourceType": "CareTeam", "status": status, "name": "Équipe de soins",
            "subject": {"reference": f"Patient/{patient.id}"},
            "participant": [{"member": {"reference": m.ref}} for m in members]})["id"])

    def consent(self, patient: Actor, actor: Actor | None, kind: str, *, full: bool = False,
                purpose: str | None = None, by: Actor | None = None) -> httpx.Response:
        provision: dict[str, Any] = {"type": kind}
        if actor is not None:
            provision["actor"] = [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                "reference": {"reference": actor.ref}}]
        if full:
            provision["securityLabel"] = [{"system": VISIBILITY_SYSTEM, "code": "MASQUE_PS"}]
        if purpose:
            provision["purpose"] = [{"system": EMERGENCY, "code": purpose}]
        body = {"resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
                "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                           "code": "OPTIN"}]},
                "patient": {"reference": f"Patient/{patient.id}"}, "provision": provision}
        if by is None:
            return self.fhir.post("Consent", json=body)
        with self.client(by) as client:
            return client.post("Consent", json=body)

    def authorise(self, patient: Actor, pro: Actor, *, full: bool = False) -> None:
        r = self.consent(patient, pro, "permit", full=full)
        assert r.status_code == 201, r.text

    def block(self, patient: Actor, pro: Actor) -> None:
        r = self.consent(patient, pro, "deny")
        assert r.status_code == 201, r.text

    def oppose_emergency(self, patient: Actor) -> None:
        r = self.consent(patient, None, "deny", purpose="ETREAT")
        assert r.status_code == 201, r.text

    def document(self, patient: Actor, type_code: str = LAB_REPORT, *, labels: tuple[str, ...] = (),
                 author: Actor | None = None, class_code: str | None = None, by: Actor | None = None) -> str:
        body: dict[str, Any] = {
            "resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            "type": {"coding": [{"system": LOINC, "code": type_code}]},
            "subject": {"reference": f"Patient/{patient.id}"},
            "securityLabel": [NORMAL, *({"coding": [{"system": VISIBILITY_SYSTEM, "code": c}]} for c in labels)],
            "content": [{"attachment": {"contentType": "application/pdf",
                                        "data": base64.b64encode(PDF + uuid.uuid4().bytes).decode()}}]}
        if class_code:
            body["category"] = [{"coding": [{"system": CLASS_SYSTEM, "code": class_code}]}]
        if author is not None:
            body["author"] = [{"reference": author.ref}]
        publisher = by or author
        if publisher is None:
            r = self.fhir.post("DocumentReference", json=body)
        else:
            with self.client(publisher) as client:
                r = client.post("DocumentReference", json=body)
        assert r.status_code in (200, 201), r.text
        return str(r.json()["id"])

    # -- acting as someone ------------------------------------------------------------------------
    def principal(self, who: Actor, *, mode: AccessMode = AccessMode.NORMAL, patient: str | None = None,
                  reason: str | None = None) -> Principal:
        if who.kind == Kind.PATIENT:
            return Principal(Kind.PATIENT, who.matricule, frozenset({"patient/*.cruds"}),
                             fhir_user=who.ref, patient=who.id, strong_auth=True)
        return Principal(Kind.PRACTITIONER, who.national_id, frozenset({"user/*.cruds"}),
                         profession=who.profession, fhir_user=who.ref, strong_auth=who.strong,
                         access_mode=mode, patient=patient, reason=reason)

    def token(self, who: Actor, **kw: Any) -> str:
        return str(self.issuer.issue(self.principal(who, **kw)))

    def client(self, who: Actor, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.fhir.base + "/", timeout=30, headers={
            "Authorization": f"Bearer {self.token(who, **kw)}", "Content-Type": "application/fhir+json"})

    def sees(self, who: Actor, path: str) -> bool:
        with self.client(who) as c:
            r = c.get(path)
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200

    def search(self, who: Actor, query: str, **kw: Any) -> list[str]:
        with self.client(who, **kw) as c:
            r = c.get(query)
        assert r.status_code == 200, r.text
        return sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")
