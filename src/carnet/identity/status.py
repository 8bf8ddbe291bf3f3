"""Identity status per the national identity-vigilance framework (RNIV).

The status follows from two independent facts:

* **I**: the strict traits were retrieved or verified through the INSi teleservice;
* **C**: the identity was checked against a high-trust identity document.

====== ===== ===== ==================================
status   I     C   meaning
====== ===== ===== ==================================
PROV    no    no   identité provisoire / provisional
RECUP   yes   no   identité récupérée / retrieved
VALI    no    yes  identité validée / validated
QUAL    yes   yes  identité qualifiée / qualified
====== ===== ===== ==================================

Rules chosen where the public texts leave room (documented assumptions):

* Editing a strict trait drops I (QUAL→VALI, RECUP→PROV) until a new INSi check; C is kept, the
  document having been checked against the person, not against the edited record.
* The "douteuse" (doubtful) and "fictive" (fictitious) flags forbid C. Setting such a flag on an
  identity that has C withdraws C; clearing the flag does not give it back (a new check is needed).
  They do not forbid I.
* Strict traits are compared exactly (no case or accent folding): they must stay as INSi returned them.

Everything here is pure: functions take a state and return a new one, with the transition appended
to its history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import NoReturn

from carnet.errors import Issue, Unprocessable

STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"
VALIDATION_MODE_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-mode-validation-identity"

GENDERS = ("male", "female", "other", "unknown")
STRICT_TRAITS = ("birth_family_name", "birth_given_names", "birth_date", "sex", "birthplace_code")


def _issue(fr: str, en: str, expression: str | None = None) -> Issue:
    return Issue("error", "business-rule", f"{fr} / {en}", [expression] if expression else [])


def _fail(issue: Issue) -> NoReturn:
    raise Unprocessable(issue.diagnostics, issues=[issue])


class IdentityStatus(StrEnum):
    PROV = "PROV"
    RECUP = "RECUP"
    VALI = "VALI"
    QUAL = "QUAL"

    @property
    def label_fr(self) -> str:
        return _STATUS_LABELS[self][0]

    @property
    def label_en(self) -> str:
        return _STATUS_LABELS[self][1]


_STATUS_LABELS = {
    IdentityStatus.PROV: ("Identité provisoire", "Provisional identity"),
    IdentityStatus.RECUP: ("Identité récupérée", "Retrieved identity"),
    IdentityStatus.VALI: ("Identité validée", "Validated identity"),
    IdentityStatus.QUAL: ("Identité qualifiée", "Qualified identity"),
}


class DocumentType(StrEnum):
    """High-trust identity documents accepted for C. Values are the FR Core
    ``fr-core-cs-mode-validation-identity`` codes."""

    PASSPORT = "PA"
    NATIONAL_ID_CARD = "CN"
    RESIDENCE_PERMIT = "CS"
    FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT = "LE"  # for minors: livret de famille + a parent's ID

    @property
    def label_fr(self) -> str:
        return _DOCUMENT_LABELS[self][0]

    @property
    def label_en(self) -> str:
        return _DOCUMENT_LABELS[self][1]


_DOCUMENT_LABELS = {
    DocumentType.PASSPORT: ("Passeport", "Passport"),
    DocumentType.NATIONAL_ID_CARD: ("Carte nationale d'identité", "National identity card"),
    DocumentType.RESIDENCE_PERMIT: ("Titre de séjour", "Residence permit"),
    DocumentType.FAMILY_RECORD_BOOK_AND_PARENT_DOCUMENT: (
        "Livret de famille et pièce d'identité d'un parent (mineur)",
        "Family record book and a parent's identity document (minor)"),
}


class IdentityFlag(StrEnum):
    DOUTEUSE = "douteuse"
    FICTIVE = "fictive"

    @property
    def label_fr(self) -> str:
        return "identité douteuse" if self is IdentityFlag.DOUTEUSE else "identité fictive"

    @property
    def label_en(self) -> str:
        return "doubtful identity" if self is IdentityFlag.DOUTEUSE else "fictitious identity"


class Event(StrEnum):
    INSI_VERIFICATION = "insi-verification"
    DOCUMENT_CHECK = "document-check"
    STRICT_TRAITS_EDIT = "strict-traits-edit"
    FLAG_SET = "flag-set"
    FLAG_CLEARED = "flag-cleared"


@dataclass(frozen=True)
class Traits:
    """The five strict traits of an INS. ``birthplace_code`` is the INSEE code of the commune of
    birth, or of the country (99xxx) for people born abroad; it may be unknown (None)."""

    birth_family_name: str
    birth_given_names: tuple[str, ...]
    birth_date: date
    sex: str  # FHIR administrative gender: male | female | other | unknown
    birthplace_code: str | None = None

    def __post_init__(self) -> None:
        if self.sex not in GENDERS:
            _fail(_issue(f"Sexe invalide « {self.sex} » : attendu {', '.join(GENDERS)}",
                         f'Invalid sex "{self.sex}": expected {", ".join(GENDERS)}'))
        if isinstance(self.birth_date, datetime) or not isinstance(self.birth_date, date):
            _fail(_issue("La date de naissance doit être une date (sans heure)",
                         "The birth date must be a date (without a time)"))
        if isinstance(self.birth_given_names, str):
            _fail(_issue("Les prénoms de naissance doivent être une liste",
                         "Birth given names must be a list"))
        if not self.birth_family_name.strip():
            _fail(_issue("Le nom de naissance est vide", "The birth family name is empty"))

    @property
    def first_given_name(self) -> str | None:
        """The "premier prénom": the first of the birth given names."""
        return self.birth_given_names[0] if self.birth_given_names else None


def given_names_from_list(text: str) -> tuple[str, ...]:
    """Split the INS list of birth given names ("JEAN STÉPHANE PATRICK") into a tuple; compound given
    names keep their hyphen ("MARIE-LOUISE")."""
    return tuple(text.split())


def strict_traits_changed(old: Traits, new: Traits) -> list[str]:
    """Names of the strict traits whose values differ, in the order of :data:`STRICT_TRAITS`."""
    return [f.name for f in fields(Traits) if f.name in STRICT_TRAITS
            and getattr(old, f.name) != getattr(new, f.name)]


@dataclass(frozen=True)
class Transition:
    who: str
    when: datetime  # timezone-aware, UTC
    what: Event
    from_status: IdentityStatus
    to_status: IdentityStatus
    detail: str = ""


@dataclass(frozen=True)
class IdentityState:
    has_i: bool = False
    has_c: bool = False
    flags: frozenset[IdentityFlag] = frozenset()
    document_type: DocumentType | None = None  # the document behind C, when C holds
    history: tuple[Transition, ...] = field(default=())

    @property
    def status(self) -> IdentityStatus:
        return status(self)


def status(state: IdentityState) -> IdentityStatus:
    if state.has_i:
        return IdentityStatus.QUAL if state.has_c else IdentityStatus.RECUP
    return IdentityStatus.VALI if state.has_c else IdentityStatus.PROV


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("transition times must be timezone-aware")
    return at.astimezone(UTC)


def _who(by: str) -> str:
    if not by.strip():
        raise ValueError("a transition needs the identifier of who made it")
    return by


def _move(state: IdentityState, new: IdentityState, by: str, at: datetime, what: Event,
          detail: str) -> IdentityState:
    step = Transition(who=_who(by), when=_utc(at), what=what, from_status=status(state),
                      to_status=status(new), detail=detail)
    return replace(new, history=(*state.history, step))


def _document_type(value: DocumentType | str, expression: str | None) -> DocumentType:
    try:
        return DocumentType(value)
    except ValueError:
        accepted = ", ".join(f"{d.value} ({d.label_fr})" for d in DocumentType)
        accepted_en = ", ".join(f"{d.value} ({d.label_en})" for d in DocumentType)
        _fail(_issue(f"Type de pièce non accepté « {value} » : attendu {accepted}",
                     f'Document type not accepted "{value}": expected {accepted_en}', expression))


def record_insi_verification(state: IdentityState, by: str, at: datetime, *,
                             detail: str = "") -> IdentityState:
    """The traits were retrieved or verified through INSi: I holds."""
    return _move(state, replace(state, has_i=True), by, at, Event.INSI_VERIFICATION, detail)


def record_document_check(state: IdentityState, document_type: DocumentType | str, by: str, at: datetime, *,
                          detail: str = "", expression: str | None = None) -> IdentityState:
    """The identity was checked against a high-trust document: C holds. Refused for flagged identities."""
    document_type = _document_type(document_type, expression)
    if state.flags:
        flag = sorted(state.flags)[0]
        _fail(_issue(f"Contrôle par pièce d'identité refusé : l'identité est marquée « {flag.label_fr} »",
                     f'Identity document check refused: the identity is flagged "{flag.label_en}"',
                     expression))
    return _move(state, replace(state, has_c=True, document_type=document_type), by, at, Event.DOCUMENT_CHECK,
                 detail or document_type.value)


def edit_strict_traits(state: IdentityState, changed_fields: Iterable[str], by: str, at: datetime, *,
                       expression: str | None = None) -> IdentityState:
    """Some strict traits were edited: I is dropped until a new INSi check. Nothing changes (and nothing
    is recorded) when no field changed."""
    changed = list(dict.fromkeys(changed_fields))
    unknown = [f for f in changed if f not in STRICT_TRAITS]
    if unknown:
        _fail(_issue(f"Trait strict inconnu : {', '.join(unknown)} (attendu : {', '.join(STRICT_TRAITS)})",
                     f"Unknown strict trait: {', '.join(unknown)} (expected: {', '.join(STRICT_TRAITS)})",
                     expression))
    if not changed:
        return state
    return _move(state, replace(state, has_i=False), by, at, Event.STRICT_TRAITS_EDIT, ",".join(changed))


def apply_traits_edit(state: IdentityState, old: Traits, new: Traits, by: str, at: datetime) -> IdentityState:
    """:func:`edit_strict_traits` with the fields found by :func:`strict_traits_changed`."""
    return edit_strict_traits(state, strict_traits_changed(old, new), by, at)


def set_flag(state: IdentityState, flag: IdentityFlag, by: str, at: datetime, *, present: bool = True,
             detail: str = "") -> IdentityState:
    """Set (or with ``present=False`` clear) a flag. Setting one withdraws C. Setting a flag already set,
    or clearing one that is absent, changes nothing and records nothing."""
    flag = IdentityFlag(flag)
    if present == (flag in state.flags):
        return state
    if present:
        new = replace(state, flags=state.flags | {flag}, has_c=False, document_type=None)
        return _move(state, new, by, at, Event.FLAG_SET, detail or flag.value)
    return _move(state, replace(state, flags=state.flags - {flag}), by, at, Event.FLAG_CLEARED,
                 detail or flag.value)


def may_share_matricule(state: IdentityState) -> bool:
    """Only a qualified identity may carry its matricule in anything exchanged (documents fed, messages,
    exports)."""
    return status(state) is IdentityStatus.QUAL


def require_qualified(state: IdentityState, *, expression: str | None = None) -> None:
    current = status(state)
    if current is not IdentityStatus.QUAL:
        _fail(_issue(f"Identité non qualifiée (statut {current.value}, {current.label_fr.lower()}) : le "
                     "matricule INS ne peut pas être transmis",
                     f"Identity not qualified (status {current.value}, {current.label_en.lower()}): the INS "
                     "matricule may not be exchanged", expression))
