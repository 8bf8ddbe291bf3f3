"""Audit seam. Services call ``AuditSink.record`` inside the transaction of the change they record;
denied and failed attempts go to ``later``, written once that transaction is over (a rollback
must not take them with it). :mod:`carnet.audit.sink` writes them to the transparency log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from carnet.auth.principal import Principal


@dataclass(frozen=True)
class AuditRecord:
    interaction: str  # read | vread | search | history | create | update | patch | delete | <operation>
    outcome: int  # 0 success, 4 minor failure, 8 serious failure, 12 major failure
    resource_type: str | None = None
    resource_ids: tuple[str, ...] = ()
    query: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # (type, id, patient) of each resource touched: one AuditEvent per patient concerned
    entities: tuple[tuple[str, str, str | None], ...] = ()
    patient: str | None = None  # the record concerned when no resource names it (a refused access)
    message: str | None = None  # why it failed


class AuditSink(Protocol):
    def record(self, conn: Connection | None, principal: Principal, entry: AuditRecord,
               later: list[dict[str, Any]] | None = None) -> None: ...

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    async def write_async(self, rows: list[dict[str, Any]]) -> None: ...

    def flush(self) -> int: ...


class NoAudit:
    """Records nothing (tests of the engine alone; benchmarks of reads without auditing)."""

    def record(self, conn: Connection | None, principal: Principal, entry: AuditRecord,
               later: list[dict[str, Any]] | None = None) -> None:
        return None

    def write(self, rows: list[dict[str, Any]]) -> None:
        return None

    async def write_async(self, rows: list[dict[str, Any]]) -> None:
        return None

    def flush(self) -> int:
        return 0
