"""Compile the FHIR R4 (4.0.1) StructureDefinitions into the compact data the validator loads.

Usage::

    python scripts/build_structure_definitions.py <package-folder> [<output-folder>]

``<package-folder>`` is the unpacked ``package/`` folder of the npm package
``hl7.fhir.r4.examples@4.0.1`` (it holds ``StructureDefinition-*.json``, ``ValueSet-*.json`` and
``CodeSystem-*.json``). The output folder defaults to ``src/carnet/fhir/definitions/structure``.

Written files:

``r4-structure.json``
    For every resource type and complex datatype (and every backbone element, keyed by its
    path): the JSON property names in definition order, with cardinality, types (choice
    elements ``value[x]`` are expanded to ``valueQuantity``, ...), reference target types,
    the required value set if any and the invariants (FHIRPath expression) of the definition.
    Also the primitive type regexes, the core extension definitions (allowed value types) and the
    expanded required value sets.
``r4-valuesets-not-expanded.txt``
    The required bindings whose value set cannot be expanded from the package alone, with why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
# Profiles of Quantity that the base definitions use through type.profile.
QUANTITY_PROFILES = {
    SD_PREFIX + "SimpleQuantity": "SimpleQuantity",
    SD_PREFIX + "MoneyQuantity": "MoneyQuantity",
}
PRIMITIVE_JSON = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "number",
}


def load_package(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]],
                                        dict[str, dict[str, Any]]]:
    sds: dict[str, dict[str, Any]] = {}
    value_sets: dict[str, dict[str, Any]] = {}
    code_systems: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("StructureDefinition-*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        sds[doc["url"]] = doc
    for path in sorted(folder.glob("ValueSet-*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        value_sets[doc["url"]] = doc
    for path in sorted(folder.glob("CodeSystem-*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        code_systems[doc["url"]] = doc
    return sds, value_sets, code_systems


def is_base_definition(sd: dict[str, Any]) -> bool:
    if sd.get("kind") == "logical":
        return False
    if sd["url"] in QUANTITY_PROFILES:
        return True
    return sd.get("derivation") == "specialization" or not sd.get("baseDefinition")


# --------------------------------------------------------------------------------------------
# Value sets
# --------------------------------------------------------------------------------------------


class NotExpandable(Exception):
    pass


def _concepts(concepts: list[dict[str, Any]], out: dict[str, list[str]], parents: list[str]) -> None:
    for concept in concepts:
        code = concept["code"]
        out.setdefault(code, [])
        for parent in parents:
            out[parent].append(code)
        _concepts(concept.get("concept", []), out, [*parents, code])


def code_system_codes(cs: dict[str, Any]) -> tuple[set[str], dict[str, list[str]]]:
    """Codes of a complete code system, and for each code its descendants (hierarchy only)."""
    if cs.get("content") != "complete":
        raise NotExpandable(f"code system {cs['url']} content is {cs.get('content')!r}")
    descendants: dict[str, list[str]] = {}
    _concepts(cs.get("concept", []), descendants, [])
    return set(descendants), descendants


class Expander:
    def __init__(self, value_sets: dict[str, dict[str, Any]], code_systems: dict[str, dict[str, Any]]):
        self.value_sets = value_sets
        self.code_systems = code_systems
        self.cache: dict[str, dict[str, set[str]]] = {}

    def expand(self, url: str, depth: int = 0) -> dict[str, set[str]]:
        url = url.split("|", 1)[0]
        if url in self.cache:
            return self.cache[url]
        if depth > 10:
            raise NotExpandable(f"value set import cycle at {url}")
        vs = self.value_sets.get(url)
        if vs is None:
            raise NotExpandable(f"value set {url} is not in the package")
        compose = vs.get("compose")
        if not compose:
            raise NotExpandable(f"value set {url} has no compose")
        result: dict[str, set[str]] = {}
        for include in compose.get("include", []):
            for system, codes in self._part(include, depth).items():
                result.setdefault(system, set()).update(codes)
        for exclude in compose.get("exclude", []):
            for system, codes in self._part(exclude, depth).items():
                if system in result:
                    result[system] -= codes
        self.cache[url] = result
        return result

    def _part(self, part: dict[str, Any], depth: int) -> dict[str, set[str]]:
        found: dict[str, set[str]] | None = None
        system = part.get("system")
        if system:
            if part.get("concept"):
                if part.get("filter"):
                    raise NotExpandable(f"value set part on {system} has both concepts and filters")
                codes = {c["code"] for c in part["concept"]}
            else:
                cs = self.code_systems.get(system)
                if cs is None:
                    raise NotExpandable(f"code system {system} is not in the package")
                known, descendants = code_system_codes(cs)
                codes = set(known)
                for flt in part.get("filter", []):
                    codes &= self._filter(system, flt, known, descendants)
            found = {system: codes}
        for vs_url in part.get("valueSet", []):
            imported = self.expand(vs_url, depth + 1)
            if found is None:
                found = {k: set(v) for k, v in imported.items()}
            else:  # a system and value sets together: the intersection
                found = {k: v & imported.get(k, set()) for k, v in found.items()}
        if found is None:
            raise NotExpandable("compose part without system or value set")
        return found

    @staticmethod
    def _filter(system: str, flt: dict[str, Any], known: set[str],
                descendants: dict[str, list[str]]) -> set[str]:
        prop, op, value = flt.get("property"), flt.get("op"), flt.get("value")
        if prop == "concept" and op in ("is-a", "descendent-of", "is-not-a"):
            if value not in descendants:
                raise NotExpandable(f"filter value {value!r} is not a code of {system}")
            below = set(descendants[value])
            if op == "is-a":
                return below | {value}
            if op == "descendent-of":
                return below
            return known - below - {value}
        raise NotExpandable(f"filter {prop} {op} on {system} is not supported")


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


def type_code(type_ref: dict[str, Any]) -> str:
    code = type_ref["code"]
    if code in SYSTEM_TYPES:
        for ext in type_ref.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return str(ext.get("valueUrl") or ext.get("valueUri") or SYSTEM_TYPES[code])
        return SYSTEM_TYPES[code]
    if code == "Quantity":
        for profile in type_ref.get("profile", []):
            if profile in QUANTITY_PROFILES:
                return QUANTITY_PROFILES[profile]
    return str(code)


def upper_first(name: str) -> str:
    return name[0].upper() + name[1:]


def build_type(sd: dict[str, Any], all_types: dict[str, Any], required: dict[str, str],
               notes: list[str]) -> None:
    url = sd["url"]
    elements = sd["snapshot"]["element"]
    root_path = elements[0]["path"]
    paths_with_children = {e["path"].rsplit(".", 1)[0] for e in elements[1:]}
    type_name = sd["id"] if sd["url"] in QUANTITY_PROFILES else sd["type"]
    if sd["url"] in QUANTITY_PROFILES:
        type_name = QUANTITY_PROFILES[sd["url"]]

    def key_for(path: str) -> str:
        return type_name if path == root_path else type_name + path[len(root_path):]

    def own_constraints(element: dict[str, Any]) -> list[list[str]]:
        out = []
        for con in element.get("constraint", []):
            source = con.get("source")
            if source not in (None, url):
                continue
            if con.get("key") == "ele-1" or not con.get("expression"):
                continue
            out.append([con["key"], con.get("severity", "error"), con.get("human", ""), con["expression"]])
        return out

    containers: dict[str, dict[str, Any]] = {}
    for element in elements:
        path = element["path"]
        if path == root_path:
            containers[path] = {
                "kind": {"resource": "resource", "complex-type": "complex"}.get(sd["kind"], sd["kind"]),
                "abstract": bool(sd.get("abstract")),
                "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1] or None,
                "elements": {},
                "choices": {},
                "constraints": own_constraints(element),
            }
            continue
        parent_path, name = path.rsplit(".", 1)
        parent = containers.get(parent_path)
        if parent is None:
            notes.append(f"{url}: element {path} has no container (sliced?)")
            continue
        if element.get("sliceName"):
            continue
        max_value = element.get("max", "*")
        max_count = -1 if max_value == "*" else int(max_value)
        entry_base: dict[str, Any] = {"min": int(element.get("min", 0)), "max": max_count}
        constraints = own_constraints(element)
        if "contentReference" in element:
            target = element["contentReference"].lstrip("#")
            entry = dict(entry_base, t=key_for(target))
            parent["elements"][name] = entry
            continue
        types = element.get("type", [])
        if path in paths_with_children:
            # A backbone element (or an inline Element in a datatype): its own container.
            child_key = key_for(path)
            containers[path] = {
                "kind": "backbone",
                "abstract": False,
                "base": types[0]["code"] if types else "BackboneElement",
                "elements": {},
                "choices": {},
                "constraints": constraints,
            }
            all_types[child_key] = containers[path]
            entry = dict(entry_base, t=child_key)
            parent["elements"][name] = entry
            continue
        if path == root_path + ".id" and sd["kind"] == "resource":
            codes = ["id"]
        else:
            codes = [type_code(t) for t in types]
        targets: dict[str, list[str]] = {}
        for t in types:
            if t["code"] in ("Reference", "canonical") and t.get("targetProfile"):
                names = sorted({p.rsplit("/", 1)[-1] for p in t["targetProfile"]})
                targets[t["code"]] = names
        binding = element.get("binding") or {}
        bound = None
        if binding.get("strength") == "required" and binding.get("valueSet") and \
                any(c in ("code", "Coding", "CodeableConcept") for c in codes):
            bound = binding["valueSet"].split("|", 1)[0]
            required[bound] = path
        if name.endswith("[x]"):
            base = name[:-3]
            keys = []
            for type_ref, code in zip(types, codes, strict=True):
                key = base + upper_first(type_code(dict(type_ref, profile=[])))
                entry = {"min": 0, "max": 1, "t": code, "choice": base}
                if code in targets:
                    entry["targets"] = targets[code]
                if bound and code in ("code", "Coding", "CodeableConcept"):
                    entry["vs"] = bound
                if constraints:
                    entry["c"] = constraints
                parent["elements"][key] = entry
                keys.append(key)
            parent["choices"][base] = {"min": entry_base["min"], "max": max_count, "keys": keys}
            continue
        if len(codes) != 1:
            notes.append(f"{url}: element {path} has {len(codes)} types without [x]")
            if not codes:
                continue
        entry = dict(entry_base, t=codes[0])
        if codes[0] in targets:
            entry["targets"] = targets[codes[0]]
        if bound:
            entry["vs"] = bound
        if constraints:
            entry["c"] = constraints
        if name == "div" and codes[0] == "xhtml":
            entry["xhtml"] = True
        parent["elements"][name] = entry
    all_types[type_name] = containers[root_path]


def type_constraint_keys(types: dict[str, Any], name: str) -> set[str]:
    keys: set[str] = set()
    seen = 0
    while name in types and seen < 10:
        keys.update(c[0] for c in types[name]["constraints"])
        name = types[name].get("base") or ""
        seen += 1
    return keys


def drop_inherited_constraints(types: dict[str, Any]) -> None:
    """Element-level constraints that merely repeat the constraints of the element's type."""
    for container in types.values():
        for entry in container["elements"].values():
            if "c" not in entry:
                continue
            inherited = type_constraint_keys(types, entry["t"])
            entry["c"] = [c for c in entry["c"] if c[0] not in inherited]
            if not entry["c"]:
                del entry["c"]


def extension_summary(sd: dict[str, Any]) -> dict[str, Any]:
    value_types: list[str] = []
    value_min = 0
    for element in sd["snapshot"]["element"]:
        if element["path"] == "Extension.value[x]" and not element.get("sliceName") and \
                element.get("max") != "0":
            value_types = [type_code(t) for t in element.get("type", [])]
            value_min = int(element.get("min", 0))
    return {"types": value_types, "min": value_min}


def primitive_summary(sd: dict[str, Any]) -> dict[str, Any]:
    regex = None
    for element in sd["snapshot"]["element"]:
        if element["path"].endswith(".value"):
            for t in element.get("type", []):
                for ext in t.get("extension", []):
                    if ext.get("url") == REGEX_EXT:
                        regex = ext.get("valueString")
    return {"regex": regex, "json": PRIMITIVE_JSON.get(sd["id"], "string"),
            "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1]}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    package = Path(argv[1])
    out_dir = Path(argv[2]) if len(argv) > 2 else Path(__file__).resolve().parent.parent / \
        "src/carnet/fhir/definitions/structure"
    sds, value_sets, code_systems = load_package(package)
    types: dict[str, Any] = {}
    primitives: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    required: dict[str, str] = {}
    notes: list[str] = []
    for sd in sds.values():
        if sd.get("type") == "Extension" and sd.get("derivation") == "constraint":
            extensions[sd["url"]] = extension_summary(sd)
            continue
        if not is_base_definition(sd):
            continue
        if sd["kind"] == "primitive-type":
            primitives[sd["id"]] = primitive_summary(sd)
            build_type(sd, types, required, notes)
            continue
        build_type(sd, types, required, notes)

    expander = Expander(value_sets, code_systems)
    expanded: dict[str, dict[str, list[str]]] = {}
    not_expanded: dict[str, str] = {}
    for vs_url in sorted(required):
        try:
            codes = expander.expand(vs_url)
        except NotExpandable as exc:
            not_expanded[vs_url] = str(exc)
            continue
        if not any(codes.values()):
            not_expanded[vs_url] = "expansion is empty"
            continue
        expanded[vs_url] = {system: sorted(c) for system, c in sorted(codes.items())}

    drop_inherited_constraints(types)
    resources = sorted(k for k, v in types.items() if v["kind"] == "resource" and not v["abstract"])
    data = {
        "fhirVersion": "4.0.1",
        "source": "hl7.fhir.r4.examples#4.0.1",
        "resources": resources,
        "types": dict(sorted(types.items())),
        "primitives": dict(sorted(primitives.items())),
        "extensions": dict(sorted(extensions.items())),
        "valueSets": expanded,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=False).encode()
    (out_dir / "r4-structure.json").write_bytes(raw + b"\n")
    lines = [f"{url}\t{required[url]}\t{why}" for url, why in sorted(not_expanded.items())]
    (out_dir / "r4-valuesets-not-expanded.txt").write_text(
        "# required bindings whose value set is not expanded (value set, first element, reason)\n"
        + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(types)} types, {len(primitives)} primitives, {len(extensions)} extensions, "
          f"{len(expanded)} value sets expanded, {len(not_expanded)} not expanded; "
          f"{len(raw)} bytes raw")
    for note in notes:
        print("note:", note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
