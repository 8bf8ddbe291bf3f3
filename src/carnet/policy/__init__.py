"""Access policy. The FHIR store asks its Policy for SQL predicates that every read query of a
request carries (search, read, history, includes, counts) and for a decision before each write.

Until consent-driven access control lands, :class:`OpenPolicy` is the development policy: it
admits every principal that holds a scope for the resource type and action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ColumnElement, Table

from carnet.auth.principal import Principal
from carnet.auth.scopes import parse_clinical
from carnet.errors import Forbidden

if TYPE_CHECKING:
    from carnet.fhir.store import Repository


class Policy(Protocol):
    def read_filter(self, principal: Principal, resource_type: str | None,
                    table: Table) -> ColumnElement[bool] | None:
        """A predicate on ``table`` (resources or resource_versions) restricting what the principal
        may see; None when nothing is hidden."""

    def check_write(self, principal: Principal, interaction: str, resource_type: str) -> None:
        """Raise Forbidden when the principal may not perform ``interaction`` on the type."""

    def target_filter(self, principal: Principal) -> Any:
        """For searches: ``(type, alias of resources) -> predicate on the alias | None``, the
        principal's read predicate for resources reached through a reference; None when the
        principal sees everything."""

    def after_write(self, repo: Repository, resource_type: str, resource: dict[str, Any] | None,
                    patient_id: str | None, previous: dict[str, Any] | None,
                    attributes: dict[str, Any]) -> None:
        """After a write (``resource`` None for a delete), in its transaction: raise to refuse what
        was written; keep what the policy derives from it up to date. ``previous`` holds the stored
        row's access attributes before the write (None for a creation), and under ``resource`` the
        stored resource when the write path read it (types with write hooks); ``attributes`` the
        new attributes."""


def scope_allows(principal: Principal, resource_type: str, letter: str) -> bool:
    """SMART scope check: ``<context>/<Type|*>.<cruds>`` (v1 ``read``/``write``/``*`` too)."""
    return any(parsed is not None and parsed.resource_type in (resource_type, "*")
               and letter in parsed.permissions for parsed in map(parse_clinical, principal.scopes))


class OpenPolicy:
    """Development policy: scopes decide, nothing is hidden by content."""

    def read_filter(self, principal: Principal, resource_type: str | None,
                    table: Table) -> ColumnElement[bool] | None:
        return None

    def check_write(self, principal: Principal, interaction: str, resource_type: str) -> None:
        letter = {"create": "c", "create-with-id": "c", "update": "u", "patch": "u",
                  "delete": "d"}.get(interaction, "u")
        if not scope_allows(principal, resource_type, letter):
            raise Forbidden(f"the token's scopes do not allow {interaction} on {resource_type}")

    def target_filter(self, principal: Principal) -> Any:
        return None

    def after_write(self, repo: Repository, resource_type: str, resource: dict[str, Any] | None,
                    patient_id: str | None, previous: dict[str, Any] | None,
                    attributes: dict[str, Any]) -> None:
        return None
