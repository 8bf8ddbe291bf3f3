"""The access matrix (the H of DICAH): profession (TRE_G15) × document type → may read.

A versioned data file (``data/habilitations.json`` by default, or the operator's own through the
``habilitations_file`` setting) lists per profession either ``"all": true`` or the document classes
(JDV_J06 codes) it reads, plus optional ``types`` (extra LOINC types) and ``deny_types``. Classes
expand to the J07 types that ASS_X04 maps to them, so the read predicate compares one column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from carnet.documents import valuesets
from carnet.errors import Invalid

DEFAULT = Path(__file__).parent / "data" / "habilitations.json"


@dataclass(frozen=True)
class Habilitations:
    name: str
    version: str
    source: str
    everything: frozenset[str]  # professions that read every type
    types: dict[str, frozenset[str]] = field(default_factory=dict)  # profession -> readable types
    classes: dict[str, frozenset[str]] = field(default_factory=dict)  # for explanations

    def allowed_types(self, profession: str | None) -> frozenset[str] | None:
        """None: every type; otherwise the readable types (empty for an unknown profession)."""
        if profession in self.everything:
            return None
        return self.types.get(profession or "", frozenset())

    def may_read(self, profession: str | None, doc_type: str | None) -> bool:
        allowed = self.allowed_types(profession)
        return allowed is None or doc_type is None or doc_type in allowed


def _types_by_class() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for concept in valuesets.value_set("type").concepts.values():
        dtype = concept if isinstance(concept, valuesets.DocumentType) else None
        if dtype is not None and dtype.class_code:
            out.setdefault(dtype.class_code, set()).add(dtype.code)
    return out


def parse(raw: dict[str, Any], where: str) -> Habilitations:
    by_class = _types_by_class()
    everything: set[str] = set()
    types: dict[str, frozenset[str]] = {}
    classes: dict[str, frozenset[str]] = {}
    professions = raw.get("professions")
    if not isinstance(professions, dict):
        raise Invalid(f"{where}: 'professions' must be an object keyed by TRE_G15 profession code")
    for code, entry in professions.items():
        if not isinstance(entry, dict):
            raise Invalid(f"{where}: the entry of profession {code} must be an object")
        if entry.get("all") is True:
            everything.add(code)
            continue
        wanted = [str(c) for c in entry.get("classes") or []]
        unknown = [c for c in wanted if c not in by_class]
        if unknown:
            raise Invalid(f"{where}: profession {code}: unknown document classes {unknown}")
        readable = {t for c in wanted for t in by_class[c]} | {str(t) for t in entry.get("types") or []}
        readable -= {str(t) for t in entry.get("deny_types") or []}
        types[code] = frozenset(readable)
        classes[code] = frozenset(wanted)
    return Habilitations(str(raw.get("name") or where), str(raw.get("version") or "?"),
                         str(raw.get("source") or ""), frozenset(everything), types, classes)


@cache
def load_habilitations(path: Path | None) -> Habilitations:
    file = path or DEFAULT
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Invalid(f"the access matrix {file} cannot be read: {exc}") from None
    return parse(raw, str(file.name))
