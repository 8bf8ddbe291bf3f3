"""DICAH, enforced in the data layer: the caller's rights compiled into SQL predicates.

Every read query of a request (read, vread, search, count, includes, history, conditional
matches, MHD queries) carries :meth:`DicahPolicy.read_filter`; what it hides is absent, not
forbidden. Writes are checked before (scopes, which types a caller may write) and after (where
the written resource landed, visibility rules), and a change to what rights derive from
recomputes them in the same transaction (:mod:`carnet.policy.rights`).

Professionals (D, I, C, A, H):
* D and I: the record is open and its identity qualified — ``access_rights`` holds no READ/FULL
  row otherwise;
* C: a row READ (care team, authorisation) or FULL (médecin traitant or the same rights) for the
  professional; BLOCKED refuses, whatever else holds. An emergency or regulation token bound to one
  patient stands for consent on that record unless the patient opposed it or blocked the caller;
* A: the token comes from a strong sign-on;
* H: the access matrix allows the profession to read the document's type (DocumentReference and its
  Binary); other clinical resources follow consent alone;
* ``MASQUE_PS`` documents only for their author and FULL rights; Consents never.

Patients see their record but ``INVISIBLE_PATIENT`` documents; a legal representative (a patient
with a REPRESENTATIVE row) sees the minor's record but ``INVISIBLE_PATIENT`` and
``INVISIBLE_REPRESENTANTS_LEGAUX`` documents. System and operator principals are not filtered;
anonymous callers see nothing.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    delete,
    exists,
    false,
    insert,
    or_,
    select,
    text,
    true,
)

from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.auth.scopes import parse_clinical
from carnet.db.engine import UNTIMED
from carnet.db.tables import access_rights, habilitation_types, record_access, resource_versions, resources
from carnet.errors import Forbidden, Unprocessable
from carnet.errors import bilingual as _t
from carnet.fhir.searchparams import params_for, resource_types
from carnet.policy import scope_allows
from carnet.policy.attributes import Visibility
from carnet.policy.matrix import Habilitations, load_habilitations
from carnet.policy.rights import SOURCES, Level, holds_today, minors_represented_by, recompute

if TYPE_CHECKING:
    from carnet.fhir.store import Repository

DOCUMENT_TYPES = frozenset({"DocumentReference", "Binary"})
PATIENT_ONLY = frozenset({"Consent"})  # what a record's professionals never read
# what professionals may not write: consent and the care team are the patient's (or the operator's)
PATIENT_MANAGED = frozenset({"Consent", "CareTeam", "RelatedPerson"})
# what a patient principal may write in their record (or a represented minor's)
PATIENT_WRITABLE = frozenset({"Consent", "DocumentReference", "Binary", "List", "Patient", "RelatedPerson"})
# what a patient may change in their own Patient (the identity is the hospital's and INSi's)
PATIENT_EDITABLE = frozenset({"generalPractitioner", "telecom", "address", "contact", "communication"})
PATIENT_DOCUMENT_CLASS = "90"  # "Autres documents déposés par le patient"
DIRECTORY = frozenset({"Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService",
                       "Endpoint"})
# what a professional may not change in a Patient: who may read the record and whether it is open
PATIENT_RIGHTS_FIELDS = frozenset({"generalPractitioner", "active", "link"})
# what the rights of a record derive from in its Patient (policy.rights.derive): the médecin traitant,
# open or closed, the identity status (an extension), age, and the INS a representative is named by
RIGHTS_INPUTS = ("generalPractitioner", "active", "extension", "birthDate", "identifier")
# resources of no record that only their creator (and system clients) read
CREATOR_ONLY = frozenset({"Binary", "Bundle", "Group"})
# what operators read of a record (SPEC C4: no clinical content by default): identity and who may
# read it, for identity merges, duplicates and access disputes
OPERATOR_READS = frozenset({"Patient", "RelatedPerson", "CareTeam", "Consent"})


@lru_cache(maxsize=1024)
def readable_types(scopes: frozenset[str]) -> frozenset[str] | None:
    """The resource types SMART scopes let the token read or search; None for every type."""
    out: set[str] = set()
    for parsed in map(parse_clinical, scopes):
        if parsed is not None and ("r" in parsed.permissions or "s" in parsed.permissions):
            if parsed.resource_type == "*":
                return None
            out.add(parsed.resource_type)
    return frozenset(out)


@cache
def compartment_types() -> frozenset[str]:
    """Types whose rows can belong to a patient (``resources.patient_id``): the others are never
    filtered by record rights."""
    out = {"Patient", "Binary"}
    for rtype in resource_types():
        for p in params_for(rtype).values():
            if p.type == "reference" and p.code in ("patient", "subject", "beneficiary") and (
                    not p.targets or "Patient" in p.targets):
                out.add(rtype)
                break
    return frozenset(out)


def _holds(c: Any, actor: str | None, levels: tuple[Level, ...]) -> ColumnElement[bool]:
    """The row's record grants ``actor`` one of ``levels``: one primary-key probe per row. A scalar
    subquery on the key (actor, patient): an ``IN (subquery)`` — or an ``EXISTS``, which PostgreSQL
    turns into a hashed subplan — would read all of a professional's records for every query."""
    a = access_rights.c
    low, high = int(min(levels)), int(max(levels))
    assert high - low + 1 == len(levels), "levels must be contiguous"
    level = select(a.level).where(a.actor == actor, a.patient_id == c.patient_id,
                                  holds_today(a)).scalar_subquery()
    return level == low if low == high else level.between(low, high)  # no expanding IN to render



class DicahPolicy:
    def __init__(self, habilitations: Habilitations | None = None) -> None:
        self.habilitations = habilitations or load_habilitations(None)
        # The predicate of one caller for one type, built once: a professional's requests then only
        # bind it (expressions are immutable, so threads share them).
        self._cached = lru_cache(maxsize=4096)(self._build)

    def attach(self, engine: Engine) -> None:
        """Write the access matrix into ``habilitation_types`` when the table differs from it."""
        wanted = {(prof, t) for prof, types in self.habilitations.types.items() for t in types}
        h = habilitation_types.c
        # start-up work, not a request: the server's statement time limit does not apply
        with engine.connect().execution_options(carnet_write=True, **{UNTIMED: True}) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                # several nodes start at once: one rewrites the table, the others then find it equal
                # (readers are not blocked: EXCLUSIVE conflicts only with writers and itself)
                conn.execute(text("LOCK TABLE habilitation_types IN EXCLUSIVE MODE"))
            stored = {(r.profession, r.doc_type) for r in conn.execute(select(h.profession, h.doc_type))}
            if stored == wanted:
                return
            conn.execute(delete(habilitation_types))
            if wanted:
                conn.execute(insert(habilitation_types),
                             [{"profession": p, "doc_type": t} for p, t in sorted(wanted)])

    # -- reads ------------------------------------------------------------------------------
    def read_filter(self, principal: Principal, resource_type: str | None,
                    table: Table) -> ColumnElement[bool] | None:
        if principal.kind == Kind.ANONYMOUS:
            return false()
        # SMART scopes first: a token for patient/Observation.rs reads no DocumentReference
        types = readable_types(principal.scopes)
        scoped: ColumnElement[bool] | None = None
        if types is not None:
            if resource_type is not None and resource_type not in types:
                return false()
            if resource_type is None:
                scoped = table.c.res_type.in_(sorted(types)) if types else false()
        if principal.kind == Kind.OPERATOR:  # administration, not care: no clinical content
            if resource_type is not None:
                clinical = resource_type in compartment_types() and resource_type not in OPERATOR_READS
                return false() if clinical else scoped
            c = table.c  # resources and resource_versions both carry the record
            admin = or_(c.patient_id.is_(None), c.res_type.in_(sorted(OPERATOR_READS)))
            return admin if scoped is None else and_(scoped, admin)
        rights: ColumnElement[bool] | None = None
        if principal.kind != Kind.SYSTEM and (
                resource_type is None or resource_type in compartment_types()
                or resource_type in CREATOR_ONLY):
            rights = self._cached(principal.kind, principal.fhir_user, principal.profession,
                                  principal.strong_auth, principal.access_mode, principal.patient,
                                  resource_type, table is resources)
        if scoped is None or rights is None:
            return rights if scoped is None else scoped
        return and_(scoped, rights)

    def target_filter(self, principal: Principal) -> Any:
        types = readable_types(principal.scopes)
        if principal.kind == Kind.SYSTEM and types is None:
            return None

        def visible(resource_type: str, alias: Any) -> ColumnElement[bool] | None:
            if principal.kind == Kind.ANONYMOUS or (types is not None and resource_type not in types):
                return false()
            if principal.kind == Kind.OPERATOR:
                clinical = resource_type in compartment_types() and resource_type not in OPERATOR_READS
                return false() if clinical else None
            if principal.kind == Kind.SYSTEM or (
                    resource_type not in compartment_types() and resource_type not in CREATOR_ONLY):
                return None
            return self._predicate(principal, resource_type, alias)
        return visible

    def _build(self, kind: Kind, fhir_user: str | None, profession: str | None, strong: bool,
               mode: AccessMode, patient: str | None, resource_type: str | None,
               current: bool) -> ColumnElement[bool]:
        principal = Principal(kind, "", fhir_user=fhir_user, profession=profession, strong_auth=strong,
                              access_mode=mode, patient=patient)
        if current:
            return self._predicate(principal, resource_type, resources)
        # a version is visible when the resource is visible now
        now = resources.alias("visible_now")
        v = resource_versions.c
        return exists(select(now.c.res_id).where(
            now.c.res_type == v.res_type, now.c.res_id == v.res_id,
            self._predicate(principal, resource_type, now)))

    def _predicate(self, principal: Principal, resource_type: str | None, r: Any) -> ColumnElement[bool]:
        c = r.c
        # directory and other resources of no record; a Binary of no record only for its creator
        shared = c.patient_id.is_(None)
        if resource_type in CREATOR_ONLY:
            shared = and_(shared, c.author == principal.fhir_user)
        elif resource_type is None:
            shared = and_(shared, or_(c.res_type.not_in(sorted(CREATOR_ONLY)),
                                      c.author == principal.fhir_user))
        if principal.kind == Kind.PATIENT:
            me = principal.resource_id
            if me is None:
                return shared
            own = and_(c.patient_id == me, c.visibility.op("&")(int(Visibility.INVISIBLE_PATIENT)) == 0)
            mask = int(Visibility.INVISIBLE_PATIENT | Visibility.INVISIBLE_REPRESENTANTS_LEGAUX)
            minors = and_(_holds(c, principal.fhir_user, (Level.REPRESENTATIVE,)),
                          c.visibility.op("&")(mask) == 0)
            return or_(shared, own, minors)
        if principal.kind != Kind.PRACTITIONER or not principal.fhir_user:
            return shared
        if resource_type in PATIENT_ONLY:
            return false()
        me = principal.fhir_user
        records = _holds(c, me, (Level.READ, Level.FULL)) if principal.strong_auth else false()
        if principal.access_mode != AccessMode.NORMAL and principal.patient and principal.strong_auth:
            records = or_(records, and_(c.patient_id == principal.patient, self._emergency_open(
                principal.patient, me)))
        conditions = [records]
        if resource_type is None:
            conditions.append(c.res_type.not_in(sorted(PATIENT_ONLY)))
        if resource_type is None or resource_type in DOCUMENT_TYPES:
            allowed = self.habilitations.allowed_types(principal.profession)
            docs = c.res_type.not_in(sorted(DOCUMENT_TYPES)) if resource_type is None else false()
            habilitated: ColumnElement[bool]
            if allowed is None:
                habilitated = true()
            elif allowed:
                h = habilitation_types.c
                habilitated = or_(docs, select(h.doc_type).where(  # a key probe, as in _holds
                    h.profession == principal.profession, h.doc_type == c.doc_type
                ).scalar_subquery().is_not(None))
            else:
                habilitated = docs
            emergency = principal.access_mode != AccessMode.NORMAL and principal.patient
            if resource_type is not None and not emergency and principal.strong_auth:
                # one key probe answers both consent and the mask: FULL rights, or READ rights on an
                # unmasked document or one of the caller's own (planned once, not twice)
                a = access_rights.c
                unmasked_or_mine = or_(c.visibility.op("&")(int(Visibility.MASQUE_PS)) == 0, c.author == me)
                conditions = [select(a.level).where(
                    a.actor == me, a.patient_id == c.patient_id, holds_today(a),
                    or_(a.level == int(Level.FULL), and_(a.level == int(Level.READ), unmasked_or_mine)),
                ).scalar_subquery().is_not(None), habilitated]
            else:
                unmasked = or_(c.visibility.op("&")(int(Visibility.MASQUE_PS)) == 0, c.author == me,
                               _holds(c, me, (Level.FULL,)))
                conditions += [habilitated, unmasked]
        return or_(shared, and_(*conditions))

    @staticmethod
    def _emergency_open(patient: str, me: str) -> ColumnElement[bool]:
        ra = record_access.c
        blocked = select(access_rights.c.patient_id).where(
            access_rights.c.actor == me, access_rights.c.patient_id == patient,
            access_rights.c.level == int(Level.BLOCKED))
        return and_(exists(select(ra.patient_id).where(
            ra.patient_id == patient, ra.open.is_(True), ra.qualified.is_(True),
            ra.emergency_opposed.is_(False))), ~exists(blocked))

    # -- writes -----------------------------------------------------------------------------
    def check_write(self, principal: Principal, interaction: str, resource_type: str) -> None:
        letter = {"create": "c", "create-with-id": "c", "update": "u", "patch": "u",
                  "delete": "d"}.get(interaction, "u")
        if not scope_allows(principal, resource_type, letter):
            raise Forbidden(_t(f"Les droits du jeton ne permettent pas {interaction} sur {resource_type}",
                               f"the token's scopes do not allow {interaction} on {resource_type}"))
        if principal.kind == Kind.ANONYMOUS:
            raise Forbidden(_t("Authentification requise", "authentication required"))
        if principal.kind == Kind.PRACTITIONER and resource_type in PATIENT_MANAGED:
            raise Forbidden(_t(f"Seul le patient gère ses {resource_type} (consentement, équipe de soins, "
                               "représentants)",
                               f"only the patient manages their {resource_type} (consent, care team, "
                               "representatives)"))
        if principal.kind == Kind.PATIENT and resource_type not in PATIENT_WRITABLE:
            raise Forbidden(_t(f"Un patient n'écrit pas de {resource_type}",
                               f"a patient does not write {resource_type} resources"))
        if principal.kind in (Kind.PATIENT, Kind.PRACTITIONER):
            if resource_type in DIRECTORY:  # rights derive from it (PractitionerRole.practitioner)
                raise Forbidden(_t(f"L'annuaire ({resource_type}) est tenu par l'exploitant",
                                   f"the directory ({resource_type}) is kept by the operator"))
            if interaction == "create-with-id":  # hidden and absent ids must answer alike
                raise Forbidden(_t("Créer une ressource sous un identifiant choisi est réservé aux clients "
                                   "système ; utilisez POST",
                                   "creating a resource under a chosen id is for system clients; use POST"))
            if interaction == "delete" and resource_type == "Patient":
                raise Forbidden(_t("Un dossier ne se supprime pas par un professionnel ni un patient",
                                   "a record is not deleted by a professional or a patient"))

    def after_write(self, repo: Repository, resource_type: str, resource: dict[str, Any] | None,
                    patient_id: str | None, previous: dict[str, Any] | None,
                    attributes: dict[str, Any]) -> None:
        """After a create, update or delete (``resource`` None) and before commit: refuse what the
        caller may not have written, then bring the derived rights up to date."""
        principal = repo.principal
        if principal.kind == Kind.PATIENT:
            self._check_patient_write(repo, resource_type, resource, patient_id, previous, attributes)
        if principal.kind == Kind.PRACTITIONER and resource_type == "Patient" and resource is not None:
            before = (previous or {}).get("resource") or {}
            changed = {k for k in PATIENT_RIGHTS_FIELDS if before.get(k) != resource.get(k)}
            if previous is not None and changed:
                raise Forbidden(_t(f"Seul le patient change {', '.join(sorted(changed))} de son dossier",
                                   f"only the patient changes {', '.join(sorted(changed))} in their record"))
        if resource_type == "DocumentReference" and resource is not None:
            self._check_visibility(principal, resource, previous, attributes)
        before = (previous or {}).get("resource")
        if resource_type == "Patient" and resource is not None and before is not None and all(
                before.get(k) == resource.get(k) for k in RIGHTS_INPUTS):
            return  # an edit of the address or the phone: the record's rights do not change
        if resource_type in SOURCES and patient_id is not None:
            repo.flush()  # a transaction Bundle queues its inserts: the derivation must read them
            recompute(repo.conn, patient_id)
            if resource_type == "Patient" and resource is not None:
                for minor in minors_represented_by(repo.conn, resource):
                    if minor != patient_id:
                        recompute(repo.conn, minor)

    @staticmethod
    def _check_visibility(principal: Principal, resource: dict[str, Any], previous: dict[str, Any] | None,
                          attributes: dict[str, Any]) -> None:
        bits = Visibility(attributes.get("visibility") or 0)
        if previous is None:
            return
        before = Visibility(previous.get("visibility") or 0)
        if bits & Visibility.INVISIBLE_PATIENT and not before & Visibility.INVISIBLE_PATIENT:
            lifted = bool(before & Visibility.PATIENT_LIFTED)
            raise Unprocessable(_t(
                "INVISIBLE_PATIENT ne se pose qu'à la publication du document"
                + (" ; il a été levé et ne peut plus être remis" if lifted else ""),
                "INVISIBLE_PATIENT is set only when the document is published"
                + ("; it was lifted and can never be set again" if lifted else "")),
                expression=["DocumentReference.securityLabel"])

    def _check_patient_write(self, repo: Repository, resource_type: str, resource: dict[str, Any] | None,
                             patient_id: str | None, previous: dict[str, Any] | None,
                             attributes: dict[str, Any]) -> None:
        principal = repo.principal
        me = principal.resource_id
        mine = patient_id is not None and (patient_id == me or repo.conn.execute(
            select(access_rights.c.level).where(
                access_rights.c.actor == principal.fhir_user, access_rights.c.patient_id == patient_id,
                access_rights.c.level == int(Level.REPRESENTATIVE), holds_today(access_rights.c)
            )).first() is not None)
        if not mine:
            raise Forbidden(_t("Un patient n'écrit que dans son dossier "
                               "(ou celui d'un mineur qu'il représente)",
                               "a patient writes only in their own record (or a minor's they represent)"))
        if resource is None:
            if resource_type not in ("Consent", "RelatedPerson"):
                raise Forbidden(_t("Un patient ne supprime que ses consentements et représentants",
                                   "a patient deletes only their consents and representatives"))
            return
        if resource_type == "Patient":
            if previous is None:
                raise Forbidden(_t("Un patient ne crée pas de dossier", "a patient does not create records"))
            before = previous.get("resource")
            if before is not None:
                changed = {k for k in set(before) | set(resource)
                           if k not in ("meta", "text") and before.get(k) != resource.get(k)}
                if changed - PATIENT_EDITABLE:
                    raise Forbidden(_t(
                        "Un patient modifie dans son dossier le médecin traitant, ses coordonnées et ses "
                        f"contacts, pas {', '.join(sorted(changed - PATIENT_EDITABLE))}",
                        "a patient changes their médecin traitant, contact details and contacts, not "
                        f"{', '.join(sorted(changed - PATIENT_EDITABLE))}"))
        bits = Visibility(attributes.get("visibility") or 0)
        if resource_type == "DocumentReference":
            if bits & (Visibility.INVISIBLE_PATIENT | Visibility.INVISIBLE_REPRESENTANTS_LEGAUX):
                raise Forbidden(_t("Un patient ne cache pas un document à lui-même ou à ses représentants",
                                   "a patient does not hide a document from themselves or their "
                                   "representatives"))
            if previous is None and not _has_class(resource, PATIENT_DOCUMENT_CLASS):
                raise Forbidden(_t("Un patient dépose des documents de classe 90 (« Autres documents déposés "
                                   "par le patient »)",
                                   "a patient uploads documents of class 90 (\"other documents uploaded by "
                                   "the patient\")"))


def _has_class(resource: dict[str, Any], code: str) -> bool:
    for concept in resource.get("category") or []:
        for coding in (concept or {}).get("coding") or []:
            if isinstance(coding, dict) and coding.get("code") == code:
                return True
    return False
