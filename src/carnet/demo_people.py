"""French demo people for ``carnet demo``: patients with a coherent INS, the legal representatives of
the minors, and a directory with every TRE_G15 profession.

Patients follow FR Core's Patient INS shape (:mod:`carnet.identity.fhir`). Their strict traits are
written as INSi returns them (capitals, no diacritics); a ``usual`` name keeps the everyday spelling.
Each matricule agrees with the traits: sex digit, year and month of birth, then the INSEE code of the
birthplace (99 + country for people born abroad; département 20 for people born in Corsica before
1976), a random order number and its key. Statuses follow a fixed pattern so that every run has some
of each (mostly QUAL); PROV identities never asked INSi and carry no matricule.

Every fifth patient from the third on is a minor, living with the patient created just before them,
their parent. The link is a RelatedPerson (the parent as the child's legal representative: TRE_R260
``GUARD`` and TRE_R216 ``MTH``/``FTH``), and the parent's own Patient points to that RelatedPerson with
``link.type = seealso`` (FHIR: the same person, described by another resource). A RelatedPerson, unlike
``Patient.contact``, can be named as the actor of a consent, an access or a document.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from carnet import demo
from carnet.directory import fhir as directory_fhir
from carnet.directory import keys
from carnet.directory.keys import IdNatKind, PsIdNat, StructureIdNat, StructureIdNatKind
from carnet.identity import fhir as ins_fhir
from carnet.identity import nir
from carnet.identity.status import (
    DocumentType,
    IdentityState,
    IdentityStatus,
    Traits,
    record_document_check,
    record_insi_verification,
)

DEMO_OID = nir.OID_INS_NIR_DEMO
AGENT = "carnet-demo"
ROLE_CLASS = "https://mos.esante.gouv.fr/NOS/TRE_R260-HL7RoleClass/FHIR/TRE-R260-HL7RoleClass"
ROLE_CODE = "https://mos.esante.gouv.fr/NOS/TRE_R216-HL7RoleCode/FHIR/TRE-R216-HL7RoleCode"

# INSEE codes of places of birth: Paris, Lyon and Marseille by arrondissement (as births are
# registered), Corsica, overseas, and countries (99xxx) for people born abroad.
BIRTHPLACES = [
    ("75111", "Paris 11e Arrondissement"), ("75115", "Paris 15e Arrondissement"),
    ("69383", "Lyon 3e Arrondissement"), ("13205", "Marseille 5e Arrondissement"), ("31555", "Toulouse"),
    ("44109", "Nantes"), ("59350", "Lille"), ("33063", "Bordeaux"), ("35238", "Rennes"),
    ("67482", "Strasbourg"), ("76540", "Rouen"), ("2A004", "Ajaccio"), ("2B033", "Bastia"),
    ("97411", "Saint-Denis"), ("97209", "Fort-de-France"), ("99134", "Espagne"), ("99139", "Portugal"),
    ("99350", "Maroc"), ("99352", "Algérie"), ("99127", "Italie"),
]
# Status of the adult at each position of a run of ten (the parent and the minor are always QUAL).
_PATTERN = [IdentityStatus.QUAL, None, None, IdentityStatus.RECUP, IdentityStatus.VALI, IdentityStatus.QUAL,
            None, None, IdentityStatus.PROV, IdentityStatus.QUAL]


@dataclass(frozen=True)
class DemoIdentity:
    matricule: str  # every demo person has one; PROV identities do not carry it in their record
    traits: Traits
    status: IdentityStatus
    minor: bool = False
    oid: str = DEMO_OID

    @property
    def carries_ins(self) -> bool:
        return self.status is not IdentityStatus.PROV

    def insi_entry(self) -> dict[str, Any]:
        """The identity as the local INSi's reference file lists it."""
        t = self.traits
        return {"matricule": self.matricule, "oid": self.oid, "traits": {
            "birth_family_name": t.birth_family_name, "birth_given_names": list(t.birth_given_names),
            "birth_date": t.birth_date.isoformat(), "sex": t.sex, "birthplace_code": t.birthplace_code}}


@dataclass(frozen=True)
class DemoBatch:
    bundle: dict[str, Any]
    identities: tuple[DemoIdentity, ...]


def ins_text(text: str) -> str:
    """A name as the INS writes it: capitals without diacritics; hyphens, apostrophes, spaces kept."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return bare.upper().replace("Œ", "OE").replace("Æ", "AE")


def matricule_for(sex: str, born: date, birthplace: str, order: int) -> str:
    """The matricule of a person with these traits (order number 1-999)."""
    place = birthplace
    if place[:2] in ("2A", "2B") and born.year < 1976:
        place = "20" + place[2:]
    return nir.make_matricule(f"{1 if sex == 'male' else 2}{born.year % 100:02d}{born.month:02d}{place}"
                              f"{order:03d}")


def _given_names(rng: random.Random, female: bool) -> tuple[str, ...]:
    pool = demo.GIVEN_F if female else demo.GIVEN_M
    names = [rng.choice(pool) for _ in range(rng.choice((1, 2, 2, 3)))]
    if rng.random() < 0.1:  # a compound first name
        names[0] = f"{names[0]}-{rng.choice(pool)}"
    return tuple(dict.fromkeys(names))


def _state(rng: random.Random, status: IdentityStatus, minor: bool, at: datetime) -> IdentityState:
    state = IdentityState()
    if status in (IdentityStatus.RECUP, IdentityStatus.QUAL):
        state = record_insi_verification(state, AGENT, at)
    if status in (IdentityStatus.VALI, IdentityStatus.QUAL):
        adult_documents = [DocumentType.NATIONAL_ID_CARD] * 6 + [DocumentType.PASSPORT] * 3 + [
            DocumentType.RESIDENCE_PERMIT]
        document = (DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT if minor
                    else rng.choice(adult_documents))
        state = record_document_check(state, document, AGENT, at + timedelta(minutes=5))
    return state


@dataclass
class _Person:
    identity: DemoIdentity
    usual: dict[str, Any]
    phone: str
    address: dict[str, Any]
    entry: dict[str, Any] = field(default_factory=dict)


def _person(rng: random.Random, status: IdentityStatus, born: date, now: datetime, *, minor: bool = False,
            family: str | None = None, home: tuple[dict[str, Any], str] | None = None) -> _Person:
    female = rng.random() < 0.5
    sex = "female" if female else "male"
    given = _given_names(rng, female)
    family = family or rng.choice(demo.FAMILY)
    place, place_name = rng.choice(BIRTHPLACES)
    traits = Traits(ins_text(family), tuple(ins_text(g) for g in given), born, sex, place)
    identity = DemoIdentity(matricule_for(sex, born, place, rng.randrange(1, 1000)), traits, status, minor)
    state = _state(rng, status, minor, now - timedelta(days=rng.randrange(1, 900)))
    resource = ins_fhir.build_patient(traits, matricule=identity.matricule if identity.carries_ins else None,
                                      oid=DEMO_OID, status=state,
                                      birthplace_city=None if place.startswith("99") else place_name)
    usual = {"use": "usual", "family": family, "given": [given[0]]}
    resource["name"].append(usual)
    if home is None:
        city, _, postal = rng.choice(demo.CITIES)
        address = {"use": "home", "line": [f"{rng.randrange(1, 120)} rue {rng.choice(demo.FAMILY)}"],
                   "city": city, "postalCode": postal, "country": "FR"}
        phone = f"06{rng.randrange(10**7, 10**8)}"
    else:
        address, phone = home
    resource["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    resource["address"] = [address]
    resource["active"] = True
    return _Person(identity, usual, phone, address, demo._entry(resource))


def _birth_date(rng: random.Random, today: date, youngest: int, oldest: int) -> date:
    """A birth date giving an age of ``youngest`` to ``oldest`` years today."""
    latest = today.replace(year=today.year - youngest) if youngest else today
    earliest = today.replace(year=today.year - oldest - 1) + timedelta(days=1)
    return earliest + timedelta(days=rng.randrange((latest - earliest).days + 1))


def _representative(parent: _Person, child: _Person) -> dict[str, Any]:
    mother = parent.identity.traits.sex == "female"
    resource = {
        "resourceType": "RelatedPerson", "active": True,
        "identifier": [ins_fhir.ins_identifier(parent.identity.matricule, DEMO_OID)],
        "patient": {"reference": child.entry["fullUrl"]},
        "relationship": [
            {"coding": [{"system": ROLE_CLASS, "code": "GUARD", "display": "Responsable légal"}]},
            {"coding": [{"system": ROLE_CODE, "code": "MTH" if mother else "FTH",
                         "display": "Mère" if mother else "Père"}]}],
        "name": [parent.usual], "telecom": [{"system": "phone", "value": parent.phone, "use": "mobile"}],
        "gender": parent.identity.traits.sex, "birthDate": parent.identity.traits.birth_date.isoformat(),
        "address": [parent.address]}
    entry = demo._entry(resource)
    parent.entry["resource"]["link"] = [{"other": {"reference": entry["fullUrl"]}, "type": "seealso"}]
    return entry


def _child_sized(obs: dict[str, Any], age: float, rng: random.Random) -> dict[str, Any]:
    """Weights and heights of a child's size."""
    code = obs["code"]["coding"][0]["code"]
    if code == "29463-7":
        obs["valueQuantity"]["value"] = round((3.4 + 2.6 * age) * rng.uniform(0.9, 1.1), 1)
    elif code == "8302-2":
        obs["valueQuantity"]["value"] = round((50 + 6.2 * age) * rng.uniform(0.96, 1.04))
    return obs


def _observations(rng: random.Random, person: _Person, count: int, performers: list[str],
                  now: datetime) -> list[dict[str, Any]]:
    born = datetime.combine(person.identity.traits.birth_date, time(12), tzinfo=UTC)
    span = max(1, min(3650, (now - born).days))
    out = []
    for _ in range(count):
        when = now - timedelta(days=rng.randrange(0, span), minutes=rng.randrange(0, 1440))
        obs = demo._observation(rng, person.entry["fullUrl"], rng.choice(performers), when)
        if person.identity.minor:
            obs = _child_sized(obs, (when - born).days / 365.25, rng)
        out.append(demo._entry(obs))
    return out


def patient_bundles(seed: int, patients: int, *, performers: list[str], observations: int = 19,
                    per_bundle: int = 5, today: date | None = None) -> Iterator[DemoBatch]:
    """Transaction Bundles of about ``per_bundle`` patients (a parent and their child always travel
    together), each patient with ``observations`` Observations."""
    rng = random.Random(seed + 1)  # noqa: S311 - synthetic data, not secrets
    today = today or datetime.now(UTC).date()
    now = datetime.combine(today, time(12), tzinfo=UTC)
    entries: list[dict[str, Any]] = []
    batch: list[DemoIdentity] = []
    parent: _Person | None = None
    for i in range(patients):
        slot = i % 10
        if slot in (2, 7) and parent is not None:
            person = _person(rng, IdentityStatus.QUAL, _birth_date(rng, today, 0, 17), now, minor=True,
                             family=parent.usual["family"], home=(parent.address, parent.phone))
            entries.append(person.entry)
            entries.append(_representative(parent, person))
        elif slot in (1, 6) and i + 1 < patients:
            person = _person(rng, IdentityStatus.QUAL, _birth_date(rng, today, 38, 52), now)
            entries.append(person.entry)
        else:
            status = _PATTERN[slot] or IdentityStatus.QUAL
            person = _person(rng, status, _birth_date(rng, today, 18, 95), now)
            entries.append(person.entry)
        parent = person if slot in (1, 6) else None
        batch.append(person.identity)
        entries.extend(_observations(rng, person, observations, performers, now))
        if (len(batch) >= per_bundle and parent is None) or i == patients - 1:
            yield DemoBatch({"resourceType": "Bundle", "type": "transaction", "entry": entries}, tuple(batch))
            entries, batch = [], []


# -- The directory -----------------------------------------------------------------------------------

# key, identifier kind, name, city, INSEE code, postal code
ORGANIZATIONS = [
    ("ch", "finess", "Centre hospitalier de Rouen", "Rouen", "76540", "76000"),
    ("clinique", "finess", "Clinique du Parc", "Lyon", "69383", "69003"),
    ("labo", "finess", "Laboratoire de biologie médicale des Capucins", "Nantes", "44109", "44000"),
    ("centre", "finess", "Centre de santé municipal", "Marseille", "13205", "13005"),
    ("msp", "finess", "Maison de santé pluriprofessionnelle d'Ajaccio", "Ajaccio", "2A004", "20000"),
    ("pharmacie", "finess", "Pharmacie de la Gare", "Lille", "59350", "59000"),
    ("cabinet", "siret", "Cabinet des Lilas", "Bordeaux", "33063", "33000"),
]
# profession: (libéral at, salaried at, specialties of the libéral, specialties of the salaried one)
STAFF: dict[str, tuple[str, str, list[tuple[str, str]], list[tuple[str, str]]]] = {
    "10": ("cabinet", "ch", [("SM54", "Médecine générale (SM)")],
           [("SM04", "Cardiologie et Maladies vasculaires (SM)")]),
    "21": ("pharmacie", "labo", [], []),
    "40": ("cabinet", "centre", [], []),
    "50": ("msp", "ch", [], []),
    "60": ("msp", "clinique", [], []),
    "70": ("cabinet", "clinique", [], []),
    "80": ("msp", "centre", [], []),
}
DOCTOR_TITLES = {"10", "21", "40"}  # professions whose members practise as "Docteur"


@dataclass(frozen=True)
class DemoDirectory:
    bundle: dict[str, Any]
    performers: list[str]  # "Practitioner/<id>" references
    rpps: dict[str, list[str]]  # RPPS numbers by TRE_G15 profession code


def _siret(rng: random.Random) -> str:
    body = f"{rng.randrange(10**7, 10**8)}"
    siren = body + keys.luhn_check_digit(body)
    nic = f"{rng.randrange(1, 10**4):04d}"
    return siren + nic + keys.luhn_check_digit(siren + nic)


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def directory(seed: int) -> DemoDirectory:
    """Organisations with valid FINESS or SIRET numbers, and two practitioners (one libéral, one
    salaried) of every TRE_G15 profession with valid RPPS numbers, with their roles."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    entries, structures = [], {}
    for key, kind, name, city, insee, postal in ORGANIZATIONS:
        if kind == "finess":
            finess = keys.make_finess(f"{insee[:2]}0{rng.randrange(10**5):05d}")
            idnat = StructureIdNat(StructureIdNatKind.FINESS, finess)
        else:
            idnat = StructureIdNat(StructureIdNatKind.SIRET, _siret(rng))
        line = f"{rng.randrange(1, 80)} avenue {rng.choice(demo.FAMILY)}"
        address = directory_fhir.Address((line,), postal, city, insee, "FR")
        phone = f"0{rng.randrange(1, 6)}{rng.randrange(10**7, 10**8)}"
        entries.append(_put(directory_fhir.organization(idnat, name=name, address=address, phone=phone)))
        structures[key] = (idnat, name)
    performers: list[str] = []
    rpps: dict[str, list[str]] = {}
    for code in keys.professions():
        where_l, where_s, spec_l, spec_s = STAFF.get(code, ("msp", "ch", [], []))
        for mode, where, specialties in (("L", where_l, spec_l), ("S", where_s, spec_s)):
            female = rng.random() < 0.5
            number = keys.make_rpps(f"10{rng.randrange(10**8):08d}")
            ps = PsIdNat(IdNatKind.RPPS, number)
            given = rng.choice(demo.GIVEN_F if female else demo.GIVEN_M)
            person = directory_fhir.practitioner(
                ps, family=rng.choice(demo.FAMILY), given=given, prefix="MME" if female else "M",
                suffix="DR" if code in DOCTOR_TITLES else None, professions=[code])
            idnat, name = structures[where]
            role = directory_fhir.practitioner_role(ps, code, structure=idnat, structure_name=name, mode=mode,
                                                    specialties=specialties)
            entries += [_put(person), _put(role)]
            performers.append(f"Practitioner/{person['id']}")
            rpps.setdefault(code, []).append(number)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return DemoDirectory(bundle, performers, rpps)
