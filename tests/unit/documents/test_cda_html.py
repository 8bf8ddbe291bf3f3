"""The CDA-to-HTML transform of the portal: header and narrative of the real ANS examples, a
whitelist that lets no markup, attribute or link of the source through, and the parser's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree, html

from carnet.documents import cda
from carnet.documents.cda_html import render
from carnet.errors import Invalid, TooLarge

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cda-r2"
ALL = sorted(p.name for p in FIXTURES.glob("*.xml"))
VSM = "VSM_1.4_2022.01.xml"
BIO = "BIO-TROD_2024.01_COVID-19.xml"
CS9 = "CSE-CS9_2025.01.xml"
MDE = "CSE-MDE_2023.01.xml"
NON_STRUCTURED = "DOC_NON_STRUCTURE_CDA-R2-N1.xml"

TAGS = {"div", "dl", "dt", "dd", "section", "h2", "h3", "h4", "h5", "h6", "p", "span", "strong", "em", "u",
        "del", "ins", "br", "ol", "ul", "li", "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
        "small", "sub", "sup"}
ATTRIBUTES = {"class", "colspan", "rowspan"}


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _tree(out: str) -> html.HtmlElement:
    return html.fragment_fromstring(out)


def _header(out: str) -> dict[str, list[str]]:
    """The header's <dl>: each <dt> label with the texts of the <dd> that follow it."""
    rows: dict[str, list[str]] = {}
    label = ""
    for el in _tree(out).find("dl"):
        if el.tag == "dt":
            label = el.text_content()
            rows[label] = []
        else:
            rows[label].append(el.text_content())
    return rows


def _with_narrative(name: str, xml: str) -> bytes:
    """A real fixture with ``xml`` inserted at the start of its first section's <text>."""
    data = _fixture(name)
    at = data.index(b"<text>") + len(b"<text>")
    return data[:at] + xml.encode() + data[at:]


def _only_whitelisted(out: str) -> None:
    for el in _tree(out).iter():
        assert el.tag in TAGS, el.tag
        assert set(el.attrib) <= ATTRIBUTES, el.attrib
        assert el.get("class", "cda-").startswith("cda-")
        for span in ("colspan", "rowspan"):
            assert el.get(span, "1").isdigit()


# -- Real documents -----------------------------------------------------------------------------

def test_header_of_a_real_document_in_french() -> None:
    rows = _header(render(_fixture(VSM)))
    assert rows == {
        "Titre": ["Synthèse Médicale"],
        "Type de document": ["Synthèse"],
        "Date": ["le 12/03/2020 à 11:17"],
        "Patient": ["DOMINIQUE MARIE-LOUISE PAT-TROIS"],
        "Né(e) le": ["28/03/1979"],
        "Sexe": ["Féminin"],
        "Auteur": ["Dr Stéphane MEDIONI, Centre de soins le Belvédère"],
        "Établissement responsable": ["Centre de soins le Belvédère"],
        "Signé par": ["Dr Stéphane MEDIONI, Centre de soins le Belvédère"],
    }


def test_english_labels() -> None:
    out = render(_fixture(VSM), lang="en")
    rows = _header(out)
    assert list(rows) == ["Title", "Document type", "Date", "Patient", "Born", "Sex", "Author", "Custodian",
                          "Legally authenticated by"]
    assert rows["Date"] == ["12/03/2020 at 11:17"]
    assert rows["Sex"] == ["Female"]
    assert "Né(e)" not in out and "Auteur" not in out
    unstructured = render(_fixture(NON_STRUCTURED), lang="en")
    assert "not structured (application/pdf)" in unstructured
    assert "Born" in unstructured


def test_sections_become_headings_with_their_titles() -> None:
    tree = _tree(render(_fixture(CS9)))
    assert [h.text_content() for h in tree.iter("h2")] == [
        "Mode de vie", "Antécédents médicaux", "Signes vitaux", "Développement psychomoteur", "Vaccinations",
        "Médicaments administrés", "Plan de soins"]
    assert all(h.getparent().tag == "section" for h in tree.iter("h2"))


def test_nested_sections_go_down_one_heading_level() -> None:
    tree = _tree(render(_fixture(VSM)))
    assert [h.text_content() for h in tree.iter("h2")] == [
        "Pathologie en cours, antécédents, allergies et facteurs de risques", "Points de vigilance",
        "Traitement au long cours"]
    assert [h.text_content() for h in tree.iter("h3")] == [
        "Pathologies en cours, antécédents et allergies", "Facteurs de risque", "Traitements"]
    assert "Antécédents chirurgicaux" in [h.text_content() for h in tree.iter("h4")]


def test_a_narrative_table_keeps_its_cells_not_its_attributes() -> None:
    out = render(_fixture(BIO))
    tables = _tree(out).findall(".//table")
    assert len(tables) == 2
    assert [th.text_content() for th in tables[0].iter("th")] == [
        "Pathologie/Substance dépistée", "Résultat", "Commentaire"]
    assert [td.text_content() for td in tables[0].iter("td")] == [
        "Dépistage SARS-CoV2", "négatif", "(texte libre)"]
    assert "(01)00686597200018(17)260930(10)A12345" in [td.text_content() for td in tables[1].iter("td")]
    assert all(t.get("class") == "cda-table" and t.get("border") is None for t in tables)
    assert "examen-1" not in out  # content/@ID dropped
    # colspan survives (digits only)
    th = next(th for th in _tree(render(_fixture(MDE))).iter("th") if th.text_content() == "Mesures")
    assert th.get("colspan") == "2"


def test_non_xml_body_gives_a_note() -> None:
    out = render(_fixture(NON_STRUCTURED))
    note = _tree(out).find(".//p[@class='cda-unstructured']")
    assert note is not None
    assert "n'est pas structuré (application/pdf)" in note.text_content()
    assert _tree(out).find(".//section") is None
    assert "JVBERi0" not in out  # the base64 PDF is not in the page
    assert _header(out)["Titre"] == ["Compte rendu d'examens biologiques"]


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_renders_to_whitelisted_markup(name: str) -> None:
    out = render(_fixture(name))
    assert "<html" not in out and "<body" not in out
    _only_whitelisted(out)


# -- Narrative mapping --------------------------------------------------------------------------

def test_narrative_elements_map_to_html() -> None:
    out = render(_with_narrative(BIO, (
        '<paragraph>Un <content styleCode="Bold Italics">gras italique</content>, '
        '<content styleCode="Underline">souligné</content>, <content revised="delete">retiré</content>, '
        'H<sub>2</sub>O, m<sup>2</sup><footnoteRef IDREF="n1"/></paragraph>'
        '<list listType="ordered"><caption>Étapes</caption><item>un</item><item>deux</item></list>'
        '<list><item>puce</item></list>'
        '<paragraph><linkHtml href="https://sante.fr/page?a=1&amp;b=2">Santé.fr</linkHtml></paragraph>'
        '<paragraph><renderMultiMedia referencedObject="img1"/></paragraph>'
        '<footnote ID="n1">Une note</footnote>'
        '<table><caption>Légende</caption><tbody><tr><td rowspan="2" colspan="2x">c</td></tr></tbody></table>'
    )))
    _only_whitelisted(out)
    assert "<strong><em>gras italique</em></strong>" in out
    assert "<u>souligné</u>" in out
    assert "<del>retiré</del>" in out
    assert "H<sub>2</sub>O, m<sup>2</sup>" in out
    assert '<small class="cda-footnote-ref">[1]</small>' in out
    assert '<small class="cda-footnote">[1] Une note</small>' in out
    assert "<p><span class=\"cda-caption\">Étapes</span></p><ol><li>un</li><li>deux</li></ol>" in out
    assert "<ul><li>puce</li></ul>" in out
    assert 'Santé.fr <span class="cda-url">(https://sante.fr/page?a=1&amp;b=2)</span>' in out
    assert "<a" not in out and "href" not in out
    assert '<span class="cda-media">[image non affichée]</span>' in out
    assert "[image not shown]" in render(_with_narrative(BIO, "<renderMultiMedia/>"), lang="en")
    assert '<table class="cda-table"><caption>Légende</caption>' in out
    assert '<td rowspan="2">c</td>' in out


def test_deeply_nested_narrative_does_not_overflow() -> None:
    depth = 240
    out = render(_with_narrative(BIO, "<content>" * depth + "fond" + "</content>" * depth))
    assert "fond" in out
    # beyond libxml2's 256 levels (huge_tree off) the parser refuses: no recursion error in the transform
    with pytest.raises(TooLarge):
        render(_with_narrative(BIO, "<content>" * 300 + "fond" + "</content>" * 300))


# -- Hostile input ------------------------------------------------------------------------------

HOSTILE = (
    '<paragraph onclick="alert(1)" style="color:red" ID="p1">Bonjour '
    "<script>alert('hl7')</script>"
    '<x:script xmlns:x="http://www.w3.org/1999/xhtml">alert("xhtml")</x:script>'
    '<content styleCode="Bold" style="position:fixed" onmouseover="steal()">gras</content> '
    '<linkHtml href="javascript:alert(2)" onclick="alert(3)">cliquez</linkHtml> '
    '<linkHtml href=" JavaScript:alert(4)">encore</linkHtml> '
    "<content><![CDATA[<img src=x onerror=alert(5)>]]></content>"
    '<x:iframe xmlns:x="http://www.w3.org/1999/xhtml" src="https://evil.example/frame">cadre'
    '<x:img src="https://evil.example/pixel"/></x:iframe>'
    '<x:a xmlns:x="http://www.w3.org/1999/xhtml" href="https://evil.example/a">lien xhtml</x:a>'
    '<style>p { display: none }</style>'
    '<renderMultiMedia referencedObject="x" xmlns:xl="http://www.w3.org/1999/xlink" xl:href="javascript:x"/>'
    "</paragraph>"
    '<table onclick="x" style="x"><tbody><tr style="x">'
    '<td colspan="2&quot; onclick=&quot;alert(6)" rowspan=" 3 " style="x">cellule</td></tr></tbody></table>'
)


def test_hostile_narrative_yields_no_markup() -> None:
    out = render(_with_narrative(BIO, HOSTILE))
    lowered = out.lower()
    for needle in ("<script", "onclick", "onmouseover", "style=", "javascript:", "<iframe", "<img", "<a ",
                   "href", "evil.example", "<style", "<x:"):
        assert needle not in lowered, needle
    _only_whitelisted(out)
    # the texts are still there, as text
    assert "&lt;img src=x onerror=alert(5)&gt;" in out
    assert "Bonjour" in out and "cliquez" in out and "cadre" in out and "lien xhtml" in out
    assert "<strong>gras</strong>" in out
    assert '<td rowspan="3">cellule</td>' in out
    # the real narrative after the insertion is intact
    assert "Dépistage SARS-CoV2" in out


def test_header_text_is_escaped() -> None:
    data = _fixture(BIO).replace(b"<title>Test rapide", b"<title>&lt;script&gt;alert(1)&lt;/script&gt;Test", 1)
    out = render(data)
    assert "<script" not in out
    assert _header(out)["Titre"][0].startswith("<script>alert(1)</script>Test")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>"""


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    with pytest.raises(Invalid) as exc:
        render(BILLION_LAUGHS)
    assert isinstance(exc.value, cda.UnsafeXml)
    assert " / " in exc.value.message  # bilingual


def test_entity_declaration_inside_a_real_document_is_refused() -> None:
    data = _fixture(BIO)
    at = data.index(b"<ClinicalDocument")
    doctype = b'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    with pytest.raises(Invalid):
        render(data[:at] + doctype + data[at:].replace(b"<title>", b"<title>&x;", 1))


FHIR_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><name><family value="PAT-TROIS"/></name></Patient>"""


@pytest.mark.parametrize("data", [
    FHIR_XML,
    b'<ClinicalDocument><title>sans espace de noms</title></ClinicalDocument>',
    b"%PDF-1.5 not xml",
    b"",
    _fixture(BIO)[:5000],
], ids=["fhir", "no-namespace", "pdf", "empty", "truncated"])
def test_what_is_not_a_cda_is_refused(data: bytes) -> None:
    with pytest.raises(Invalid) as exc:
        render(data)
    assert " / " in exc.value.message


def test_output_is_a_fragment_that_lxml_reads_back() -> None:
    out = render(_fixture(VSM))
    assert out.startswith('<div class="cda-document">') and out.endswith("</div>")
    assert etree.tostring(_tree(out), method="text", encoding="unicode").count("Synthèse Médicale") == 1
