"""Who is calling. Every service takes a Principal; policy and audit read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    SYSTEM = "system"
    PRACTITIONER = "practitioner"
    PATIENT = "patient"
    OPERATOR = "operator"
    ANONYMOUS = "anonymous"


class AccessMode(StrEnum):
    NORMAL = "normal"
    EMERGENCY = "emergency"
    REGULATION = "regulation"


@dataclass(frozen=True)
class Principal:
    kind: Kind
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    display: str = ""
    profession: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    access_mode: AccessMode = AccessMode.NORMAL
    # The FHIR resource the caller is ("Practitioner/<id>", "Patient/<id>"): SMART's fhirUser.
    fhir_user: str | None = None
    # The patient a token is bound to (SMART launch context; emergency and regulation tokens).
    patient: str | None = None
    # Signed on with a strong means (eIDAS substantial: Pro Santé Connect's acr "eidas1").
    strong_auth: bool = False
    client_id: str | None = None
    token_id: str | None = None  # the access token's jti, for revocation and the audit trail
    reason: str | None = None  # the written reason of an emergency or regulation access

    @property
    def resource_id(self) -> str | None:
        """The id part of :attr:`fhir_user`."""
        return self.fhir_user.split("/", 1)[1] if self.fhir_user and "/" in self.fhir_user else None

    @classmethod
    def system(cls, subject: str = "carnet-system") -> Principal:
        return cls(Kind.SYSTEM, subject, frozenset({"system/*.cruds"}), display="system")

    @classmethod
    def development(cls) -> Principal:
        """The caller of an unauthenticated request in development mode."""
        return cls(Kind.SYSTEM, "development", frozenset({"system/*.cruds"}), display="development")
