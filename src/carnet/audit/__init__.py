"""Audit seam. Services call ``AuditSink.record`` inside the transaction of the change they record
(and for denied or failed attempts); the ledger-backed sink arrives with the traceability work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Connection

from carnet.auth.principal import Principal


@dataclass(frozen=True)
class AuditRecord:
    interaction: str  # read | vread | search | history | create | update | patch | delete | ...
    outcome: int  # 0 success, 4 minor failure, 8 serious failure, 12 major failure
    resource_type: str | None = None
    resource_ids: tuple[str, ...] = ()
    query: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


class AuditSink(Protocol):
    def record(self, conn: Connection | None, principal: Principal, entry: AuditRecord) -> None: ...


class NoAudit:
    """Records nothing: the default until the transparency log is configured."""

    def record(self, conn: Connection | None, principal: Principal, entry: AuditRecord) -> None:
        return None
