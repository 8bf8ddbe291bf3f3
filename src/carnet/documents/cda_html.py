"""A safe transform of a CDA R2 document into an HTML fragment for the patient portal.

What is shown. The header (title, document type, date, patient, authors, custodian, legal
authenticator) as a ``<dl>``, then the body: each ``structuredBody`` section as a ``<section>`` with
a heading (``h2``, nested sections ``h3``... capped at ``h6``) and its narrative block. A
``nonXMLBody`` gives a short note with its media type: the portal offers the download itself.
Coded entries (``entry``) are *not* rendered: in CDA R2 the narrative block is the authoritative
content the author attested, and the entries are its machine-readable derivation.

Safety. The input comes from outside and the output is embedded in a page under a strict
Content-Security-Policy, so:

* parsing is :func:`carnet.documents.cda.parse`: lxml locked down (no entity substitution, no DTD
  loading or validation, no network, ``huge_tree`` off, external resources refused) and any
  ``DOCTYPE``/``ENTITY`` declaration refused, so entity bombs and XXE never reach the parser;
* the narrative is rebuilt from a whitelist of CDA narrative elements (in the ``urn:hl7-org:v3``
  namespace only): any other element, XHTML included, is dropped and only its text kept;
* no attribute of the source is ever copied, except ``colspan``/``rowspan`` of 1 to 3 digits; the
  ``styleCode`` values Bold/Italics/Emphasis/Underline become ``strong``/``em``/``u`` elements, never
  ``style`` attributes; the only other attributes emitted are our own ``cda-*`` class names;
* ``linkHtml`` is never a link: its text, then its URL as plain text when it is http(s);
  ``renderMultiMedia`` is a placeholder text; every text is HTML-escaped.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from lxml import etree

from carnet.documents import cda

# The header reading of cda.py (CI-SIS name qualifiers, TS precision): reused rather than repeated.
from carnet.documents.cda import _Reader
from carnet.documents.cda_model import CdaHeader, CdaTime, Participant, PersonName

__all__ = ["render"]

HL7 = cda.HL7
NS = cda.NS

_LABELS: dict[str, tuple[str, str]] = {
    "title": ("Titre", "Title"),
    "type": ("Type de document", "Document type"),
    "date": ("Date", "Date"),
    "patient": ("Patient", "Patient"),
    "born": ("Né(e) le", "Born"),
    "sex": ("Sexe", "Sex"),
    "author": ("Auteur", "Author"),
    "custodian": ("Établissement responsable", "Custodian"),
    "legal": ("Signé par", "Legally authenticated by"),
    "image": ("[image non affichée]", "[image not shown]"),
    "unknown_type": ("type inconnu", "unknown type"),
    "unstructured": ("Le contenu de ce document n'est pas structuré ({}) : il ne peut pas être affiché "
                     "ici, téléchargez le document pour le consulter.",
                     "The content of this document is not structured ({}): it cannot be shown here, "
                     "download the document to read it."),
    "empty": ("Ce document n'a pas de contenu lisible.", "This document has no readable content."),
}
# CI-SIS name parts: suffix = title (TRE_R11), prefix = civility (TRE_R81).
_TITLES = {"DR": ("Dr", "Dr"), "PR": ("Pr", "Prof."), "M": ("M.", "Mr"), "MME": ("Mme", "Mrs")}
_SEX = {"F": ("Féminin", "Female"), "M": ("Masculin", "Male"), "UN": ("Indéterminé", "Undetermined")}

# Narrative elements that map to one HTML element, attributes dropped.
_PLAIN = {"paragraph": "p", "item": "li", "sub": "sub", "sup": "sup", "thead": "thead", "tbody": "tbody",
          "tfoot": "tfoot", "tr": "tr", "th": "th", "td": "td"}
# Elements whose styleCode is honoured (phrasing content inside them).
_STYLED = {"content", "paragraph", "item", "th", "td", "caption", "footnote"}
_STYLES = (("bold", "strong"), ("italics", "em"), ("emphasis", "em"), ("underline", "u"))
_SPAN = re.compile(r"[1-9][0-9]{0,2}")
_HTTP = re.compile(r"https?://", re.IGNORECASE)


def _esc(text: str | None) -> str:
    return escape(text, quote=True) if text else ""


def _words(el: Any) -> str | None:
    if el is None:
        return None
    return " ".join("".join(el.itertext()).split()) or None


def _label(key: str, en: bool) -> str:
    return _LABELS[key][1 if en else 0]


# -- Header -------------------------------------------------------------------------------------

def _when(t: CdaTime | None, en: bool, *, article: bool = True) -> str | None:
    """A CDA time at its own precision, in the offset it was written with: ``le 12/03/2024 à 10:30``."""
    if t is None:
        return None
    v = t.value
    if t.precision == "year":
        return f"{v.year:04d}"
    if t.precision == "month":
        return f"{v.month:02d}/{v.year:04d}"
    day = f"{v.day:02d}/{v.month:02d}/{v.year:04d}"
    if t.precision == "day":
        return day if en or not article else f"le {day}"
    clock = f"{v.hour:02d}:{v.minute:02d}"
    if en:
        return f"{day} at {clock}"
    return f"le {day} à {clock}" if article else f"{day} à {clock}"


def _person(name: PersonName | None, en: bool) -> str | None:
    """First names and family name, after the title (suffix DR, PR) or else the civility (prefix M, MME)
    of the CI-SIS: ``Dr Pierre DIDOT``. Other prefixes and suffixes are left out."""
    if name is None or not name.display():
        return None
    titles = [_TITLES[t.upper()][1 if en else 0] for t in (*name.suffixes, *name.prefixes)
              if t.upper() in _TITLES]
    return " ".join([*titles[:1], name.display()])


def _participant(p: Participant | None, en: bool) -> str | None:
    if p is None:
        return None
    who = _person(p.name, en) or p.device
    org = p.organization.name if p.organization else None
    return ", ".join(x for x in (who, org) if x) or None


def _header(h: CdaHeader, en: bool) -> str:
    patient = h.patient
    sex = _SEX.get(patient.gender or "") if patient else None
    rows: list[tuple[str, list[str | None]]] = [
        ("title", [h.title]),
        ("type", [h.code.display_name or h.code.code] if h.code else []),
        ("date", [_when(h.effective_time, en)]),
        ("patient", [_person(patient.name, en) if patient else None]),
        ("born", [_when(patient.birth_time, en, article=False) if patient else None]),
        ("sex", [sex[1 if en else 0] if sex else None]),
        ("author", [_participant(a, en) for a in h.authors]),
        ("custodian", [h.custodian.name if h.custodian else None]),
        ("legal", [_participant(h.legal_authenticator, en)]),
    ]
    out = ['<dl class="cda-header">']
    for key, values in rows:
        shown = [v for v in values if v]
        if shown:
            out.append(f"<dt>{_esc(_label(key, en))}</dt>")
            out.extend(f"<dd>{_esc(v)}</dd>" for v in shown)
    out.append("</dl>")
    return "".join(out)


# -- Narrative block ----------------------------------------------------------------------------

class _Narrative:
    """One section's ``text``, rebuilt element by element from the whitelist."""

    def __init__(self, text: Any, en: bool) -> None:
        self.en = en
        # Footnotes are numbered in document order; footnoteRef/@IDREF shows the number it points to.
        self.footnotes = 0
        self.numbers: dict[str, int] = {}
        for n, note in enumerate(text.iter(f"{{{HL7}}}footnote"), 1):
            if note.get("ID"):
                self.numbers.setdefault(note.get("ID"), n)

    def inner(self, el: Any) -> str:
        parts = [_esc(el.text)]
        for child in el:
            if isinstance(child.tag, str):  # comments and PIs are removed by the parser anyway
                parts.append(self.element(child))
            parts.append(_esc(child.tail))
        return "".join(parts)

    def styled(self, el: Any, html: str) -> str:
        codes = {c.lower() for c in (el.get("styleCode") or "").split()}
        for tag in reversed(dict.fromkeys(tag for code, tag in _STYLES if code in codes)):
            html = f"<{tag}>{html}</{tag}>"
        return html

    def element(self, el: Any) -> str:
        qname = etree.QName(el)
        if qname.namespace != HL7:  # XHTML, SVG, anything foreign: text only
            return self.inner(el)
        name = qname.localname
        number = 0
        if name == "footnote":  # numbered before its content, as in the document order of __init__
            self.footnotes += 1
            number = self.footnotes
        body = "" if name in ("list", "renderMultiMedia", "br") else self.inner(el)
        if name in _STYLED:
            body = self.styled(el, body)
        if name in ("th", "td"):
            spans = "".join(f' {a}="{v}"' for a in ("colspan", "rowspan")
                            if (v := (el.get(a) or "").strip()) and _SPAN.fullmatch(v))
            return f"<{name}{spans}>{body}</{name}>"
        if name in _PLAIN:
            tag = _PLAIN[name]
            return f"<{tag}>{body}</{tag}>"
        if name == "content":
            revised = (el.get("revised") or "").strip().lower()
            if revised in ("insert", "delete"):
                body = f"<{revised[:3]}>{body}</{revised[:3]}>"
            return f"<span>{body}</span>"
        if name == "br":
            return "<br>"
        if name == "table":
            return f'<table class="cda-table">{body}</table>'
        if name == "caption":
            parent = el.getparent()
            if parent is not None and etree.QName(parent).localname == "table":
                return f"<caption>{body}</caption>"
            return f'<span class="cda-caption">{body}</span>'
        if name == "list":
            tag = "ol" if (el.get("listType") or "").strip().lower() == "ordered" else "ul"
            captions: list[str] = []
            items: list[str] = []
            for child in el:
                if isinstance(child.tag, str):
                    (captions if etree.QName(child).localname == "caption" else items).append(
                        self.element(child))
            head = f"<p>{''.join(captions)}</p>" if captions else ""
            return f"{head}<{tag}>{''.join(items)}</{tag}>"
        if name == "linkHtml":
            href = (el.get("href") or "").strip()
            if _HTTP.match(href) and href != _words(el):
                body += f' <span class="cda-url">({_esc(href)})</span>'
            return body
        if name == "renderMultiMedia":
            caption = "".join(self.element(c) for c in el if isinstance(c.tag, str))
            return f'<span class="cda-media">{_esc(_label("image", self.en))}</span>{caption}'
        if name == "footnote":
            return f'<small class="cda-footnote">[{number}] {body}</small>'
        if name == "footnoteRef":
            n = self.numbers.get((el.get("IDREF") or "").strip())
            return f'<small class="cda-footnote-ref">[{n}]</small>' if n else ""
        return body  # unknown or unsafe (script, style, object...): text kept, tag dropped


def _section(sec: Any, level: int, en: bool) -> str:
    h = min(level, 6)
    out = ['<section class="cda-section">']
    title = _words(sec.find("h:title", NS))
    if title:
        out.append(f"<h{h}>{_esc(title)}</h{h}>")
    text = sec.find("h:text", NS)
    if text is not None:
        out.append(f'<div class="cda-narrative">{_Narrative(text, en).inner(text)}</div>')
    out.extend(_section(sub, level + 1, en) for sub in sec.findall("h:component/h:section", NS))
    out.append("</section>")
    return "".join(out)


def _body(doc: Any, h: CdaHeader, en: bool) -> str:
    structured = doc.find("h:component/h:structuredBody", NS)
    if structured is not None:
        sections = structured.findall("h:component/h:section", NS)
        if sections:
            return "".join(_section(s, 2, en) for s in sections)
    elif h.non_xml_body is not None:
        media = h.non_xml_body.media_type or _label("unknown_type", en)
        return f'<p class="cda-unstructured">{_esc(_label("unstructured", en).format(media))}</p>'
    return f'<p class="cda-empty">{_esc(_label("empty", en))}</p>'


def render(xml: bytes, lang: str = "fr") -> str:
    """The CDA R2 document ``xml`` as an HTML fragment: labels in French, or English when ``lang`` is
    ``en`` (or ``en-*``).

    Raises :class:`carnet.errors.Invalid` when ``xml`` is not a CDA R2 document (not well-formed, not
    a ``ClinicalDocument`` in ``urn:hl7-org:v3``, or carrying a DOCTYPE/ENTITY declaration: then the
    subclass :class:`carnet.documents.cda.UnsafeXml`), and :class:`carnet.errors.TooLarge` beyond
    :data:`carnet.documents.cda.MAX_BYTES` or libxml2's limits.
    """
    en = lang.strip().lower().startswith("en")
    doc = cda.parse(xml, expression=None)
    header = _Reader(None).header(doc)
    return (f'<div class="cda-document">{_header(header, en)}'
            f'<div class="cda-body">{_body(doc, header, en)}</div></div>')
