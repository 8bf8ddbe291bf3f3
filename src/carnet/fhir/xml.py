"""FHIR R4 XML to the FHIR JSON shape.

``parse_xml(data)`` reads a resource in the FHIR XML format and returns the same dict that the JSON
reader (:func:`carnet.fhir.jsonio.loads`) would give for its JSON form: repeating elements as
arrays, booleans and numbers as JSON values (decimals as :class:`~carnet.fhir.jsonio.FhirDecimal`,
keeping their exact text), ``id`` and extensions of primitive elements under ``_name``, the
narrative ``div`` as an XHTML string, contained resources and bundle entries nested.

The reader is strict and safe: no DTD, so no entity declarations, entity expansion or external
fetches (a document with a DOCTYPE is refused); unknown elements or attributes, text where FHIR
allows none, elements out of order and malformed values raise :class:`carnet.errors.Invalid`
listing every problem found.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from typing import Any

from carnet.errors import Invalid, Issue, bilingual
from carnet.fhir.jsonio import FhirDecimal, check_depth
from carnet.fhir.validation.definitions import ElementDef, TypeDef, definitions

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
_MAX_DEPTH = 200
MAX_ISSUES = 100  # problems listed before the reader gives up (a hostile document has millions)
# Most elements read: each costs Python a few hundred bytes (a FHIR XML Bundle of 5,000 resources
# has some 250,000); beyond, a body of millions of empty elements would take gigabytes.
MAX_ELEMENTS = 500_000


class _Refused(Exception):
    pass


class _Enough(Exception):
    """Raised once :data:`MAX_ISSUES` problems are listed: reading further only costs."""


class _Node:
    """An XML element: namespace, local name, attributes, children and text chunks."""

    __slots__ = ("attrs", "children", "name", "ns", "text")

    def __init__(self, ns: str, name: str, attrs: dict[str, str]) -> None:
        self.ns = ns
        self.name = name
        self.attrs = attrs
        self.children: list[_Node | str] = []
        self.text = False  # holds non-whitespace text

    def elements(self) -> list[_Node]:
        return [c for c in self.children if isinstance(c, _Node)]


def _split(name: str) -> tuple[str, str]:
    ns, _, local = name.rpartition(" ")
    return ns, local


def _build_tree(data: bytes) -> _Node:
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    root: list[_Node] = []
    count = [0]

    def doctype(*_: Any) -> None:
        raise _Refused(bilingual("le document a une déclaration DOCTYPE ; les DTD et déclarations d'entités "
                                 "ne sont pas acceptées en FHIR XML",
                                 "the document has a DOCTYPE declaration; DTDs and entity declarations are "
                                 "not allowed in FHIR XML"))

    def start(name: str, attrs: dict[str, str]) -> None:
        ns, _, local = name.rpartition(" ")
        node = _Node(ns, local, attrs)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)
        count[0] += 1
        if count[0] > MAX_ELEMENTS:
            raise _Refused(bilingual(f"le document compte plus de {MAX_ELEMENTS} éléments",
                                     f"the document holds more than {MAX_ELEMENTS} elements"))
        if len(stack) > _MAX_DEPTH:
            raise _Refused(bilingual(f"le document est imbriqué sur plus de {_MAX_DEPTH} niveaux",
                                     f"the document is nested more than {_MAX_DEPTH} levels deep"))

    def end(name: str) -> None:
        stack.pop()

    def characters(data: str) -> None:
        if stack:
            node = stack[-1]
            node.children.append(data)
            if not node.text and not data.isspace():
                node.text = True

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.ExternalEntityRefHandler = doctype  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise Invalid(str(exc), issues=[Issue("fatal", "security", str(exc))]) from None
    except xml.parsers.expat.ExpatError as exc:
        where = f"{xml.parsers.expat.ErrorString(exc.code)} (line {exc.lineno}, column {exc.offset})"
        message = bilingual(f"le corps n'est pas du XML bien formé : {where}",
                            f"the body is not well-formed XML: {where}")
        raise Invalid(message, issues=[Issue("fatal", "structure", message)]) from None
    if not root:
        message = bilingual("le corps ne contient aucun élément XML", "the body holds no XML element")
        raise Invalid(message, issues=[Issue("fatal", "structure", message)])
    return root[0]


# ------------------------------------------------------------------------------------------
# XHTML serialisation of the narrative
# ------------------------------------------------------------------------------------------


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def _serialize(node: _Node, out: list[str], parent_ns: str | None) -> None:
    out.append("<" + node.name)
    if node.ns != parent_ns:
        out.append(f' xmlns="{_escape_attr(node.ns)}"')
    for key, value in node.attrs.items():
        ns, local = _split(key)
        if ns == XML_NS:
            local = "xml:" + local
        elif ns:
            out.append(f' xmlns:a="{_escape_attr(ns)}"')
            local = "a:" + local
        out.append(f' {local}="{_escape_attr(value)}"')
    if not node.children:
        out.append("/>")
        return
    out.append(">")
    for child in node.children:
        if isinstance(child, str):
            out.append(_escape_text(child))
        else:
            _serialize(child, out, node.ns)
    out.append(f"</{node.name}>")


def xhtml_string(node: _Node) -> str:
    out: list[str] = []
    _serialize(node, out, None)
    return "".join(out)


# ------------------------------------------------------------------------------------------
# Conversion driven by the structure definitions
# ------------------------------------------------------------------------------------------


class _Converter:
    def __init__(self) -> None:
        self.defs = definitions()
        self.issues: list[Issue] = []
        self.orders: dict[str, dict[str, int]] = {}
        self.extension_def = self.defs.types["Element"].elements["extension"]

    def error(self, path: str, message: str, code: str = "structure") -> None:
        self.issues.append(Issue("error", code, message, [path]))
        if len(self.issues) >= MAX_ISSUES:
            raise _Enough

    def order(self, td: TypeDef) -> dict[str, int]:
        order = self.orders.get(td.name)
        if order is None:
            order = {}
            position = -1
            last_choice = None
            for key, ed in td.elements.items():
                if ed.choice is None or ed.choice != last_choice:
                    position += 1
                last_choice = ed.choice
                order[key] = position
            self.orders[td.name] = order
        return order

    def resource(self, node: _Node, path: str) -> dict[str, Any] | None:
        if node.ns != FHIR_NS:
            self.error(path or node.name, f"the element <{node.name}> is not in the FHIR namespace "
                                          f"({FHIR_NS}).")
            return None
        rtype = node.name
        if rtype not in self.defs.resource_types:
            self.error(path or rtype, f"<{rtype}> is not a FHIR R4 resource type.")
            return None
        path = path or rtype
        for key in node.attrs:
            ns, local = _split(key)
            if ns == XSI_NS and not path.count("."):
                continue  # xsi:schemaLocation and the like, on the document element
            self.error(path, f"{path}: attribute '{local}' is not allowed on a resource element.")
        out: dict[str, Any] = {"resourceType": rtype}
        self.children(node, self.defs.types[rtype], out, path)
        return out

    def children(self, node: _Node, td: TypeDef, out: dict[str, Any], path: str) -> None:
        if node.text:
            self.error(path, f"{path}: text is not allowed directly inside <{node.name}>.")
        order = self.order(td)
        last = -1
        previous = ""
        primitive_extensions = False
        counts: dict[str, int] = {}
        for child in node.elements():
            name = child.name
            ed = td.elements.get(name)
            if ed is not None and ed.many:
                index = counts.get(name, 0)
                counts[name] = index + 1
                where = f"{path}.{name}[{index}]"
            else:
                where = f"{path}.{name}"
            if child.ns != FHIR_NS and not (name == "div" and child.ns == XHTML_NS and "div" in td.elements):
                self.error(where, f"{path}: element <{name}> in namespace '{child.ns}' is not allowed here.")
                continue
            if ed is None:
                self.error(where, f"{path} has an unknown element '{name}'.")
                continue
            position = order[name]
            if position < last or (position == last and name != previous):
                self.error(where, f"{path}: element '{name}' is out of order (found after '{previous}').")
            last = position
            previous = name
            if ed.prim is not None:
                self.primitive(child, ed, out, where)
                primitive_extensions = primitive_extensions or ("_" + name) in out
                continue
            value = self.contained(child, where) if ed.is_resource else self.complex(child, ed, where)
            if value is None:
                continue
            if ed.many:
                out.setdefault(name, []).append(value)
            elif name in out:
                self.error(where, f"{where} occurs more than once, but it can occur at most once.")
            else:
                out[name] = value
        if primitive_extensions:
            self.drop_null_arrays(out)

    @staticmethod
    def drop_null_arrays(out: dict[str, Any]) -> None:
        """A repeating primitive given only through extensions is written as ``_name`` alone."""
        for key in [k for k in out if k.startswith("_")]:
            values = out.get(key[1:])
            if isinstance(values, list) and all(v is None for v in values):
                del out[key[1:]]

    def contained(self, node: _Node, path: str) -> dict[str, Any] | None:
        for key in node.attrs:
            self.error(path, f"{path}: attribute '{_split(key)[1]}' is not allowed here.")
        if node.text:
            self.error(path, f"{path}: text is not allowed here.")
        inner = node.elements()
        if len(inner) != 1:
            self.error(path, f"{path} must hold exactly one resource, found {len(inner)} elements.")
            return None
        return self.resource(inner[0], path)

    def complex(self, node: _Node, ed: ElementDef, path: str) -> dict[str, Any] | None:
        td = ed.typedef
        if td is None:
            return None
        out: dict[str, Any] = {}
        for key, value in node.attrs.items():
            ns, local = _split(key)
            if not ns and local == "id":
                out["id"] = value
            elif not ns and local == "url" and td.name == "Extension":
                out["url"] = value
            else:
                self.error(path, f"{path}: attribute '{local}' is not allowed on <{node.name}>.")
        self.children(node, td, out, path)
        return out

    def primitive(self, node: _Node, ed: ElementDef, out: dict[str, Any], path: str) -> None:
        name = node.name
        if ed.type == "xhtml":
            if node.ns != XHTML_NS:
                self.error(path, f"{path} must be an XHTML <div> element.")
                return
            out[name] = xhtml_string(node)
            return
        value: Any = None
        extras: dict[str, Any] = {}
        for key, raw in node.attrs.items():
            ns, local = _split(key)
            if ns:
                self.error(path, f"{path}: attribute '{local}' is not allowed on <{name}>.")
            elif local == "value":
                value = self.primitive_value(raw, ed.type, path)
            elif local == "id":
                extras["id"] = raw
            else:
                self.error(path, f"{path}: attribute '{local}' is not allowed on <{name}> (type {ed.type}).")
        if node.text:
            self.error(path, f"{path}: text is not allowed inside <{name}>; use the value attribute.")
        extension_def = self.extension_def
        for child in node.elements():
            if child.ns == FHIR_NS and child.name == "extension":
                ext = self.complex(child, extension_def, f"{path}.extension")
                if ext is not None:
                    extras.setdefault("extension", []).append(ext)
            else:
                self.error(f"{path}.{child.name}", f"{path} has an unknown element '{child.name}' (type "
                                                   f"{ed.type} only has a value attribute and extensions).")
        key = "_" + name
        if ed.many:
            values = out.setdefault(name, [])
            ext_list = out.get(key)
            if extras and ext_list is None:
                ext_list = out[key] = [None] * len(values)
            values.append(value)
            if ext_list is not None:
                ext_list.append(extras or None)
        else:
            if name in out or key in out:
                self.error(path, f"{path} occurs more than once, but it can occur at most once.")
                return
            if value is not None:
                out[name] = value
            if extras:
                out[key] = extras
            elif value is None:
                # Neither value nor extension: keep the empty element so that validation reports it.
                out[key] = {}

    def primitive_value(self, raw: str, type_name: str, path: str) -> Any:
        if type_name == "boolean":
            if raw == "true":
                return True
            if raw == "false":
                return False
            self.error(path, f"{path} value '{raw}' is not a valid boolean (true or false).", "value")
            return raw
        if type_name in _INTEGER_TYPES:
            if _INTEGER.fullmatch(raw) is None:
                self.error(path, f"{path} value '{raw}' is not a valid {type_name}.", "value")
                return raw
            return int(raw)
        if type_name == "decimal":
            if _DECIMAL.fullmatch(raw) is None:
                self.error(path, f"{path} value '{raw}' is not a valid decimal.", "value")
                return raw
            return FhirDecimal(raw)
        return raw


def parse_xml(data: bytes) -> dict[str, Any]:
    """Parse a FHIR R4 resource in XML; raises :class:`Invalid` with issues when it cannot be read."""
    root = _build_tree(data)
    converter = _Converter()
    try:
        resource = converter.resource(root, "")
    except _Enough:
        resource = None
        converter.issues.append(Issue("error", "too-costly", bilingual(
            f"{MAX_ISSUES} problèmes relevés : la lecture s'arrête là",
            f"{MAX_ISSUES} problems found: reading stopped there")))
    if converter.issues or resource is None:
        issues = converter.issues or [Issue("error", "structure", "the document is not a FHIR resource")]
        raise Invalid(f"the XML is not a valid FHIR resource: {issues[0].diagnostics}", issues=issues)
    check_depth(resource)
    return resource
