"""Synthetic demo data: organisations, practitioners, patients and their measures.

Everything is generated from a seed (no real person), names drawn from common French names.

* ``carnet demo`` (:func:`seed`) loads French data in the FR Core shapes: patients whose INS
  matricule (demo OID 1.2.250.1.213.1.4.11) agrees with their sex, birth date and birthplace, with
  identity statuses spread over PROV, RECUP, VALI and QUAL (mostly QUAL); minors linked to a parent
  by a RelatedPerson; practitioners of every TRE_G15 profession with RPPS numbers and PS_IdNat
  identifiers, their PractitionerRoles, and organisations with FINESS or SIRET numbers (see
  :mod:`carnet.demo_people`). It also writes every demo identity to the reference file of the local
  INSi (``<data_dir>/insi/identities.json``).
* :func:`patient_bundles` and :func:`directory_bundle` feed the benchmarks: plain patients with test
  INS matricules (OID 1.2.250.1.213.1.4.10), unchanged so that benchmark runs stay comparable.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from carnet.auth.principal import Principal
from carnet.config import Settings
from carnet.directory import keys
from carnet.fhir import jsonio
from carnet.identity import nir

if TYPE_CHECKING:
    from carnet.demo_people import DemoDirectory, DemoIdentity

FAMILY = ["Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
          "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
          "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
          "Muller", "Lefebvre", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier"]
GIVEN_F = ["Marie", "Camille", "Léa", "Manon", "Chloé", "Inès", "Jeanne", "Louise", "Émilie",
           "Sophie", "Nathalie", "Isabelle", "Hélène", "Anne", "Claire", "Zoé", "Lina", "Alice"]
GIVEN_M = ["Jean", "Pierre", "Louis", "Lucas", "Hugo", "Gabriel", "Arthur", "Jules", "Paul",
           "Nicolas", "François", "Michel", "Philippe", "Théo", "Noé", "Antoine", "Étienne", "Yves"]
CITIES = [("Paris", "75056", "75011"), ("Lyon", "69123", "69003"), ("Marseille", "13055", "13005"),
          ("Toulouse", "31555", "31000"), ("Nantes", "44109", "44000"), ("Lille", "59350", "59000"),
          ("Bordeaux", "33063", "33000"), ("Rennes", "35238", "35000"), ("Ajaccio", "2A004", "20000"),
          ("Strasbourg", "67482", "67000")]
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INS_TEST_OID = "urn:oid:1.2.250.1.213.1.4.10"
INSEE_COMMUNES = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
BIRTH_LIST_GIVEN_NAME = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
RPPS_OID = "urn:oid:1.2.250.1.71.4.2.1"
FINESS_SYSTEM = "http://finess.sante.gouv.fr"


def nir_key(first13: str) -> str:
    return nir.compute_key(first13)


def luhn_digit(digits: str) -> str:
    return keys.luhn_check_digit(digits)


def _patient(rng: random.Random) -> dict[str, Any]:
    female = rng.random() < 0.5
    given = rng.choice(GIVEN_F if female else GIVEN_M)
    second = rng.choice(GIVEN_F if female else GIVEN_M)
    family = rng.choice(FAMILY)
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 33000))
    city, insee, postal = rng.choice(CITIES)
    dept = insee[:2]
    order = rng.randrange(1, 999)
    first13 = f"{2 if female else 1}{born.year % 100:02d}{born.month:02d}{dept}{insee[2:]}{order:03d}"
    matricule = first13 + nir_key(first13)
    return {
        "resourceType": "Patient",
        "identifier": [{"use": "official", "type": {"coding": [{
            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR-TEST"}]},
            "system": INS_TEST_OID, "value": matricule}],
        "active": True,
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {
            "extension": [{"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code",
                           "valueCoding": {"system": INSEE_COMMUNES, "code": insee}}], "city": city}}],
        "name": [{"extension": [{"url": BIRTH_LIST_GIVEN_NAME, "valueString": f"{given} {second}"}],
                  "use": "official", "family": family, "given": [given]},
                 {"use": "usual", "family": family, "given": [given, second]}],
        "telecom": [{"system": "phone", "value": f"06{rng.randrange(10**7, 10**8)}", "use": "mobile"}],
        "gender": "female" if female else "male",
        "birthDate": born.isoformat(),
        "address": [{"use": "home", "line": [f"{rng.randrange(1, 120)} rue {rng.choice(FAMILY)}"],
                     "city": city, "postalCode": postal, "country": "FR"}],
    }


def _organization(rng: random.Random, i: int) -> dict[str, Any]:
    city, _, postal = CITIES[i % len(CITIES)]
    base = f"{postal[:2]}0{rng.randrange(10**4, 10**5)}"
    finess = base + luhn_digit(base)
    kind = ["Centre hospitalier", "Clinique", "Laboratoire", "Maison de santé"][i % 4]
    return {"resourceType": "Organization", "active": True,
            "identifier": [{"system": FINESS_SYSTEM, "value": finess}],
            "name": f"{kind} de {city}", "address": [{"city": city, "postalCode": postal, "country": "FR"}]}


def _practitioner(rng: random.Random) -> dict[str, Any]:
    female = rng.random() < 0.5
    base = "10" + f"{rng.randrange(10**7, 10**8)}"  # RPPS: 10 digits and a Luhn key
    rpps = base + luhn_digit(base)
    return {"resourceType": "Practitioner", "active": True,
            "identifier": [{"system": RPPS_OID, "value": "8" + rpps}],
            "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN_F if female else GIVEN_M)],
                      "prefix": ["Dr"]}],
            "gender": "female" if female else "male"}


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _observation(rng: random.Random, patient_ref: str, performer: str, when: datetime) -> dict[str, Any]:
    kind = rng.randrange(5)
    effective = when.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    obs: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs" if kind < 4 else "laboratory"}]}],
        "subject": {"reference": patient_ref}, "effectiveDateTime": effective,
        "performer": [{"reference": performer}],
    }
    if kind == 0:
        obs["code"] = {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}],
                       "text": "Poids"}
        obs["valueQuantity"] = _quantity(round(rng.uniform(45, 110), 1), "kg", "kg")
    elif kind == 1:
        obs["code"] = {"coding": [{"system": LOINC, "code": "8302-2", "display": "Body height"}],
                       "text": "Taille"}
        obs["valueQuantity"] = _quantity(round(rng.uniform(150, 195)), "cm", "cm")
    elif kind == 2:
        obs["code"] = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                       "text": "Fréquence cardiaque"}
        obs["valueQuantity"] = _quantity(rng.randrange(50, 110), "/min", "/min")
    elif kind == 3:
        obs["code"] = {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
                       "text": "Tension artérielle"}
        obs["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic"}]},
             "valueQuantity": _quantity(rng.randrange(100, 160), "mm[Hg]", "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic"}]},
             "valueQuantity": _quantity(rng.randrange(60, 100), "mm[Hg]", "mm[Hg]")},
        ]
    else:
        obs["code"] = {"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose"}],
                       "text": "Glycémie"}
        obs["valueQuantity"] = _quantity(round(rng.uniform(0.7, 1.6), 2), "g/L", "g/L")
    return obs


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


def directory_bundle(seed: int, organizations: int = 8, practitioners: int = 20) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    entries = [_entry(_organization(rng, i)) for i in range(organizations)]
    entries += [_entry(_practitioner(rng)) for _ in range(practitioners)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def patient_bundles(seed: int, patients: int, observations: int = 19, per_bundle: int = 5,
                    performers: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Transaction bundles of ``per_bundle`` patients, each with ``observations`` Observations."""
    rng = random.Random(seed + 1)  # noqa: S311 - synthetic data, not secrets
    performers = performers or ["Practitioner?identifier=" + RPPS_OID + "|unknown"]
    now = datetime(2026, 11, 1, tzinfo=UTC)
    entries: list[dict[str, Any]] = []
    for n in range(patients):
        patient = _entry(_patient(rng))
        entries.append(patient)
        for _ in range(observations):
            when = now - timedelta(days=rng.randrange(0, 3650), minutes=rng.randrange(0, 1440))
            entries.append(_entry(_observation(rng, patient["fullUrl"], rng.choice(performers), when)))
        if (n + 1) % per_bundle == 0 or n == patients - 1:
            yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            entries = []


@dataclass(frozen=True)
class DemoSummary:
    counts: dict[str, int]  # resources per type now in the database
    insi_file: Path  # the reference file of the local INSi, with every demo identity
    identities: tuple[DemoIdentity, ...]  # the patients created by this run
    professionals: tuple[tuple[str, str, str], ...] = ()  # (name, French role, English role)


def load(settings: Settings, engine: Engine, *, patients: int = 25, seed: int = 2026,
         today: date | None = None) -> DemoSummary:
    """Load the French demo data through the FHIR engine (validated, indexed, like any client's data)
    and write the demo identities to the local INSi's reference file."""
    from carnet import demo_people as people
    from carnet.db.migrate import analyze
    from carnet.fhir.router import FhirRequest
    from carnet.wiring import build_router

    router = build_router(settings, engine)
    principal = Principal.system("carnet-demo")

    def post(bundle: dict[str, Any]) -> dict[str, Any]:
        resp = router.handle(FhirRequest("POST", "", [], {}, jsonio.dumps(bundle)), principal)
        if resp.status != 200:
            raise RuntimeError(f"demo data refused: {resp.json_bytes()[:500]!r}")
        return dict(jsonio.loads(resp.json_bytes()))

    directory = people.directory(seed)
    post(directory.bundle)
    identities: list[DemoIdentity] = []
    for batch in people.patient_bundles(seed, patients, performers=directory.performers, today=today):
        post(batch.bundle)
        identities.extend(batch.identities)
    insi_file = write_insi_file(settings.data_dir, identities)
    _qualify(router, principal, identities)
    _documents(router, principal, identities, directory, seed, today or datetime.now(UTC).date())
    from carnet import demo_access

    demo_access.grant(router, principal, identities, directory)
    demo_accounts(settings, engine, router, principal, identities)
    analyze(engine)
    return DemoSummary(router.counts(), insi_file, tuple(identities), tuple(demo_access.cast(directory)))


def _qualify(router: Any, principal: Principal, identities: list[DemoIdentity]) -> None:
    """Give each demo identity its status the way a hospital would: ask INSi (I) and check an
    identity document (C) through the same operations professionals use."""
    from carnet.fhir.router import FhirRequest
    from carnet.identity.status import IdentityStatus

    def call(method: str, path: str, query: list[tuple[str, str]] | None = None,
             body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = router.handle(FhirRequest(method, path, query or [], {}, jsonio.dumps(body) if body else None),
                             principal)
        if resp.status != 200:
            raise RuntimeError(f"demo identity step {path} refused: {resp.json_bytes()[:500]!r}")
        return dict(jsonio.loads(resp.json_bytes()))

    for identity in identities:
        if not identity.carries_ins:
            continue
        found = call("GET", "Patient", [("identifier", f"urn:oid:{identity.oid}|{identity.matricule}")])
        for entry in found.get("entry") or []:
            pid = entry["resource"]["id"]
            if identity.status in (IdentityStatus.RECUP, IdentityStatus.QUAL):
                call("POST", f"Patient/{pid}/$ins-verify")
            if identity.status in (IdentityStatus.VALI, IdentityStatus.QUAL):
                document = {"name": "documentType", "valueCode": "LEP" if identity.minor else "CN"}
                call("POST", f"Patient/{pid}/$identity-check",
                     body={"resourceType": "Parameters", "parameter": [document]})


def _documents(router: Any, principal: Principal, identities: list[DemoIdentity], directory: DemoDirectory,
               seed: int, today: date) -> None:
    """A few PDF documents and one CDA document in the record of each patient with an INS (published
    through ITI-105); the CDA documents are written by the médecin traitant."""
    from carnet import demo_cda, demo_documents
    from carnet.fhir.router import FhirRequest

    records = []
    parent: dict[str, Any] | None = None  # a minor follows their parent in ``identities``
    for identity in identities:
        if not identity.carries_ins:
            parent = None
            continue
        resp = router.handle(FhirRequest("GET", "Patient", [
            ("identifier", f"urn:oid:{identity.oid}|{identity.matricule}")], {}), principal)
        found = [e["resource"] for e in jsonio.loads(resp.json_bytes()).get("entry") or []]
        for patient in found:
            t = identity.traits
            name = f"{t.birth_given_names[0].title()} {t.birth_family_name}"
            records.append(demo_documents.Record(patient["id"], name, identity, patient,
                                                 parent if identity.minor else None))
        parent = None if identity.minor or not found else found[0]
    demo_documents.publish(router, principal, records, directory.performers, seed=seed, today=today,
                           cda_author=demo_cda.author_of(directory))


DEMO_PASSWORD = "carnet-demo-2026"  # noqa: S105 - the demo accounts' published password


def demo_accounts(settings: Settings, engine: Engine, router: Any, principal: Principal,
                  identities: list[DemoIdentity]) -> list[str]:
    """Sign-in accounts for the first adult patient (``patient``) and the first parent of a minor
    (``parent``), password :data:`DEMO_PASSWORD`, one-time codes sent to the server's log. Accounts
    that already exist are left as they are."""
    from carnet.auth.accounts import AccountStore
    from carnet.errors import Conflict
    from carnet.fhir.router import FhirRequest

    store = AccountStore(settings, engine)
    wanted: dict[str, DemoIdentity] = {}
    for i, identity in enumerate(identities):
        if not identity.carries_ins or identity.minor:
            continue
        has_child = i + 1 < len(identities) and identities[i + 1].minor
        key = "parent" if has_child else "patient"
        wanted.setdefault(key, identity)
    made = []
    for username, identity in wanted.items():
        resp = router.handle(FhirRequest("GET", "Patient", [
            ("identifier", f"urn:oid:{identity.oid}|{identity.matricule}")], {}), principal)
        entries = jsonio.loads(resp.json_bytes()).get("entry") or []
        if not entries:
            continue
        with contextlib.suppress(Conflict):
            store.add(username, DEMO_PASSWORD, entries[0]["resource"]["id"], totp=False, channel="log")
        made.append(username)
    return made


def seed(settings: Settings, engine: Engine, *, patients: int = 25, seed: int = 2026) -> dict[str, int]:
    """:func:`load`, answering the resources per type now in the database."""
    return load(settings, engine, patients=patients, seed=seed).counts


def insi_file(data_dir: Path) -> Path:
    """Where the demo writes the local INSi's reference identities."""
    return data_dir / "insi" / "identities.json"


def write_insi_file(data_dir: Path, identities: list[DemoIdentity]) -> Path:
    """Add ``identities`` to the local INSi's reference file (the format :class:`LocalInsi` reads),
    keeping the identities of earlier demo runs; answers the file's path."""
    path = insi_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    known: dict[tuple[str, str], dict[str, Any]] = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError, TypeError, KeyError):
            for entry in json.loads(path.read_text(encoding="utf-8"))["identities"]:
                known[(entry["matricule"], entry["oid"])] = entry
    for identity in identities:
        entry = identity.insi_entry()
        known[(entry["matricule"], entry["oid"])] = entry
    document = {"source": "carnet demo: synthetic identities, demo OID 1.2.250.1.213.1.4.11",
                "identities": list(known.values())}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
