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

    @classmethod
    def system(cls, subject: str = "carnet-system") -> Principal:
        return cls(Kind.SYSTEM, subject, frozenset({"system/*.cruds"}), display="system")

    @classmethod
    def development(cls) -> Principal:
        """The caller of an unauthenticated request in development mode."""
        return cls(Kind.SYSTEM, "development", frozenset({"system/*.cruds"}), display="development")
