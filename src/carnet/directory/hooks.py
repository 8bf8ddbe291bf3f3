"""Directory rules on every write: national identifiers of professionals and structures must be
well formed, with a valid key (RPPS and SIRET Luhn, FINESS key, PS_IdNat layout), whichever way the
resource arrives (REST, Bundle, import)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from carnet.directory import fhir as dfhir
from carnet.directory import keys
from carnet.errors import Issue, Unprocessable
from carnet.fhir.store import Repository


def _sirene(value: str, *, expression: str | None = None) -> str:
    digits = "".join(value.split())
    if len(digits) == 14:
        return keys.validate_siret(digits, expression=expression)
    return keys.validate_siren(digits, expression=expression)


_CHECKS: dict[str, Callable[..., Any]] = {
    dfhir.RPPS_SYSTEM: keys.validate_rpps,
    dfhir.FINESS_SYSTEM: keys.validate_finess,
    dfhir.PS_IDNAT_SYSTEM: keys.parse_ps_idnat,
    dfhir.STRUCTURE_IDNAT_SYSTEM: keys.parse_structure_idnat,
    dfhir.SIRENE_SYSTEM: _sirene,
}


def check_directory_identifiers(repo: Repository, resource: dict[str, Any],
                                previous: dict[str, Any] | None) -> None:
    issues: list[Issue] = []
    rtype = resource["resourceType"]
    for i, ident in enumerate(resource.get("identifier") or []):
        if not isinstance(ident, dict):
            continue
        check = _CHECKS.get(str(ident.get("system", "")))
        value = ident.get("value")
        if check is None or not isinstance(value, str):
            continue
        try:
            check(value, expression=f"{rtype}.identifier[{i}].value")
        except Unprocessable as exc:
            issues.extend(exc.issues)
    if issues:
        raise Unprocessable(f"the {rtype} carries invalid national identifiers", issues=issues)
