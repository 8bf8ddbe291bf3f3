#!/usr/bin/env python3
"""Fuzz harness of the CDA R2 to HTML transform of the portal (``carnet.documents.cda_html``).

The input is a CDA document's bytes, rendered in French and in English. Properties, beyond "no
unexpected exception":

* a refusal is ``Invalid`` (``UnsafeXml`` included) or ``TooLarge`` with bilingual issues;
* the fragment has no active content, checked twice, independently: every tag written in the text
  is one of the whitelisted HTML elements, with no attribute but ``class="cda-..."`` and numeric
  ``colspan``/``rowspan`` (so no ``<script>``, no ``on*=`` handler, no ``href``/``src``, hence no
  ``javascript:`` URL); and the tree an HTML parser builds from it has only those elements and
  attributes;
* the text of the fragment holds no raw ``<`` or ``>`` outside those tags (every text is escaped).

Run: ``.venv/bin/python bench/fuzz/run.py cda_html`` (or this file with libFuzzer flags).
"""

from __future__ import annotations

import re

if __name__ == "__main__":
    from _fuzzing import instrumented

    instrumented("carnet.documents.cda_html")

from _fuzzing import check_error, fuzz, require
from lxml import html

from carnet.documents.cda_html import render
from carnet.errors import Invalid, TooLarge

TAGS = frozenset({"div", "dl", "dt", "dd", "section", "h2", "h3", "h4", "h5", "h6", "p", "span", "strong",
                  "em", "u", "del", "ins", "br", "ol", "ul", "li", "table", "caption", "thead", "tbody",
                  "tfoot", "tr", "th", "td", "small", "sub", "sup"})
# one tag as written: name, then attributes name="value" with no quote or angle bracket inside
_TAG = re.compile(r'<(/?)([a-z0-9]+)((?: [a-z]+="[^"<>]*")*)>')
_ATTR = re.compile(r' ([a-z]+)="([^"<>]*)"')
_SPAN = re.compile(r"[1-9][0-9]{0,2}")
_ENTITY = re.compile(r"&(?:amp|lt|gt|quot|#x27);")


def _allowed_attribute(name: str, value: str) -> bool:
    if name == "class":
        return value.startswith("cda-") and re.fullmatch(r"cda-[a-z-]+", value) is not None
    return name in ("colspan", "rowspan") and _SPAN.fullmatch(value) is not None


def check_fragment(out: str) -> None:
    """The properties of a rendered fragment (raises PropertyFailed)."""
    require(isinstance(out, str) and out.startswith('<div class="cda-document">'), "not a cda-document div")
    pos = 0
    markup = []
    for m in _TAG.finditer(out):
        markup.append(m.group(0))
        text = out[pos:m.start()]
        require("<" not in text and ">" not in text, f"raw angle bracket in text: {text[:80]!r}")
        require('"' not in text, f"raw quote in text: {text[:80]!r}")
        require("&" not in _ENTITY.sub("", text), f"unescaped ampersand in text: {text[:80]!r}")
        closing, name, attrs = m.groups()
        require(name in TAGS, f"tag <{name}> is not whitelisted")
        require(not (closing and attrs), f"closing tag with attributes: {m.group(0)!r}")
        for attr in _ATTR.finditer(attrs):
            require(_allowed_attribute(*attr.groups()), f"attribute not allowed: {attr.group(0)!r}")
        pos = m.end()
    rest = out[pos:]
    require("<" not in rest and ">" not in rest, f"raw angle bracket at the end: {rest[:80]!r}")
    lowered = "".join(markup).lower()  # the tags only: escaped text may say "href=" or " onclick="
    for word in ("<script", "<style", "<iframe", "<object", "<embed", "<img", "<a ", "<svg", "<math",
                 " on", "href=", "src=", "style="):
        if word == " on":
            require(re.search(r"<[^>]* on[a-z]+\s*=", lowered) is None, "event handler attribute")
        else:
            require(word not in lowered, f"active content: {word!r}")
    # what a browser-like HTML parser builds from it
    for el in html.fragment_fromstring(out, create_parent="div").iter():
        if not isinstance(el.tag, str) or el is None:
            continue
        require(el.tag in TAGS, f"parsed tag <{el.tag}> is not whitelisted")
        for name, value in el.attrib.items():
            require(_allowed_attribute(name, value), f"parsed attribute not allowed: {name}={value!r}")


def check(data: bytes) -> None:
    for lang in ("fr", "en"):
        try:
            out = render(data, lang)
        except (Invalid, TooLarge) as exc:
            check_error(exc, (Invalid, TooLarge), bilingual=True)
            return
        check_fragment(out)


if __name__ == "__main__":
    fuzz(check)
