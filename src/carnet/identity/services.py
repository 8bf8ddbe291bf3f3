"""The identity workflow (RNIV) over the FHIR store: the server keeps each patient's identity facts
and computes the FR Core identity status from them.

- Every write of a Patient that carries an INS (or whose identity the server already tracks) passes
  :meth:`IdentityService.before_patient_write`: the reliability extension is replaced by the status
  the facts give (a client cannot write QUAL), editing a strict trait of an identity confirmed by
  INSi drops I, and the FR Core Patient INS rules are checked (422 with FHIRPath expressions).
- ``$ins-verify`` asks INSi; on a match the facts record I and the strict traits become INSi's.
- ``$identity-check`` records that a high-trust document was seen (C); ``$identity-flag`` sets or
  clears the "douteuse" / "fictive" flags; ``$identity-history`` lists every transition.

Generic FHIR Patients (no INS identifier, no tracked identity) are stored untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from carnet.auth.principal import Principal
from carnet.config import Mode, Settings
from carnet.db.tables import identity_states
from carnet.errors import Conflict, Issue, Unprocessable
from carnet.fhir.store import Repository
from carnet.fhir.values import now_us
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.insi import InsiClient, InsiFound, InsiIdentity, InsiMultiple
from carnet.identity.status import (
    STRICT_TRAITS,
    DocumentType,
    Event,
    IdentityFlag,
    IdentityState,
    IdentityStatus,
    Traits,
    Transition,
    apply_traits_edit,
    edit_strict_traits,
    record_document_check,
    record_insi_verification,
    set_flag,
)

# Set while the service itself rewrites a Patient (INSi's traits, a new status): not a user's edit.
_SERVICE_WRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("identity_service_write", default=False)


@contextmanager
def _service_write() -> Iterator[None]:
    token = _SERVICE_WRITE.set(True)
    try:
        yield
    finally:
        _SERVICE_WRITE.reset(token)


def who(principal: Principal) -> str:
    return f"{principal.kind.value}:{principal.subject}"


# -- persistence of the facts ------------------------------------------------------------------------

def state_to_json(state: IdentityState) -> bytes:
    return orjson.dumps({
        "has_i": state.has_i, "has_c": state.has_c, "flags": sorted(f.value for f in state.flags),
        "document_type": state.document_type.value if state.document_type else None,
        "history": [{"who": t.who, "when": t.when.isoformat(), "what": t.what.value,
                     "from": t.from_status.value, "to": t.to_status.value, "detail": t.detail}
                    for t in state.history]})


def state_from_json(raw: bytes) -> IdentityState:
    data = orjson.loads(raw)
    return IdentityState(
        has_i=bool(data["has_i"]), has_c=bool(data["has_c"]),
        flags=frozenset(IdentityFlag(f) for f in data["flags"]),
        document_type=DocumentType(data["document_type"]) if data.get("document_type") else None,
        history=tuple(Transition(t["who"], datetime.fromisoformat(t["when"]), Event(t["what"]),
                                 IdentityStatus(t["from"]), IdentityStatus(t["to"]), t.get("detail", ""))
                      for t in data["history"]))


SELECT_STATE = select(identity_states.c.state).where(identity_states.c.patient_id == bindparam("pid"))


def load_state(conn: Connection, patient_id: str) -> IdentityState | None:
    raw = conn.execute(SELECT_STATE, {"pid": patient_id}).scalar_one_or_none()
    return state_from_json(raw) if raw is not None else None


def save_state(conn: Connection, patient_id: str, state: IdentityState, *, existed: bool) -> None:
    values = {"state": state_to_json(state), "updated": now_us()}
    if existed:
        row = identity_states.c.patient_id == patient_id
        conn.execute(update(identity_states).where(row).values(**values))
    else:
        conn.execute(insert(identity_states).values(patient_id=patient_id, **values))


# -- the service ---------------------------------------------------------------------------------------

class IdentityService:
    def __init__(self, settings: Settings, insi: InsiClient) -> None:
        self.settings = settings
        self.insi = insi

    @property
    def production(self) -> bool:
        return self.settings.mode == Mode.PRODUCTION

    # The Patient write hook ------------------------------------------------------------------------
    def before_patient_write(self, repo: Repository, resource: dict[str, Any],
                             previous: dict[str, Any] | None) -> None:
        pid = str(resource["id"])
        stored = load_state(repo.conn, pid)
        declares = bool(insfhir.ins_identifiers(resource)) or any(
            isinstance(e, dict) and e.get("url") == insfhir.IDENTITY_RELIABILITY
            for e in resource.get("extension") or [])
        if stored is None and not declares:
            return  # a generic FHIR Patient: nothing of the INS applies
        state = stored or IdentityState()
        if previous is not None and state.has_i and not _SERVICE_WRITE.get():
            old, new = _traits_or_none(previous), _traits_or_none(resource)
            if old is not None and new is not None:
                state = apply_traits_edit(state, old, new, who(repo.principal), _now())
            elif old != new:  # the traits became (or stopped being) readable: all of them changed
                state = edit_strict_traits(state, STRICT_TRAITS, who(repo.principal), _now())
        stamp_reliability(resource, state)
        problems = [i for i in insfhir.check_patient_ins(resource, production=self.production)
                    if i.severity in ("error", "fatal")]
        if problems:
            raise Unprocessable("the Patient does not follow the FR Core Patient INS rules", issues=problems)
        if state != (stored or IdentityState()):  # a new PROV identity needs no row yet
            save_state(repo.conn, pid, state, existed=stored is not None)

    # Operations ----------------------------------------------------------------------------------------
    def verify(self, repo: Repository, pid: str) -> dict[str, Any]:
        """Ask INSi about the patient (by matricule when known, else by traits). On one match, record
        I and make the strict traits and the INS identifier INSi's. Answers the updated Patient."""
        current = repo.read("Patient", pid)
        resource = current.resource()
        traits = insfhir.read_traits(resource)
        stored_state = load_state(repo.conn, pid)
        state = stored_state or IdentityState()
        if state.flags:
            flag = sorted(state.flags)[0]
            raise Unprocessable(
                f"Vérification INSi refusée : l'identité est marquée « {flag.label_fr} » / "
                f'INSi verification refused: the identity is flagged "{flag.label_en}"')
        ins = insfhir.read_patient_ins(resource).ins
        result = self.insi.verify(ins.matricule, ins.oid, traits) if ins else self.insi.lookup(traits)
        if isinstance(result, InsiMultiple):
            raise Conflict("", issues=[Issue(
                "error", "multiple-matches",
                f"INSi connaît {result.count} identités pour ces traits : précisez-les (lieu de naissance, "
                f"tous les prénoms) / INSi knows {result.count} identities for these traits: refine them "
                "(birthplace, every first name)", ["Patient"])])
        if not isinstance(result, InsiFound):
            raise Unprocessable("", issues=[Issue(
                "error", "not-found",
                "INSi ne connaît aucune identité correspondant à ces traits / INSi knows no identity "
                f"matching these traits{': ' + result.reason if result.reason else ''}", ["Patient"])])
        found = result.identity
        if self.production:
            nir.check_oid(found.oid, production=True)
        new_state = record_insi_verification(state, who(repo.principal), _now(),
                                             detail=f"{found.oid}|{found.matricule}")
        save_state(repo.conn, pid, new_state, existed=stored_state is not None)
        updated = with_insi_traits(resource, found)
        with _service_write():
            stored, _ = repo.update("Patient", pid, updated, if_match=current.version)
        repo._record("ins-verify", "Patient", (pid,))
        return stored.resource()

    def check_document(self, repo: Repository, pid: str, document_type: str) -> dict[str, Any]:
        current = repo.read("Patient", pid)
        stored_state = load_state(repo.conn, pid)
        state = record_document_check(stored_state or IdentityState(), _document(document_type),
                                      who(repo.principal), _now(), expression="Parameters.parameter")
        return self._restamp(repo, pid, current.version, current.resource(), state, stored_state)

    def flag(self, repo: Repository, pid: str, flag: str, present: bool) -> dict[str, Any]:
        current = repo.read("Patient", pid)
        stored_state = load_state(repo.conn, pid)
        try:
            which = IdentityFlag(flag)
        except ValueError:
            raise Unprocessable(f"« {flag} » n'est pas un attribut d'identité (douteuse, fictive) / "
                                f'"{flag}" is not an identity flag (douteuse, fictive)',
                                expression=["Parameters.parameter"]) from None
        state = set_flag(stored_state or IdentityState(), which, who(repo.principal), _now(), present=present)
        if present:  # FR Core: a doubtful or fictitious identity stays provisional
            state = replace(state, has_i=False)
        return self._restamp(repo, pid, current.version, current.resource(), state, stored_state)

    def history(self, repo: Repository, pid: str) -> dict[str, Any]:
        repo.read("Patient", pid)  # absent or hidden: 404 like any read
        state = load_state(repo.conn, pid) or IdentityState()
        parts: list[dict[str, Any]] = [{"name": "status", "valueCode": state.status.value}]
        for t in state.history:
            parts.append({"name": "transition", "part": [
                {"name": "when", "valueDateTime": t.when.isoformat()},
                {"name": "who", "valueString": t.who},
                {"name": "what", "valueCode": t.what.value},
                {"name": "from", "valueCode": t.from_status.value},
                {"name": "to", "valueCode": t.to_status.value},
                *([{"name": "detail", "valueString": t.detail}] if t.detail else [])]})
        return {"resourceType": "Parameters", "parameter": parts}

    def _restamp(self, repo: Repository, pid: str, version: int, resource: dict[str, Any],
                 state: IdentityState, stored: IdentityState | None) -> dict[str, Any]:
        save_state(repo.conn, pid, state, existed=stored is not None)
        with _service_write():
            updated, _ = repo.update("Patient", pid, resource, if_match=version)
        repo._record(f"identity-{state.history[-1].what.value}" if state.history else "identity", "Patient",
                     (pid,))
        return updated.resource()


# -- helpers ---------------------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(UTC)


def _traits_or_none(resource: dict[str, Any]) -> Traits | None:
    try:
        return insfhir.read_traits(resource)
    except (Unprocessable, ValueError):
        return None


_DOCUMENT_WORDS = {"passport": "PA", "passeport": "PA", "id-card": "CN", "cni": "CN",
                   "residence-permit": "CS", "titre-de-sejour": "CS", "family-record-book": "LEP",
                   "livret-de-famille": "LEP"}


def _document(code: str) -> DocumentType:
    """A document type from its FR Core validation-mode code (or a plain word for it)."""
    found = insfhir.document_of_mode(_DOCUMENT_WORDS.get(code, code))
    if found is not None:
        return found
    accepted = ", ".join(sorted(insfhir.mode_of_document(d) for d in DocumentType))
    raise Unprocessable(f"Type de pièce d'identité inconnu « {code} » (attendu : {accepted}) / "
                        f'Unknown identity document type "{code}" (expected: {accepted})',
                        expression=["Parameters.parameter"])


def stamp_reliability(resource: dict[str, Any], state: IdentityState) -> None:
    """Put the reliability extension the facts give in place of whatever the resource declared."""
    others = [e for e in resource.get("extension") or []
              if not (isinstance(e, dict) and e.get("url") == insfhir.IDENTITY_RELIABILITY)]
    resource["extension"] = [insfhir.reliability_from_state(state), *others]


def with_insi_traits(resource: dict[str, Any], found: InsiIdentity) -> dict[str, Any]:
    """The Patient with INSi's strict traits and INS identifier in place of its own."""
    t = found.traits
    built = insfhir.build_patient(t, matricule=found.matricule, oid=found.oid)
    out = dict(resource)
    names = [n for n in out.get("name") or [] if not (isinstance(n, dict) and n.get("use") == "official")]
    out["name"] = [*built["name"], *names]
    out["gender"] = t.sex
    out["birthDate"] = t.birth_date.isoformat()
    kept_ids = [i for i in out.get("identifier") or []
                if not (isinstance(i, dict) and str(i.get("system", "")).removeprefix("urn:oid:")
                        in nir.INS_OIDS)]
    out["identifier"] = [*built["identifier"], *kept_ids]
    if t.birthplace_code:
        place = next(e for e in built["extension"] if e["url"] == insfhir.BIRTH_PLACE)
        exts = [e for e in out.get("extension") or []
                if not (isinstance(e, dict) and e.get("url") == insfhir.BIRTH_PLACE)]
        out["extension"] = [*exts, place]
    return out
