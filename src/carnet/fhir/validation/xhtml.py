"""Checks of the XHTML narrative (``Narrative.div``): txt-1 and txt-2 of FHIR R4.

The div must be well-formed XML, a ``div`` in the XHTML namespace, use only the basic HTML
formatting elements and attributes the specification allows (so no script, forms, event handler
attributes or styles sheets), link only with safe URL schemes and have some non-whitespace content.
Parsing uses expat with DTDs and entity declarations refused.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from html.entities import name2codepoint
from typing import Any

XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

ALLOWED_ELEMENTS = frozenset({
    "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong",
    "small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address",
    "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt", "dd", "pre", "table", "caption",
    "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td", "code", "samp", "img", "map", "area",
})
ALLOWED_ATTRIBUTES = frozenset({
    "title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex",
    "span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope",
    "rowspan", "colspan",
})
ALLOWED_ELEMENT_ATTRIBUTES = frozenset({
    "a.href", "a.name", "img.src", "img.border", "div.xmlns", "blockquote.cite", "q.cite",
    "a.charset", "a.type", "a.hreflang", "a.rel", "a.rev", "a.shape", "a.coords",
    "img.alt", "img.longdesc", "img.height", "img.width", "img.usemap", "img.ismap", "map.name",
    "area.shape", "area.coords", "area.href", "area.nohref", "area.alt", "table.summary", "table.width",
    "table.border", "table.frame", "table.rules", "table.cellspacing", "table.cellpadding", "pre.space",
    "td.nowrap",
})
BLOCK_ELEMENTS = frozenset({"div", "blockquote", "table", "ol", "ul", "p"})
LINK_SCHEMES = frozenset({"http", "https", "ftp", "mailto", "tel"})
IMAGE_SCHEMES = frozenset({"http", "https", "data"})


class _Refused(Exception):
    pass


def _scheme(url: str) -> str | None:
    colon = url.find(":")
    if colon <= 0:
        return None
    head = url[:colon]
    if any(c in head for c in "/?#"):
        return None
    return head.lower()


class NarrativeResult:
    __slots__ = ("errors", "local_refs")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.local_refs: list[str] = []


_COMMENTS = re.compile(r"<!--.*?-->", re.DOTALL)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
# Some non-whitespace text between two tags.
_TEXT = re.compile(r">[^<]*?[^\s<]")
# An opening <p> (not self-closed) followed, before its </p>, by the start of a block element.
_BLOCK_IN_PARAGRAPH = re.compile(
    r"""<p(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*>[^<]*+"""
    r"""(?:<(?!/p\s*>|(?:div|blockquote|table|ol|ul|p)[\s/>])[^<]*+)*+<(div|blockquote|table|ol|ul|p)[\s/>]""")


_HTML_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})


def _numeric_entity(match: re.Match[str]) -> str:
    """HTML named entities (``&nbsp;``...) are accepted in the JSON form, as by the reference validator."""
    name = match.group(1)
    if name in _XML_ENTITIES or name not in name2codepoint:
        return match.group(0)
    return f"&#{name2codepoint[name]};"


def check_div(text: str) -> NarrativeResult:
    """Check one narrative div; the result lists problems as sentences and the '#id' links found.

    expat checks well-formedness and reports each start tag; nesting rules and text content are
    checked with regular expressions on the (then known to be well-formed) text, which is cheaper
    than also following every end tag.
    """
    result = NarrativeResult()
    errors = result.errors
    state = [True]  # still expecting the root element
    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(*_: Any) -> None:
        raise _Refused("DTDs, entity declarations and processing instructions are not allowed")

    def start(name: str, attrs: dict[str, str]) -> None:
        if state[0]:
            state[0] = False
            if name != "div" or attrs.get("xmlns") != XHTML_NS:
                found = attrs.get("xmlns")
                where = f"in namespace {found}" if found else "without namespace"
                errors.append(f"the narrative root element must be a <div> in the XHTML namespace "
                              f"({XHTML_NS}), found <{name}> {where}")
        if name not in ALLOWED_ELEMENTS:
            if ":" in name:
                errors.append(f"element <{name}> is not in the XHTML namespace")
            else:
                errors.append(f"element <{name}> is not allowed in a narrative")
        if attrs:
            _check_attributes(name, attrs, errors, result.local_refs)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ProcessingInstructionHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    source = _HTML_ENTITY.sub(_numeric_entity, text) if "&" in text else text
    try:
        parser.Parse(source.encode("utf-8"), True)
    except _Refused as exc:
        errors.append(str(exc))
        return result
    except xml.parsers.expat.ExpatError as exc:
        errors.append(f"the narrative is not well-formed XHTML ({xml.parsers.expat.ErrorString(exc.code)}, "
                      f"line {exc.lineno}, column {exc.offset})")
        return result
    markup = _COMMENTS.sub("", text) if "<!--" in text else text
    if "<![CDATA[" in markup:
        markup = _CDATA.sub(lambda m: "x" if m.group(1).strip() else "", markup)
    if "<p" in markup:
        for block in _BLOCK_IN_PARAGRAPH.finditer(markup):
            errors.append(f"block element <{block.group(1)}> is not allowed inside a paragraph <p>")
    if _TEXT.search(markup) is None and "<img" not in markup:
        errors.append("the narrative has no non-whitespace content (txt-2)")
    return result


def _check_attributes(name: str, attrs: dict[str, str], errors: list[str], local_refs: list[str]) -> None:
    for attr, value in attrs.items():
        if attr in ALLOWED_ATTRIBUTES:
            continue
        if attr == "xmlns":
            if value != XHTML_NS:
                errors.append(f"element <{name}> is not in the XHTML namespace (xmlns='{value}')")
            continue
        if attr.startswith("xmlns:"):
            continue
        if f"{name}.{attr}" not in ALLOWED_ELEMENT_ATTRIBUTES:
            errors.append(f"attribute '{attr}' is not allowed on <{name}>")
    if name == "a" or name == "area":
        href = attrs.get("href")
        if href is not None:
            _check_link(href, name, "href", LINK_SCHEMES, errors, local_refs)
    elif name == "img":
        src = attrs.get("src")
        if src is not None:
            _check_link(src, name, "src", IMAGE_SCHEMES, errors, local_refs)


def _check_link(url: str, element: str, attribute: str, schemes: frozenset[str], errors: list[str],
                local_refs: list[str]) -> None:
    if not url.strip():
        errors.append(f"the {attribute} of <{element}> is empty")
        return
    if url.startswith("#"):
        local_refs.append(url[1:])
        return
    scheme = _scheme(url)
    if scheme is not None and scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        errors.append(f"the {attribute} '{url}' of <{element}> uses the scheme '{scheme}', which is not "
                      f"allowed in a narrative link (allowed: {allowed} and relative links)")
