"""Bundle rules beyond the element definitions and the bdl-* invariants.

- ``fullUrl``: absolute, consistent with the resource type and id when it looks like a RESTful URL,
  present except in transactions and batches;
- links: the paging relations only in search sets and histories, each relation at most once;
- search sets: match and include results need an id, match results the searched type, outcome
  results are OperationOutcomes;
- references between entries, resolved the way FHIR resolves them inside a bundle (relative to the
  entry's ``fullUrl``): ambiguous targets, wrong target types, relative references in an entry
  without ``fullUrl``;
- documents (and messages): the Composition's (MessageHeader's) references resolve inside the
  bundle and every entry of a document is reachable from its Composition.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carnet.fhir.validation.validator import ResourceContext, Run

ABSOLUTE_URL_RE = re.compile(r"^[a-z][a-z0-9+.\-]*:[^ ]+$")
PAGING_RELATIONS = frozenset({"first", "previous", "prev", "next", "last"})
FULL_URL_OPTIONAL = frozenset({"transaction", "transaction-response", "batch", "batch-response"})
CANONICAL_TYPES = frozenset({
    "ActivityDefinition", "CapabilityStatement", "ChargeItemDefinition", "CodeSystem",
    "CompartmentDefinition",
    "ConceptMap", "EffectEvidenceSynthesis", "EventDefinition", "Evidence", "EvidenceVariable",
    "ExampleScenario", "GraphDefinition", "ImplementationGuide", "Library", "Measure", "MessageDefinition",
    "NamingSystem", "OperationDefinition", "PlanDefinition", "Questionnaire", "ResearchDefinition",
    "ResearchElementDefinition", "RiskEvidenceSynthesis", "SearchParameter", "StructureDefinition",
    "StructureMap", "TerminologyCapabilities", "TestScript", "ValueSet",
})
_restful_cache: dict[int, re.Pattern[str]] = {}


def _restful_re(resource_types: frozenset[str]) -> re.Pattern[str]:
    pattern = _restful_cache.get(id(resource_types))
    if pattern is None:
        names = "|".join(sorted(resource_types, key=len, reverse=True))
        pattern = re.compile(r"^(?:https?://(?:[A-Za-z0-9\\.:%$_\-~]*/)*)?(" + names +
                             r")/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")
        _restful_cache[id(resource_types)] = pattern
    return pattern


def is_absolute(url: str) -> bool:
    return ABSOLUTE_URL_RE.match(url) is not None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class _Entry:
    __slots__ = ("ctx", "full_url", "index", "resource", "rid", "rtype", "targets", "version")

    def __init__(self, index: int, raw: dict[str, Any], ctx: ResourceContext | None) -> None:
        self.index = index
        self.full_url = _str(raw.get("fullUrl"))
        resource = raw.get("resource")
        self.resource: dict[str, Any] | None = resource if isinstance(resource, dict) else None
        res = self.resource or {}
        self.rtype = _str(res.get("resourceType"))
        self.rid = _str(res.get("id"))
        self.version = _str(_dict(res.get("meta")).get("versionId"))
        self.ctx = ctx
        self.targets: list[_Entry] = []


class _BundleCheck:
    def __init__(self, run: Run, bundle: dict[str, Any], path: str) -> None:
        self.run = run
        self.bundle = bundle
        self.path = path
        self.type = _str(bundle.get("type")) or ""
        self.resource_types = run.defs.resource_types
        self.restful = _restful_re(self.resource_types)
        self.entries: list[_Entry] = []
        for index, raw in enumerate(_list(bundle.get("entry"))):
            if isinstance(raw, dict):
                res = raw.get("resource")
                ctx = run.entry_contexts.get(id(res)) if isinstance(res, dict) else None
                self.entries.append(_Entry(index, raw, ctx))
        self.by_full_url: dict[str, list[_Entry]] = {}
        self.by_type_id: dict[str, list[_Entry]] = {}
        for entry in self.entries:
            if entry.full_url is not None:
                self.by_full_url.setdefault(entry.full_url, []).append(entry)
                if entry.version is not None:
                    versioned = f"{entry.full_url}/_history/{entry.version}"
                    self.by_full_url.setdefault(versioned, []).append(entry)
            if entry.rtype is not None and entry.rid is not None:
                key = f"{entry.rtype}/{entry.rid}"
                self.by_type_id.setdefault(key, []).append(entry)
                if entry.version is not None:
                    self.by_type_id.setdefault(f"{key}/_history/{entry.version}", []).append(entry)
        self.reported: set[str] = set()

    def error(self, path: str, message: str, code: str = "invalid") -> None:
        self.run.error(path, message, code)

    def entry_path(self, entry: _Entry) -> str:
        return f"{self.path}.entry[{entry.index}]"

    # -- fullUrl --------------------------------------------------------------------------

    def full_urls(self) -> None:
        optional = self.type in FULL_URL_OPTIONAL
        for entry in self.entries:
            where = self.entry_path(entry)
            full = entry.full_url
            if full is None:
                if not optional and entry.resource is not None:
                    self.warning(where, f"{where} has no fullUrl: except in transactions and batches, "
                                        "each entry should have a fullUrl, the identity of its resource.",
                                 "required")
                continue
            if not full:
                continue
            if not is_absolute(full):
                self.error(where, f"{where}.fullUrl must be an absolute URL (not '{full}').", "value")
                continue
            if entry.rtype is None:
                continue
            match = self.restful.match(full)
            if match is None:
                continue
            if entry.rid is None:
                self.error(where, f"{where}.fullUrl '{full}' looks like a RESTful server URL, but the "
                                  "resource has no id.", "value")
            elif not full.endswith(f"/{entry.rtype}/{entry.rid}"):
                # A warning: official R4 examples (e.g. the patient link messages) break this SHALL.
                self.warning(where, f"{where}.fullUrl '{full}' looks like a RESTful server URL, so it "
                                    f"should end with the resource type and id (/{entry.rtype}/{entry.rid}).",
                             "value")

    # -- links ----------------------------------------------------------------------------

    def links(self) -> None:
        links = [link for link in _list(self.bundle.get("link")) if isinstance(link, dict)]
        seen: set[str] = set()
        paging = self.type in ("searchset", "history")
        for index, link in enumerate(links):
            rel = _str(link.get("relation"))
            if rel is None:
                continue
            where = f"{self.path}.link[{index}]"
            if not paging and self.type and rel in PAGING_RELATIONS:
                self.error(f"{where}.relation", f"{where}.relation '{rel}' is a paging relation, only used "
                                                "in search sets and histories.", "value")
            if rel in seen and (rel == "self" or (paging and rel in PAGING_RELATIONS)):
                self.error(where, f"{where}: the link relation '{rel}' can only occur once.", "value")
            seen.add(rel)
            if self.type == "document" and rel == "stylesheet":
                url = _str(link.get("url"))
                if url and not is_absolute(url) and url not in self.by_type_id:
                    self.error(f"{where}.url", f"{where}.url: the stylesheet '{url}' is not in this bundle.",
                               "not-found")

    # -- search sets ----------------------------------------------------------------------

    def search_types(self) -> list[str]:
        for link in _list(self.bundle.get("link")):
            if isinstance(link, dict) and link.get("relation") == "self":
                url = _str(link.get("url"))
                if not url:
                    return []
                head, _, query = url.partition("?")
                last = head.rstrip("/").rsplit("/", 1)[-1]
                if last in self.resource_types:
                    return [last]
                types: list[str] = []
                for param in query.split("&"):
                    if param.startswith("_type="):
                        types.extend(t for t in param[6:].split(",") if t)
                return types
        return []

    def search_set(self) -> None:
        modes = [_str(_dict(_dict(raw).get("search")).get("mode"))
                 for raw in _list(self.bundle.get("entry")) if isinstance(raw, dict)]
        if not any(modes):
            return
        types = self.search_types()
        for entry, mode in zip(self.entries, modes, strict=False):
            where = self.entry_path(entry)
            if entry.resource is None:
                self.error(where, f"{where}: search set entries must have a resource.", "required")
                continue
            if mode in ("match", "include") and entry.rid is None:
                self.error(f"{where}.resource", f"{where}.resource: search results must have an id.",
                           "required")
            if mode == "match" and types and entry.rtype not in types:
                self.error(f"{where}.resource", f"{where}.resource is a {entry.rtype}, which does not match "
                                                f"the search (expecting {', '.join(types)}).", "value")
            if mode == "outcome" and entry.rtype != "OperationOutcome":
                self.error(f"{where}.resource", f"{where}.resource has search mode 'outcome' but is a "
                                                f"{entry.rtype}, not an OperationOutcome.", "value")

    # -- references -----------------------------------------------------------------------

    def references(self) -> None:
        """Resolution of each entry's references as FHIR defines it inside a bundle."""
        lenient = self.type in FULL_URL_OPTIONAL
        for entry in self.entries:
            if entry.ctx is None:
                continue
            for ref, where in entry.ctx.refs:
                self.resolve_in_entry(entry, ref, where, lenient)

    def resolve_in_entry(self, entry: _Entry, ref: str, where: str, lenient: bool) -> None:
        ref = ref.split("#", 1)[0]
        if not ref:
            return
        version = None
        rtype = None
        if is_absolute(ref):
            target = ref
            if "/_history/" in ref:
                target, version = ref.split("/_history/", 1)
        elif entry.full_url is None:
            if not lenient:
                self.report(where, f"{where}: the relative reference '{ref}' is in an entry without "
                                   "fullUrl, so it cannot be resolved.", "required")
            return
        elif ref.count("/") not in (1, 3):
            if lenient and "?" in ref:
                return
            self.report(where, f"{where}: relative references must have the form [ResourceType]/[id], "
                               f"found '{ref}'.", "value")
            return
        else:
            full = entry.full_url
            if full.startswith("urn"):
                base = full[:full.rfind(":") + 1]
            else:
                base = "/".join(full.split("/")[:-2]) + "/"
            parts = ref.split("/")
            rtype = parts[0]
            if len(parts) == 4:
                version = parts[3]
                target = base + parts[0] + "/" + parts[1]
            elif base.startswith("urn"):
                target = base + parts[1]
            else:
                target = base + ref
        matches = [e for e in self.by_full_url.get(target, []) if version is None or e.version == version]
        if len(matches) > 1:
            self.report(where, f"{where}: the reference '{ref}' matches {len(matches)} entries of the "
                               "bundle.", "invalid")
        elif len(matches) == 1 and rtype is not None and rtype in self.resource_types and \
                matches[0].rtype is not None and matches[0].rtype != rtype:
            self.report(where, f"{where}: the reference '{ref}' resolves to entry [{matches[0].index}], "
                               f"which is a {matches[0].rtype}, not a {rtype}.", "value")

    def warning(self, path: str, message: str, code: str = "invalid") -> None:
        self.run.warning(path, message, code)

    def report_warning(self, where: str, message: str, code: str) -> None:
        if where in self.reported:
            return
        self.reported.add(where)
        self.warning(where, message, code)

    def report(self, where: str, message: str, code: str) -> None:
        if where in self.reported:
            return
        self.reported.add(where)
        self.error(where, message, code)

    def resolve_by_identity(self, source: _Entry, ref: str, where: str, strict: bool) -> _Entry | None:
        """Resolution of a reference to an entry (documents and messages); reports what cannot work."""
        ref = ref.split("#", 1)[0]
        if not ref:
            return None
        if is_absolute(ref):
            found = self.by_full_url.get(ref)
            if not found:
                match = self.restful.match(ref)
                canonical = match is not None and match.group(1) in CANONICAL_TYPES
                if strict and not canonical:
                    self.report(where, f"{where}: the reference '{ref}' cannot be found in the bundle.",
                                "not-found")
                return None
            if len(found) > 1:
                self.report(where, f"{where}: the reference '{ref}' matches {len(found)} entries of the "
                                   "bundle.", "invalid")
                return None
            return found[0]
        candidate = None
        full = source.full_url
        if full is not None and source.rtype is not None and source.rid is not None and \
                self.restful.match(full) and full.endswith(f"{source.rtype}/{source.rid}"):
            candidate = full[:len(full) - len(f"{source.rtype}/{source.rid}")] + ref
        found = self.by_full_url.get(candidate) if candidate is not None else None
        if found:
            if len(found) > 1:
                self.report(where, f"{where}: the reference '{ref}' matches {len(found)} entries of the "
                                   "bundle.", "invalid")
                return None
            return found[0]
        parts = ref.split("/")
        if len(parts) >= 2 and parts[0] in self.resource_types:
            apparent = self.by_type_id.get(f"{parts[0]}/{parts[1]}")
            if apparent:
                urls = ", ".join(sorted(e.full_url or "(no fullUrl)" for e in apparent))
                message = (f"{where}: the reference '{ref}' cannot be resolved in the bundle: an entry has "
                           f"that type and id ({urls}), but relative references resolve against the fullUrl "
                           "of the entry that holds them.")
                # An error for the references a document or message must resolve; a warning otherwise,
                # as official R4 examples have such references between their other entries.
                if strict:
                    self.report(where, message, "not-found")
                else:
                    self.report_warning(where, message, "not-found")
            elif strict:
                self.report(where, f"{where}: the reference '{ref}' cannot be found in the bundle.",
                            "not-found")
        return None

    # -- documents and messages -----------------------------------------------------------

    def composition_references(self, first: _Entry) -> list[tuple[str, str]]:
        res = first.resource or {}
        base = f"{self.entry_path(first)}.resource"
        out: list[tuple[str, str]] = []

        def add(value: Any, where: str) -> None:
            ref = _str(_dict(value).get("reference"))
            if ref and not ref.startswith("#"):
                out.append((ref, where + ".reference"))

        for name in ("subject", "encounter", "custodian"):
            add(res.get(name), f"{base}.{name}")
        for index, author in enumerate(_list(res.get("author"))):
            add(author, f"{base}.author[{index}]")
        for index, attester in enumerate(_list(res.get("attester"))):
            add(_dict(attester).get("party"), f"{base}.attester[{index}].party")
        for index, event in enumerate(_list(res.get("event"))):
            for d_index, detail in enumerate(_list(_dict(event).get("detail"))):
                add(detail, f"{base}.event[{index}].detail[{d_index}]")

        def sections(items: list[Any], where: str) -> None:
            for index, section in enumerate(items):
                section = _dict(section)
                spath = f"{where}.section[{index}]"
                for a_index, author in enumerate(_list(section.get("author"))):
                    add(author, f"{spath}.author[{a_index}]")
                add(section.get("focus"), f"{spath}.focus")
                for e_index, item in enumerate(_list(section.get("entry"))):
                    add(item, f"{spath}.entry[{e_index}]")
                sections(_list(section.get("section")), spath)

        sections(_list(res.get("section")), base)
        return out

    def document_or_message(self) -> None:
        kind = self.type
        if not self.entries:
            self.error(self.path, f"{self.path}: a {kind} bundle must have at least one entry.", "required")
            return
        first = self.entries[0]
        if first.resource is None:
            self.error(self.entry_path(first), f"{self.entry_path(first)}: the first entry of a {kind} must "
                                               "have a resource.", "required")
            return
        if kind == "document":
            if first.rtype != "Composition":
                return  # bdl-11 reports it
            refs = self.composition_references(first)
        else:
            if first.rtype != "MessageHeader":
                return  # bdl-12 reports it
            base = f"{self.entry_path(first)}.resource"
            focus = _list(first.resource.get("focus"))
            refs = [(r, f"{base}.focus[{i}].reference") for i, f in enumerate(focus)
                    if (r := _str(_dict(f).get("reference"))) and not r.startswith("#")]
        for ref, where in refs:
            self.resolve_by_identity(first, ref, where, strict=True)
        self.interlinks(is_document=kind == "document")

    def interlinks(self, is_document: bool) -> None:
        with_resource = [e for e in self.entries if e.resource is not None]
        for entry in with_resource:
            if entry.ctx is None:
                continue
            seen: set[str] = set()
            for ref, where in entry.ctx.refs:
                if ref in seen:
                    continue
                seen.add(ref)
                target = self.resolve_by_identity(entry, ref, where, strict=False)
                if target is not None and target is not entry:
                    entry.targets.append(target)
            for ref in entry.ctx.uri_refs:
                if ref in seen:
                    continue
                seen.add(ref)
                found = self.by_full_url.get(ref)
                if found and len(found) == 1 and found[0] is not entry:
                    entry.targets.append(found[0])
        if not is_document or not with_resource:
            return
        # An entry counts as reachable when it is linked to the Composition through references
        # followed in either direction: the weakly connected component of the first entry.
        pointing: dict[int, list[_Entry]] = {}
        for entry in with_resource:
            for target in entry.targets:
                pointing.setdefault(target.index, []).append(entry)
        visited: set[int] = set()
        queue = [with_resource[0]]
        for link in _list(self.bundle.get("link")):
            if isinstance(link, dict) and link.get("relation") == "stylesheet":
                queue.extend(self.by_type_id.get(_str(link.get("url")) or "", []))
        while queue:
            current = queue.pop()
            if current.index in visited:
                continue
            visited.add(current.index)
            queue.extend(current.targets)
            queue.extend(pointing.get(current.index, ()))
        for entry in with_resource:
            if entry.index not in visited:
                where = self.entry_path(entry)
                label = f"'{entry.full_url}'" if entry.full_url else f"[{entry.index}]"
                self.error(where, f"{where}: the entry {label} is not reachable by following references "
                                  "(forward or backward) from the Composition.", "invalid")

    def run_all(self) -> None:
        self.full_urls()
        self.links()
        if self.type == "searchset":
            self.search_set()
        self.references()
        if self.type in ("document", "message"):
            self.document_or_message()


def check_bundle(run: Run, bundle: dict[str, Any], path: str) -> None:
    _BundleCheck(run, bundle, path).run_all()
