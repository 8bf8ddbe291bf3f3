"""Structural validation of FHIR R4 resources in their JSON form.

One pass over the resource, driven by the precompiled definitions: known elements, JSON shape
(arrays exactly for repeating elements), cardinality, choice types, primitive formats, primitive
extensions (``_name``), required bindings whose value set is known, references (local targets,
target types), contained resources, the narrative, the invariants of the base definitions that
FHIRPath on one resource can decide, and the Bundle rules in :mod:`.bundle`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from decimal import Decimal
from typing import Any

from carnet.errors import Issue, bilingual
from carnet.fhir.validation import fhirpath
from carnet.fhir.validation.definitions import Constraint, Definitions, ElementDef, TypeDef, definitions
from carnet.fhir.validation.xhtml import check_div

# [base/]Type/id[/_history/version] -- the resource type of a literal reference.
REFERENCE_RE = re.compile(
    r"^(?:(?:https?://[^?#]*?/)?)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")
CORE_EXTENSION_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# uri/url elements that name a system or an endpoint rather than link to a resource.
NON_LINK_URIS = frozenset({
    ("Bundle.entry", "fullUrl"), ("Extension", "url"), ("MessageHeader.source", "endpoint"),
    ("MessageHeader.destination", "endpoint"), ("Endpoint", "address"),
})
ELEMENT_TYPE = "Element"


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return getattr(value, "text", None) or str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 80 else value[:77] + "..."
        return repr(shown)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class ResourceContext:
    """What is tracked while one resource (and, for the root, its contained resources) is walked."""

    __slots__ = ("contained", "contained_ids", "in_bundle", "local_refs", "path", "refers_container",
                 "refs", "resource", "root", "uri_refs")

    def __init__(self, resource: dict[str, Any], path: str, root: ResourceContext | None,
                 in_bundle: bool) -> None:
        self.resource = resource
        self.path = path
        self.root: ResourceContext = root if root is not None else self
        self.in_bundle = in_bundle
        self.refers_container = False
        self.contained: list[ResourceContext] = []
        self.refs: list[tuple[str, str]] = []
        self.uri_refs: list[str] = []
        if root is None:
            self.local_refs: set[str] = set()
            contained = resource.get("contained")
            self.contained_ids: set[str] = set()
            if isinstance(contained, list):
                for item in contained:
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        self.contained_ids.add(item["id"])
        else:
            self.local_refs = root.local_refs
            self.contained_ids = root.contained_ids


MAX_ISSUES = 100  # problems listed before validation gives up (a hostile resource has millions)


class _Enough(Exception):
    """Raised once :data:`MAX_ISSUES` problems are listed: validating further only costs."""


class Run:
    """One validation call: accumulates issues."""

    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self.issues: list[Issue] = []
        self.errors = 0
        self.entry_contexts: dict[int, ResourceContext] = {}

    # -- reporting ------------------------------------------------------------------------

    def error(self, path: str, message: str, code: str = "invalid") -> None:
        self.issues.append(Issue("error", code, message, [path]))
        self.errors += 1
        if self.errors >= MAX_ISSUES:
            raise _Enough

    def warning(self, path: str, message: str, code: str = "invalid") -> None:
        if len(self.issues) - self.errors < MAX_ISSUES:  # beyond, warnings are not listed
            self.issues.append(Issue("warning", code, message, [path]))

    # -- resources ------------------------------------------------------------------------

    def resource(self, res: Any, path: str, *, container: ResourceContext | None = None,
                 in_bundle: bool = False) -> ResourceContext | None:
        label = path or "The resource"
        if type(res) is not dict:
            self.error(path or "Resource", f"{label} must be a JSON object holding a resource.", "structure")
            return None
        rtype = res.get("resourceType")
        if rtype is None:
            self.error(path or "Resource", f"{label} has no resourceType property.", "structure")
            return None
        if not isinstance(rtype, str) or rtype not in self.defs.resource_types:
            where = path or (rtype if isinstance(rtype, str) else "Resource")
            self.error(where, f"{label} has an unknown resource type {_show(rtype)}.", "structure")
            return None
        if container is None and path == "":
            path = rtype
        ctx = ResourceContext(res, path, container.root if container is not None else None, in_bundle)
        if container is not None:
            container.root.contained.append(ctx)
        self.object(res, self.defs.types[rtype], path, ctx)
        if container is not None:
            self.contained_rules(res, path)
        elif ctx.contained:
            self.check_contained_referenced(ctx)
        if rtype == "Bundle":
            from carnet.fhir.validation.bundle import check_bundle
            check_bundle(self, res, path)
        return ctx

    def contained_rules(self, res: dict[str, Any], path: str) -> None:
        if "contained" in res:
            self.error(path, f"{path} is a contained resource and must not contain other resources (dom-2).",
                       "invariant")
        meta = res.get("meta")
        if isinstance(meta, dict):
            if "versionId" in meta or "lastUpdated" in meta:
                self.error(path, f"{path} is a contained resource and must not have meta.versionId or "
                                 "meta.lastUpdated (dom-4).", "invariant")
            if "security" in meta:
                self.error(path, f"{path} is a contained resource and must not have meta.security (dom-5).",
                           "invariant")

    def check_contained_referenced(self, root: ResourceContext) -> None:
        for ctx in root.contained:
            rid = ctx.resource.get("id")
            if ctx.refers_container or (isinstance(rid, str) and rid in root.local_refs):
                continue
            label = f"'{rid}'" if isinstance(rid, str) else "without an id"
            self.error(ctx.path, f"The contained resource {label} is not referenced from elsewhere in the "
                                 "containing resource, nor does it refer to the containing resource (dom-3).",
                       "invariant")

    # -- elements -------------------------------------------------------------------------

    def object(self, obj: dict[str, Any], td: TypeDef, path: str, ctx: ResourceContext) -> None:
        elements = td.elements
        choices_seen: list[str] | None = None
        for key, value in obj.items():
            ed = elements.get(key)
            if ed is None:
                self.other_property(obj, key, value, td, path, ctx)
                continue
            if ed.choice is not None:
                if choices_seen is None:
                    choices_seen = []
                choices_seen.append(ed.choice)
            prim = ed.prim
            if ed.single and type(value) is not list and value is not None:
                # Fast path: a non-repeating element with one value.
                if prim is not None:
                    reason = prim(value)
                    if reason is not None:
                        self.bad_primitive(f"{path}.{key}", value, reason)
                    elif ed.post:
                        self.primitive_post(value, key, ed, td, path, ctx)
                    continue
                child = ed.typedef
                if child is not None:
                    item_path = path + "." + key
                    if type(value) is not dict or not value or (len(value) == 1 and "id" in value):
                        self.bad_complex(value, item_path)
                        continue
                    self.object(value, child, item_path, ctx)
                    special = ed.special
                    if special:
                        if special == 1:
                            self.reference(value, item_path, ed, ctx)
                        elif special == 2:
                            self.extension(value, item_path)
                        elif special == 3:
                            self.binding_concept(value, item_path, ed.value_set or "")
                        elif special == 4:
                            self.binding_coding(value, item_path, ed.value_set or "")
                        elif special == 5:
                            self.attachment(value, item_path)
                    if ed.constraints:
                        self.constraints(ed.constraints, value, item_path, ctx)
                    continue
            if type(value) is list:
                if (not ed.many or not value or 0 < ed.max < len(value)) and \
                        self.array_shape(key, value, ed, path):
                    continue
                if prim is not None:
                    self.primitive_list(obj, key, value, ed, td, path, ctx)
                    continue
                items: list[Any] | tuple[Any] = value
                indexed = True
            else:
                if value is None:
                    if prim is None or ("_" + key) not in obj:
                        self.error(f"{path}.{key}", f"{path}.{key} is null; leave the property out instead.",
                                   "structure")
                    continue
                if (ed.many or ed.max == 0) and self.single_shape(key, ed, path):
                    continue
                if prim is not None:
                    reason = prim(value)
                    if reason is not None:
                        self.bad_primitive(f"{path}.{key}", value, reason)
                    elif ed.post:
                        self.primitive_post(value, key, ed, td, path, ctx)
                    continue
                items = (value,)
                indexed = False
            if ed.is_resource:
                self.resources(key, items, indexed, td, path, ctx)
                continue
            child = ed.typedef
            if child is None:
                continue
            special = ed.special
            for index, item in enumerate(items):
                item_path = f"{path}.{key}[{index}]" if indexed else f"{path}.{key}"
                if type(item) is not dict or not item or (len(item) == 1 and "id" in item):
                    self.bad_complex(item, item_path)
                    continue
                self.object(item, child, item_path, ctx)
                if special:
                    if special == 1:
                        self.reference(item, item_path, ed, ctx)
                    elif special == 2:
                        self.extension(item, item_path)
                    elif special == 3:
                        self.binding_concept(item, item_path, ed.value_set or "")
                    elif special == 4:
                        self.binding_coding(item, item_path, ed.value_set or "")
                    elif special == 5:
                        self.attachment(item, item_path)
                if ed.constraints:
                    self.constraints(ed.constraints, item, item_path, ctx)
        for ed in td.required:
            if ed.name not in obj and ("_" + ed.name) not in obj:
                self.error(path, f"{path}.{ed.name} is required (minimum cardinality {ed.min}) but is "
                                 "missing.", "required")
        if td.choices:
            self.choice_groups(obj, td, path, choices_seen)
        if td.constraints:
            self.constraints(td.constraints, obj, path, ctx)

    def array_shape(self, key: str, value: list[Any], ed: ElementDef, path: str) -> bool:
        """Report a misshapen array; True when the property cannot be checked further."""
        where = f"{path}.{key}"
        if ed.max == 0:
            self.error(where, f"{where} is not allowed here (maximum cardinality 0).", "structure")
            return True
        if not value:
            self.error(where, f"{where} is an empty array; leave the property out instead.", "structure")
            return True
        if not ed.many:
            self.error(where, f"{where} must not be a JSON array, as the element occurs at most once.",
                       "structure")
        elif 0 < ed.max < len(value):
            self.error(where, f"{where} may occur at most {ed.max} times, found {len(value)}.", "structure")
        return False

    def single_shape(self, key: str, ed: ElementDef, path: str) -> bool:
        where = f"{path}.{key}"
        if ed.max == 0:
            self.error(where, f"{where} is not allowed here (maximum cardinality 0).", "structure")
            return True
        self.error(where, f"{where} must be a JSON array, as the element can repeat.", "structure")
        return False

    def bad_primitive(self, where: str, value: Any, reason: str) -> None:
        code = "structure" if reason.startswith("must be a JSON") else "value"
        self.error(where, f"{where} value {_show(value)} {reason}.", code)

    def bad_complex(self, item: Any, where: str) -> None:
        if item is None:
            self.error(where, f"{where} is null; nulls are not allowed in arrays of complex elements.",
                       "structure")
        elif type(item) is not dict:
            self.error(where, f"{where} must be a JSON object (it is {_show(item)}).", "structure")
        else:
            self.error(where, f"{where} has no content: elements must have a value or children (ele-1).",
                       "structure")

    def resources(self, key: str, items: list[Any] | tuple[Any], indexed: bool, td: TypeDef, path: str,
                  ctx: ResourceContext) -> None:
        in_bundle = td.name == "Bundle.entry"
        for index, item in enumerate(items):
            item_path = f"{path}.{key}[{index}]" if indexed else f"{path}.{key}"
            if key == "contained":
                self.resource(item, item_path, container=ctx)
            else:
                sub = self.resource(item, item_path, in_bundle=in_bundle)
                if in_bundle and sub is not None:
                    self.entry_contexts[id(item)] = sub

    def choice_groups(self, obj: dict[str, Any], td: TypeDef, path: str, seen: list[str] | None) -> None:
        for group in td.choices:
            if group.min > 0 and (seen is None or group.name not in seen) and \
                    not any(("_" + k) in obj for k in group.keys):
                self.error(path, f"{path}.{group.name}[x] is required (minimum cardinality {group.min}) "
                                 "but is missing.", "required")
        if seen is not None and len(seen) > 1 and len(set(seen)) != len(seen):
            for name in sorted(set(seen)):
                if seen.count(name) > 1:
                    found = [k for k in obj if k in td.elements and td.elements[k].choice == name]
                    self.error(path, f"{path}.{name}[x] can only have one type, found {', '.join(found)}.",
                               "structure")

    def other_property(self, obj: dict[str, Any], key: str, value: Any, td: TypeDef, path: str,
                       ctx: ResourceContext) -> None:
        if key == "resourceType" and td.kind == "resource":
            return
        if key.startswith("_"):
            base = key[1:]
            ed = td.elements.get(base)
            if ed is not None and ed.prim is not None:
                self.primitive_extension(obj, base, value, ed, path, ctx)
                return
        if key == "fhir_comments":
            self.error(f"{path}.{key}", f"{path}.fhir_comments is not allowed: JSON comments were removed "
                                        "from FHIR after DSTU2.", "structure")
            return
        self.error(f"{path}.{key}", f"{path} has an unknown element '{key}'.", "structure")

    def primitive_extension(self, obj: dict[str, Any], base: str, value: Any, ed: ElementDef, path: str,
                            ctx: ResourceContext) -> None:
        element = self.defs.types[ELEMENT_TYPE]
        values = obj.get(base)
        where = f"{path}._{base}"
        if ed.many:
            if type(value) is not list:
                self.error(where, f"{where} must be a JSON array, as {base} can repeat.", "structure")
                return
            if isinstance(values, list) and len(values) != len(value):
                self.error(where, f"{where} must have as many items as {path}.{base} ({len(values)}), "
                                  f"found {len(value)}.", "structure")
            items = value
        else:
            if type(value) is list:
                self.error(where, f"{where} must not be a JSON array.", "structure")
                return
            items = [value]
            values = [values]
        for index, item in enumerate(items):
            item_path = f"{where}[{index}]" if ed.many else where
            if item is None:
                continue
            if type(item) is not dict:
                self.error(item_path, f"{item_path} must be a JSON object with id and/or extension.",
                           "structure")
                continue
            has_value = isinstance(values, list) and index < len(values) and values[index] is not None
            if not has_value and "extension" not in item:
                self.error(item_path, f"{path}.{base} has neither a value nor extensions: elements must "
                                      "have a value or children (ele-1).", "structure")
            self.object(item, element, item_path, ctx)

    def primitive_list(self, obj: dict[str, Any], key: str, items: list[Any], ed: ElementDef, td: TypeDef,
                       path: str, ctx: ResourceContext) -> None:
        check = ed.prim
        assert check is not None
        ext: Any = None
        for index, item in enumerate(items):
            if item is None:
                if ext is None:
                    ext = obj.get("_" + key)
                ext_item = ext[index] if isinstance(ext, list) and index < len(ext) else None
                if ext_item is None:
                    where = f"{path}.{key}[{index}]"
                    self.error(where, f"{where} is null without a matching extension in _{key}.", "structure")
                continue
            reason = check(item)
            if reason is not None:
                self.bad_primitive(f"{path}.{key}[{index}]", item, reason)
            elif ed.post:
                self.primitive_post(item, key, ed, td, path, ctx, index)

    def primitive_post(self, value: Any, key: str, ed: ElementDef, td: TypeDef, path: str,
                       ctx: ResourceContext, index: int | None = None) -> None:
        """Checks beyond the format: required code bindings, narrative, local references."""
        post = ed.post
        if post == 1:
            codes = self.defs.value_set_codes.get(ed.value_set or "")
            if codes is not None and value not in codes:
                where = f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"
                self.error(where, f"{where} value {_show(value)} is not in the required value set "
                                  f"{ed.value_set}.", "code-invalid")
        elif post == 2:
            self.narrative(value, f"{path}.{key}", ctx)
        elif post == 3:
            if value[:1] == "#":
                if value == "#":
                    ctx.refers_container = True
                else:
                    ctx.local_refs.add(value[1:])
            elif ctx.in_bundle and ed.type != "canonical" and key != "system" and \
                    (td.name, key) not in NON_LINK_URIS:
                ctx.uri_refs.append(value)

    # -- datatypes with rules -------------------------------------------------------------

    def narrative(self, text: str, path: str, ctx: ResourceContext) -> None:
        result = check_div(text)
        for problem in result.errors:
            self.error(path, f"{path}: {problem}.", "value")
        for ref in result.local_refs:
            ctx.local_refs.add(ref)

    def reference(self, item: dict[str, Any], path: str, ed: ElementDef, ctx: ResourceContext) -> None:
        ref = item.get("reference")
        if type(ref) is not str or not ref:
            return
        if ref[0] == "#":
            if ref == "#":
                ctx.refers_container = True
                return
            target = ref[1:]
            ctx.local_refs.add(target)
            if target not in ctx.contained_ids:
                self.error(f"{path}.reference", f"{path}.reference {_show(ref)} points to a contained "
                                                "resource that does not exist (ref-1).", "invariant")
            return
        if ctx.in_bundle:
            ctx.refs.append((ref, f"{path}.reference"))
        match = REFERENCE_RE.match(ref)
        if match is None:
            return
        rtype = match.group(1)
        if rtype not in self.defs.resource_types:
            if "://" not in ref:
                self.error(f"{path}.reference", f"{path}.reference {_show(ref)} names an unknown resource "
                                                f"type '{rtype}'.", "value")
            return
        targets = ed.targets
        if targets is not None and "Resource" not in targets and rtype not in targets:
            # A warning: several official R4 examples point to types their element does not list.
            self.warning(f"{path}.reference", f"{path}.reference {_show(ref)} points to a {rtype}, which is "
                                            f"not allowed here (allowed: {', '.join(sorted(targets))}).",
                       "value")
        declared = item.get("type")
        if isinstance(declared, str) and declared in self.defs.resource_types and declared != rtype:
            self.error(f"{path}.type", f"{path}.type is {declared} but the reference {_show(ref)} points "
                                       f"to a {rtype}.", "value")

    def extension(self, item: dict[str, Any], path: str) -> None:
        url = item.get("url")
        if type(url) is not str:
            return
        known = self.defs.extensions.get(url)
        if known is None:
            if url.startswith(CORE_EXTENSION_PREFIX):
                self.warning(path, f"{path}: the extension {url} is not defined in FHIR R4.", "informational")
            return
        allowed: list[str] = known["types"]
        value_key = next((k.lstrip("_") for k in item
                          if k.startswith(("value", "_value")) and len(k) > 6), None)
        if value_key is None:
            if known["min"] > 0 and "extension" not in item:
                self.error(path, f"{path}: the extension {url} requires a value.", "required")
            return
        value_type = value_key[5:]
        if not any(t[:1].upper() + t[1:] == value_type for t in allowed):
            if allowed:
                self.error(f"{path}.{value_key}", f"{path}: the extension {url} allows values of type "
                                                  f"{', '.join(allowed)}, not {value_type}.", "value")
            else:
                self.error(f"{path}.{value_key}", f"{path}: the extension {url} is a complex extension and "
                                                  "cannot have a value.", "value")

    def attachment(self, item: dict[str, Any], path: str) -> None:
        data = item.get("data")
        size = item.get("size")
        digest = item.get("hash")
        if type(data) is not str or (size is None and digest is None):
            return
        try:
            content = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            return  # reported as a bad base64Binary
        if type(size) is int and size != len(content):
            self.error(f"{path}.size", f"{path}.size is {size}, but the data holds {len(content)} bytes.",
                       "value")
        if type(digest) is str:
            actual = base64.b64encode(hashlib.sha1(content).digest()).decode()  # noqa: S324 - FHIR mandates SHA-1
            if "".join(digest.split()) != actual:
                self.error(f"{path}.hash", f"{path}.hash is not the SHA-1 of the data (expected {actual}).",
                           "value")

    def binding_coding(self, coding: dict[str, Any], path: str, url: str) -> None:
        systems = self.defs.value_sets.get(url)
        if systems is None:
            return
        code = coding.get("code")
        if type(code) is not str:
            return
        system = coding.get("system")
        if system is None:
            if code not in self.defs.value_set_codes[url]:
                self.error(path, f"{path}: the code {_show(code)} is not in the required value set {url}.",
                           "code-invalid")
            return
        codes = systems.get(system)
        if codes is None:
            self.error(path, f"{path}: the code system {system} is not allowed by the required value set "
                             f"{url}.", "code-invalid")
        elif code not in codes:
            self.error(path, f"{path}: the code {_show(code)} is not in the required value set {url} "
                             f"(system {system}).", "code-invalid")

    def binding_concept(self, concept: dict[str, Any], path: str, url: str) -> None:
        systems = self.defs.value_sets.get(url)
        if systems is None:
            return
        codings = concept.get("coding")
        if not isinstance(codings, list) or not codings:
            self.error(path, f"{path} has no coding, and a code from the required value set {url} is needed.",
                       "code-invalid")
            return
        all_codes = self.defs.value_set_codes[url]
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            code = coding.get("code")
            system = coding.get("system")
            if system is None:
                if code in all_codes:
                    return
            elif code in systems.get(system, ()):
                return
        self.error(path, f"{path}: none of the codings is in the required value set {url}.", "code-invalid")

    def constraints(self, constraints: list[Constraint], node: dict[str, Any], path: str,
                    ctx: ResourceContext) -> None:
        for constraint in constraints:
            native = constraint.native
            if native is not None:
                if native(node):
                    continue
                failed = True
            else:
                compiled = constraint.compiled
                if compiled is None:
                    continue
                names = constraint.names
                if names is not None and constraint.empty_passes and names.isdisjoint(node):
                    continue
                failed = fhirpath.evaluate_invariant(compiled, node, ctx.resource, ctx.root.resource) is False
            if failed:
                self.error(path, f"{path} breaks the invariant {constraint.key}: {constraint.human}",
                           "invariant")


def validate(resource: dict[str, Any]) -> list[Issue]:
    """Validate one FHIR R4 resource in its parsed JSON form; returns the issues found.

    Issues of severity ``error`` mean the resource must be rejected; ``warning`` issues do not.
    Each issue's ``expression`` is the FHIRPath-like location of the problem (e.g.
    ``Observation.component[1].code``).
    """
    run = Run(definitions())
    try:
        run.resource(resource, "")
    except _Enough:
        run.issues.append(Issue("error", "too-costly", bilingual(
            f"{MAX_ISSUES} problèmes relevés : la validation s'arrête là",
            f"{MAX_ISSUES} problems found: validation stopped there")))
    return run.issues
