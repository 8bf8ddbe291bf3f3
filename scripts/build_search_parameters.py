"""Extract the FHIR R4 search parameters Carnet indexes from the spec's own definitions.

Source: the npm package ``hl7.fhir.r4.examples`` 4.0.1 (CC0), which carries the 1,400
SearchParameter resources of FHIR R4. Usage:

    npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
    python scripts/build_search_parameters.py package src/carnet/fhir/definitions

Writes ``search_parameters.json``: {resource type: {code: {type, expression, target}}} for the
core parameters (extension-defined and example parameters are left out), and
``resource_types.json``: the list of concrete resource types.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SKIP_IDS = ("-extensions-", "genetic", "example", "-sample")
SKIP_TYPES = {"composite", "special"}


def main(package: Path, out: Path) -> None:
    types = []
    for path in sorted(package.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text())
        concrete = sd.get("kind") == "resource" and sd.get("derivation") == "specialization"
        if concrete and not sd.get("abstract"):
            types.append(sd["type"])
    params: dict[str, dict[str, dict[str, object]]] = {t: {} for t in types}
    for path in sorted(package.glob("SearchParameter-*.json")):
        sp = json.loads(path.read_text())
        if any(s in sp["id"] for s in SKIP_IDS) or sp["type"] in SKIP_TYPES or not sp.get("expression"):
            continue
        for base in sp["base"]:
            targets = types if base in ("Resource", "DomainResource") else [base]
            for rtype in targets:
                if rtype not in params:
                    continue
                expr = sp["expression"]
                # Multi-base expressions are unions over every base: keep this type's part.
                parts = [p.strip() for p in split_union(expr)]
                mine = [p for p in parts if p.startswith((rtype + ".", "(" + rtype + ".", base + "."))]
                if base in ("Resource", "DomainResource"):
                    mine = [p.replace(base + ".", rtype + ".", 1) for p in parts]
                if not mine:
                    continue
                entry: dict[str, object] = {"type": sp["type"], "expression": " | ".join(mine)}
                if sp.get("target"):
                    entry["target"] = sorted(sp["target"])
                params[rtype][sp["code"]] = entry
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_parameters.json").write_text(json.dumps(params, indent=0, sort_keys=True) + "\n")
    (out / "resource_types.json").write_text(json.dumps(sorted(types), indent=0) + "\n")
    print(f"{len(types)} resource types, {sum(len(v) for v in params.values())} parameters")


def split_union(expr: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
