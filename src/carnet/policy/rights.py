"""Who may read a patient's record, and why: derived from the record's own resources.

The sources are the patient's Patient (médecin traitant in ``generalPractitioner``, ``active``, the
identity status), CareTeams (members are deemed authorised), Consents (``permit`` for an actor
authorises, with ``MASQUE_PS`` among its security labels it gives the médecin traitant's rights;
``deny`` for an actor blocks; ``deny`` for purpose ETREAT with no actor opposes emergency access)
and RelatedPersons (a legal representative of a minor, named by their INS).

:func:`derive` turns them into :class:`RecordRights`, each grant with its reasons; :func:`recompute`
stores the result in ``access_rights`` / ``record_access`` in the transaction of the change, which
is what the read predicates select from. ``carnet policy explain`` and the patient's "who can access
my record" read the same derivation, so the reasons shown are the ones enforced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from carnet.background import Background
from carnet.db.driver import DriverStatement
from carnet.db.engine import run_write
from carnet.db.tables import access_rights, idx_token, record_access, resources
from carnet.errors import bilingual as _t
from carnet.fhir import jsonio
from carnet.identity import nir
from carnet.identity.fhir import ins_identifiers, read_reliability
from carnet.identity.status import IdentityStatus

log = logging.getLogger("carnet.policy")

SOURCES = ("Patient", "CareTeam", "Consent", "RelatedPerson")
EPOCH = date(1970, 1, 1)
# v3-ActReason: emergency treatment, break the glass
EMERGENCY_PURPOSES = frozenset({"ETREAT", "BTG", "ERTREAT"})
MAJORITY = 18


class Level(IntEnum):
    BLOCKED = 0
    READ = 1  # consent (care team or explicit authorisation): everything but masked documents
    FULL = 2  # médecin traitant or given the same rights: masked documents too
    REPRESENTATIVE = 3  # a legal representative (a patient) acting for a minor


@dataclass
class Grant:
    actor: str
    level: Level
    reasons: list[str] = field(default_factory=list)


@dataclass
class RecordRights:
    patient_id: str
    open: bool = True
    qualified: bool = False
    emergency_opposed: bool = False
    minor: bool = False
    grants: dict[str, Grant] = field(default_factory=dict)  # blocked actors have level BLOCKED
    notes: list[str] = field(default_factory=list)
    # the first day after the derivation's on which it may differ: a period of a source starts or
    # ends, or the patient comes of age (None: no such day)
    recheck: date | None = None

    def level(self, actor: str) -> Level | None:
        grant = self.grants.get(actor)
        return grant.level if grant is not None else None



def _ref(value: Any) -> tuple[str, str] | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str) or ref.startswith(("#", "urn:")) or "/" not in ref:
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-2], parts[-1]


def _codes(concepts: Any) -> set[str]:
    out = set()
    for concept in concepts or []:
        codings = concept.get("coding") if isinstance(concept, dict) and "coding" in concept else [concept]
        for c in codings or []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                out.add(c["code"])
    return out


def _age(birth: Any, today: date) -> int | None:
    if not isinstance(birth, str) or len(birth) < 4:
        return None
    try:
        born = date.fromisoformat(birth[:10]) if len(birth) >= 10 else date(int(birth[:4]), 1, 1)
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _ins_values(resource: dict[str, Any]) -> set[str]:
    return {ident.matricule for ident in ins_identifiers(resource)}


def _in_period(period: Any, today: date) -> bool:
    if not isinstance(period, dict):
        return True
    start, end = period.get("start"), period.get("end")
    day = today.isoformat()
    return not ((isinstance(start, str) and start[:10] > day) or (isinstance(end, str) and end[:10] < day))


def _boundaries(period: Any, today: date) -> list[date]:
    """The days after ``today`` on which ``period`` starts, or ends (the day after its end)."""
    out = []
    if isinstance(period, dict):
        for key, shift in (("start", 0), ("end", 1)):
            value = period.get(key)
            if not isinstance(value, str):
                continue
            try:
                day = date.fromisoformat(value[:10]) + timedelta(days=shift)
            except ValueError:
                continue
            if day > today:
                out.append(day)
    return out


def _coming_of_age(birth: Any, today: date) -> date | None:
    if not isinstance(birth, str) or len(birth) < 10:
        return None
    try:
        born = date.fromisoformat(birth[:10])
    except ValueError:
        return None
    try:
        day = born.replace(year=born.year + MAJORITY)
    except ValueError:  # born on 29 February
        day = date(born.year + MAJORITY, 3, 1)
    return day if day > today else None


def _recheck(patient: dict[str, Any], by_type: dict[str, list[dict[str, Any]]], today: date) -> date | None:
    days: list[date] = []
    for team in by_type.get("CareTeam", ()):
        days += _boundaries(team.get("period"), today)
        for part in team.get("participant") or []:
            days += _boundaries((part or {}).get("period") if isinstance(part, dict) else None, today)
    for consent in by_type.get("Consent", ()):
        provision = consent.get("provision")
        days += _boundaries(provision.get("period") if isinstance(provision, dict) else None, today)
    for person in by_type.get("RelatedPerson", ()):
        days += _boundaries(person.get("period"), today)
    adult = _coming_of_age(patient.get("birthDate"), today)
    if adult is not None:
        days.append(adult)
    return min(days, default=None)


PractitionerOf = Callable[[str, str], str | None]  # (type, id) of a Practitioner(Role) -> "Practitioner/<id>"
PatientByIns = Callable[[set[str]], list[str]]  # INS values -> Patient ids


def derive(patient_id: str, sources: Iterable[tuple[str, dict[str, Any]]], *,
           practitioner_of: PractitionerOf, patient_by_ins: PatientByIns,
           today: date | None = None) -> RecordRights:
    today = today or datetime.now(UTC).date()
    rights = RecordRights(patient_id)
    grants: dict[str, Grant] = {}
    blocks: dict[str, Grant] = {}

    def grant(actor: str | None, level: Level, reason: str) -> None:
        if actor is None:
            return
        g = grants.setdefault(actor, Grant(actor, level))
        g.level = max(g.level, level)
        g.reasons.append(reason)

    patient: dict[str, Any] | None = None
    by_type: dict[str, list[dict[str, Any]]] = {}
    for rtype, resource in sources:
        if rtype == "Patient":
            patient = resource
        else:
            by_type.setdefault(rtype, []).append(resource)
    if patient is None:
        rights.open = False
        rights.notes.append(_t("Dossier inexistant", "No such record"))
        return rights
    rights.open = patient.get("active") is not False
    if not rights.open:
        rights.notes.append(_t("Dossier fermé (Patient.active = false)",
                               "Record closed (Patient.active = false)"))
    status = read_reliability(patient)[0]
    rights.qualified = status == IdentityStatus.QUAL
    if not rights.qualified:
        rights.notes.append(_t(f"Identité non qualifiée (statut {status.value if status else 'absent'})",
                               f"Identity not qualified (status {status.value if status else 'none'})"))
    age = _age(patient.get("birthDate"), today)
    rights.minor = age is not None and age < MAJORITY
    for ref in patient.get("generalPractitioner") or []:
        target = _ref(ref)
        if target is not None and target[0] in ("Practitioner", "PractitionerRole"):
            grant(practitioner_of(*target), Level.FULL,
                  _t("médecin traitant déclaré", "declared médecin traitant"))

    for team in by_type.get("CareTeam", ()):
        if team.get("status") in ("inactive", "entered-in-error") or not _in_period(
                team.get("period"), today):
            continue
        name = team.get("name") or team.get("id")
        for part in team.get("participant") or []:
            target = _ref((part or {}).get("member"))
            if target is not None and target[0] in ("Practitioner", "PractitionerRole") and _in_period(
                    (part or {}).get("period"), today):
                grant(practitioner_of(*target), Level.READ,
                      _t(f"membre de l'équipe de soins « {name} »", f'member of the care team "{name}"'))

    for consent in by_type.get("Consent", ()):
        if consent.get("status") != "active":
            continue
        provision = consent.get("provision") or {}
        if not _in_period(provision.get("period"), today):
            continue
        kind = provision.get("type")
        actors = [practitioner_of(*t) for a in provision.get("actor") or []
                  if (t := _ref((a or {}).get("reference"))) and t[0] in ("Practitioner", "PractitionerRole")]
        if kind == "deny" and not actors and _codes(provision.get("purpose")) & EMERGENCY_PURPOSES:
            rights.emergency_opposed = True
            rights.notes.append(_t("Le patient s'oppose à l'accès en urgence",
                                   "The patient opposed emergency access"))
            continue
        for actor in actors:
            if actor is None:
                continue
            if kind == "deny":
                blocks.setdefault(actor, Grant(actor, Level.BLOCKED)).reasons.append(
                    _t("bloqué par le patient", "blocked by the patient"))
            elif kind == "permit":
                full = bool(_codes(provision.get("securityLabel")) & {"MASQUE_PS"})
                grant(actor, Level.FULL if full else Level.READ,
                      _t("droits du médecin traitant donnés par le patient",
                         "given the médecin traitant's rights")
                      if full else _t("autorisé par le patient", "authorised by the patient"))

    for person in by_type.get("RelatedPerson", ()):
        if person.get("active") is False or not _in_period(person.get("period"), today):
            continue
        values = _ins_values(person)
        if not values:
            continue
        if not rights.minor:
            rights.notes.append(_t("Représentant légal ignoré : le patient est majeur",
                                   "Legal representative ignored: the patient is an adult"))
            continue
        for rep in patient_by_ins(values):
            if rep != patient_id:
                grant(f"Patient/{rep}", Level.REPRESENTATIVE,
                      _t("représentant légal", "legal representative"))

    grants.update(blocks)  # a block wins over any authorisation, médecin traitant included
    rights.grants = grants
    rights.recheck = _recheck(patient, by_type, today)
    return rights


# -- storage ----------------------------------------------------------------------------------
# Statements built once: every write of a Patient, CareTeam, Consent or RelatedPerson runs them,
# and SQLAlchemy builds and keys a statement made per call at several times SQLite's own cost.
_r, _tok = resources.c, idx_token.c
# (one bind per type, not an expanding IN: the statement runs on the driver's cursor as compiled)
SOURCE_ROWS = DriverStatement(select(_r.res_type, _r.content).where(
    _r.patient_id == bindparam("pid"),
    _r.res_type.in_([bindparam(f"source_{i}", rtype) for i, rtype in enumerate(SOURCES)]),
    _r.deleted.is_(False)))  # (res_type, content) tuples
SELECT_ROLE = select(_r.content).where(_r.res_type == "PractitionerRole", _r.res_id == bindparam("rid"),
                                       _r.deleted.is_(False))
SELECT_BY_INS = select(_tok.res_id).where(
    _tok.res_type == "Patient", _tok.param == "identifier", _tok.code.in_(bindparam("codes", expanding=True)),
    _tok.system.in_([f"urn:oid:{oid}" for oid in nir.INS_OIDS]))
SELECT_REPRESENTED = select(_r.patient_id).select_from(idx_token.join(resources, and_(
    _r.res_type == _tok.res_type, _r.res_id == _tok.res_id))).where(
    _tok.res_type == "RelatedPerson", _tok.param == "identifier",
    _tok.code.in_(bindparam("codes", expanding=True)), _r.patient_id.is_not(None))
DELETE_RIGHTS = DriverStatement(delete(access_rights).where(access_rights.c.patient_id == bindparam("pid")))
DELETE_RECORD = DriverStatement(delete(record_access).where(record_access.c.patient_id == bindparam("pid")))
INSERT_RIGHTS = DriverStatement(insert(access_rights), [c.name for c in access_rights.columns])
INSERT_RECORD = DriverStatement(insert(record_access), [c.name for c in record_access.columns])


def _sources(conn: Connection, patient_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = SOURCE_ROWS.execute(conn, {"pid": patient_id}).fetchall()
    return [(rtype, jsonio.loads(content)) for rtype, content in rows if content is not None]


def _practitioner_of(conn: Connection) -> PractitionerOf:
    def resolve(rtype: str, rid: str) -> str | None:
        if rtype == "Practitioner":
            return f"Practitioner/{rid}"
        row = conn.execute(SELECT_ROLE, {"rid": rid}).first()
        if row is None or row.content is None:
            return None
        target = _ref(jsonio.loads(row.content).get("practitioner"))
        return f"Practitioner/{target[1]}" if target and target[0] == "Practitioner" else None
    return resolve


def patients_by_ins(conn: Connection, values: set[str]) -> list[str]:
    if not values:
        return []
    rows = conn.execute(SELECT_BY_INS, {"codes": sorted(values)})
    return sorted({r.res_id for r in rows})


def rights_of(conn: Connection, patient_id: str, today: date | None = None) -> RecordRights:
    return derive(patient_id, _sources(conn, patient_id), practitioner_of=_practitioner_of(conn),
                  patient_by_ins=lambda values: patients_by_ins(conn, values), today=today)


def day_number(day: date) -> int:
    return (day - EPOCH).days


class utc_day(FunctionElement[int]):
    """Today's UTC day (days since 1970-01-01), computed by the database when the statement runs,
    so that predicates built once stay right from one day to the next."""

    type = Integer()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(julianday('now') - 2440587.5 AS INTEGER)"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(CAST(timezone('UTC', now()) AS DATE) - DATE '1970-01-01')"


def holds_today(a: Any) -> ColumnElement[bool]:
    """An ``access_rights`` row still holds: its record has not reached the day from which its
    derivation may differ (until the rights worker derives it again, the row is ignored)."""
    return or_(a.until_day.is_(None), a.until_day > utc_day())


def recompute(conn: Connection, patient_id: str, today: date | None = None) -> RecordRights:
    """Derive the record's rights and store them (in the caller's transaction)."""
    rights = rights_of(conn, patient_id, today)
    until = day_number(rights.recheck) if rights.recheck is not None else None
    DELETE_RIGHTS.execute(conn, {"pid": patient_id})
    DELETE_RECORD.execute(conn, {"pid": patient_id})
    rows = []
    for g in rights.grants.values():
        if g.level == Level.BLOCKED or (g.level == Level.REPRESENTATIVE and rights.open) or (
                rights.open and rights.qualified):
            rows.append({"actor": g.actor, "patient_id": patient_id, "level": int(g.level),
                         "until_day": until})
    INSERT_RIGHTS.executemany(conn, rows)
    INSERT_RECORD.execute(conn, {
        "patient_id": patient_id, "open": rights.open, "qualified": rights.qualified,
        "emergency_opposed": rights.emergency_opposed, "minor": rights.minor, "recheck_day": until})
    return rights


def recheck_due(engine: Engine, today: date | None = None, limit: int = 200) -> int:
    """Derive again the rights of records whose recheck day has come (at most ``limit`` of them,
    each in a transaction of its own). Returns how many were derived."""
    today = today or datetime.now(UTC).date()
    ra = record_access.c
    with engine.connect() as conn:
        due = [r.patient_id for r in conn.execute(
            select(ra.patient_id).where(ra.recheck_day <= day_number(today)).limit(limit))]
    for patient_id in due:
        def derive_again(conn: Connection, pid: str = patient_id) -> None:
            recompute(conn, pid, today)
        run_write(engine, derive_again)
    return len(due)


class RightsWorker(Background):
    """Derives again, in a background thread of a server process, the rights of records whose
    recheck day has come: every ``interval`` seconds, or at once while records are due. Between
    the day's start and that run, the records' rows are ignored (access is refused, not widened).
    Several processes may each run one: deriving a record twice gives the same rows."""

    name = "carnet-rights"
    failure = "deriving the rights of records again failed; retrying"  # their rows stay ignored

    def __init__(self, engine: Engine, interval: float = 60.0, batch: int = 200) -> None:
        super().__init__(interval, logger=log)
        self.engine, self.batch = engine, batch

    def step(self) -> bool:
        return recheck_due(self.engine, limit=self.batch) >= self.batch


def minors_represented_by(conn: Connection, patient: dict[str, Any]) -> list[str]:
    """Records whose RelatedPerson names this patient's INS: their rights depend on this Patient."""
    values = _ins_values(patient)
    if not values:
        return []
    rows = conn.execute(SELECT_REPRESENTED, {"codes": sorted(values)})
    return sorted({row.patient_id for row in rows})
