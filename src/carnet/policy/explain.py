"""Why can someone (not) see a record or a document: the DICAH conditions one by one, each with its
reason, from the same derivation the read predicates are built from (:mod:`carnet.policy.rights`).

Used by ``carnet policy explain`` and kept beside the policy so that an explanation and an
enforcement cannot drift apart: a test asserts that every explanation agrees with what a read
under that principal returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.db.tables import resources
from carnet.policy.attributes import Visibility
from carnet.policy.matrix import Habilitations
from carnet.policy.rights import Level, rights_of


@dataclass
class Step:
    condition: str  # D, I, C, A, H, visibility
    ok: bool
    reason: str


@dataclass
class Explanation:
    who: str
    patient: str
    document: str | None
    steps: list[Step] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return all(s.ok for s in self.steps)

    def add(self, condition: str, ok: bool, fr: str, en: str) -> bool:
        self.steps.append(Step(condition, ok, f"{fr} / {en}"))
        return ok

    def lines(self) -> list[str]:
        verdict = "AUTORISÉ / ALLOWED" if self.allowed else "REFUSÉ / DENIED"
        target = f"DocumentReference/{self.document}" if self.document else f"Patient/{self.patient}"
        out = [f"{self.who} → {target}: {verdict}"]
        out += [f"  [{'ok' if s.ok else 'NO'}] {s.condition}: {s.reason}" for s in self.steps]
        return out


def _document(conn: Connection, document_id: str) -> Any:
    t = resources.c
    return conn.execute(select(t.patient_id, t.doc_type, t.visibility, t.author, t.deleted).where(
        t.res_type == "DocumentReference", t.res_id == document_id)).first()


def explain(conn: Connection, habilitations: Habilitations, principal: Principal, patient_id: str,
            document_id: str | None = None) -> Explanation:
    who = principal.fhir_user or f"{principal.kind.value}:{principal.subject}"
    out = Explanation(who, patient_id, document_id)
    doc = _document(conn, document_id) if document_id else None
    if document_id is not None and (doc is None or doc.deleted or doc.patient_id != patient_id):
        out.add("D", False, f"Aucun document {document_id} dans ce dossier",
                f"no document {document_id} in this record")
        return out
    bits = Visibility(doc.visibility or 0) if doc is not None else Visibility.NONE
    if principal.kind in (Kind.SYSTEM, Kind.OPERATOR):
        out.add("-", True, "Client système ou exploitant : aucun filtre",
                "system or operator client: no filter")
        return out
    rights = rights_of(conn, patient_id)
    if principal.kind == Kind.PATIENT:
        if principal.resource_id == patient_id:
            out.add("-", True, "Son propre dossier", "their own record")
            if doc is not None:
                out.add("visibility", not bits & Visibility.INVISIBLE_PATIENT,
                        "Document " + ("invisible au patient" if bits & Visibility.INVISIBLE_PATIENT
                                       else "visible du patient"),
                        "document " + ("invisible to the patient" if bits & Visibility.INVISIBLE_PATIENT
                                       else "visible to the patient"))
            return out
        represents = principal.fhir_user is not None and rights.level(
            principal.fhir_user) == Level.REPRESENTATIVE
        if not out.add("C", represents, "Représentant légal du patient mineur" if represents else
                       "Ni le patient ni son représentant légal",
                       "legal representative of the minor" if represents else
                       "neither the patient nor their legal representative"):
            return out
        out.add("D", rights.open, "Dossier ouvert" if rights.open else "Dossier fermé",
                "record open" if rights.open else "record closed")
        if doc is not None:
            hidden = bits & (Visibility.INVISIBLE_PATIENT | Visibility.INVISIBLE_REPRESENTANTS_LEGAUX)
            out.add("visibility", not hidden,
                    "Document caché aux représentants" if hidden else "Document visible",
                    "document hidden from representatives" if hidden else "document visible")
        return out
    if principal.kind != Kind.PRACTITIONER or not principal.fhir_user:
        out.add("A", False, "Appelant non authentifié", "unauthenticated caller")
        return out
    me = principal.fhir_user
    out.add("D", rights.open, "Dossier ouvert" if rights.open else "Dossier fermé ou inexistant",
            "record open" if rights.open else "record closed or absent")
    out.add("I", rights.qualified, "Identité INS qualifiée" if rights.qualified else "Identité non qualifiée",
            "INS identity qualified" if rights.qualified else "identity not qualified")
    grant = rights.grants.get(me)
    emergency = principal.access_mode != AccessMode.NORMAL and principal.patient == patient_id
    if grant is not None and grant.level == Level.BLOCKED:
        out.add("C", False, "Bloqué par le patient", "blocked by the patient")
    elif grant is not None and grant.level in (Level.READ, Level.FULL):
        out.add("C", True, "; ".join(r.split(" / ")[0] for r in grant.reasons),
                "; ".join(r.split(" / ")[-1] for r in grant.reasons))
    elif emergency:
        out.add("C", not rights.emergency_opposed,
                "Accès en urgence"
                + (" refusé : le patient s'y est opposé" if rights.emergency_opposed else ""),
                "emergency access" + (" refused: the patient opposed it" if rights.emergency_opposed else ""))
    else:
        out.add("C", False, "Ni équipe de soins, ni autorisation du patient, ni médecin traitant",
                "neither care team, nor the patient's authorisation, nor médecin traitant")
    out.add("A", principal.strong_auth, "Authentification forte" if principal.strong_auth else
            "Authentification non forte", "strong sign-on" if principal.strong_auth else "no strong sign-on")
    if doc is not None:
        ok = habilitations.may_read(principal.profession, doc.doc_type)
        out.add("H", ok, f"Matrice {habilitations.name} v{habilitations.version} : profession "
                f"{principal.profession or '?'} × type {doc.doc_type or '?'} "
                + ("autorisé" if ok else "non autorisé"),
                f"matrix {habilitations.name} v{habilitations.version}: profession "
                f"{principal.profession or '?'}"
                f" × type {doc.doc_type or '?'} " + ("allowed" if ok else "not allowed"))
        if bits & Visibility.MASQUE_PS:
            full = grant is not None and grant.level == Level.FULL
            author = doc.author == me
            out.add("visibility", full or author,
                    "Document masqué aux professionnels : " + (
                        "auteur" if author else "droits du médecin traitant" if full else "masqué"),
                    "document masked from professionals: " + (
                        "its author" if author else "médecin traitant's rights" if full else "masked"))
    return out
