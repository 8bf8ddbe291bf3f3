"""The CDA parser refuses what a CDA never needs: DTDs, entities (XXE, billion laughs), external
resources, oversized input; malformed or foreign XML is an Invalid error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from lxml import etree

from carnet.documents import cda
from carnet.errors import Invalid, TooLarge

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cda-r2"
DOC = '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>{}</title></ClinicalDocument>'

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>"""

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&secret;</title></ClinicalDocument>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<ClinicalDocument xmlns="urn:hl7-org:v3"/>"""


def _refused_as_unsafe(data: bytes) -> None:
    with pytest.raises(cda.UnsafeXml) as exc:
        cda.parse(data)
    issue = exc.value.issues[0].to_fhir()
    assert issue["code"] == "security"
    fr, _, en = issue["diagnostics"].partition(" / ")
    assert "DOCTYPE" in fr and "ENTITY" in fr and "DOCTYPE" in en and "entity" in en
    assert issue["expression"] == ["DocumentReference.content[0].attachment"]
    assert isinstance(exc.value, Invalid)  # answered like any malformed input (400)


@pytest.mark.parametrize("data", [BILLION_LAUGHS, XXE_FILE, PARAMETER_ENTITY], ids=["bomb", "xxe", "parameter"])
def test_entity_declarations_are_refused(data: bytes) -> None:
    _refused_as_unsafe(data)


@contextmanager
def _server(requests: list[str]) -> Iterator[str]:
    """A loopback HTTP server serving an entity declaration; records what is asked of it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'<!ENTITY x "fetched">')

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/cda.dtd"
    finally:
        server.shutdown()
        server.server_close()


def test_external_dtd_is_refused_without_being_fetched() -> None:
    requests: list[str] = []
    with _server(requests) as url:
        data = (f'<?xml version="1.0"?><!DOCTYPE ClinicalDocument SYSTEM "{url}">'
                '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>').encode()
        _refused_as_unsafe(data)
    assert requests == []


# The parser configuration on its own, without the DOCTYPE refusal in front of it.

@pytest.mark.parametrize("data", [XXE_FILE, BILLION_LAUGHS], ids=["xxe", "bomb"])
def test_parser_never_substitutes_entities(data: bytes) -> None:
    root = etree.fromstring(data, cda.safe_parser())
    text = "".join(root.itertext())
    assert len(text) < 100 and "root:" not in text
    assert etree.tostring(root).count(b"lol") < 5


def test_parser_fetches_nothing() -> None:
    requests: list[str] = []
    with _server(requests) as url:
        for data in (f'<!DOCTYPE a SYSTEM "{url}"><a>&x;</a>',
                     f'<!DOCTYPE a [<!ENTITY % p SYSTEM "{url}"> %p;]><a/>',
                     f'<!DOCTYPE a [<!ENTITY e SYSTEM "{url}">]><a>&e;</a>'):
            with suppress(cda.UnsafeXml, etree.XMLSyntaxError):
                etree.fromstring(data.encode(), cda.safe_parser())
    assert requests == []


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_doctype_is_refused_in_any_encoding(encoding: str) -> None:
    text = XXE_FILE.decode().replace('version="1.0"', f'version="1.0" encoding="{encoding.upper()}"')
    if encoding == "utf-8-sig":
        text = text.replace('encoding="UTF-8-SIG"', 'encoding="UTF-8"')
    _refused_as_unsafe(text.encode(encoding))


def test_doctype_after_a_long_prolog_is_refused_by_the_tree_check() -> None:
    # The prolog scan only looks at the first 64 kB; the parsed tree is checked too.
    data = b'<?xml version="1.0"?><!--' + b"x" * 100_000 + b"-->" + BILLION_LAUGHS.split(b"?>", 1)[1]
    _refused_as_unsafe(data)


def test_oversized_input_is_refused_before_parsing() -> None:
    data = DOC.format("x" * 5000).encode()
    with pytest.raises(TooLarge) as exc:
        cda.parse(data, max_bytes=4096)
    assert "4096" in exc.value.message and str(len(data)) in exc.value.message
    assert cda.parse(data, max_bytes=len(data)) is not None


def test_parser_limits_stay_on() -> None:
    with pytest.raises(TooLarge) as exc:
        cda.parse(DOC.format("A" * (11 * 1024 * 1024)).encode())
    assert "limit" in exc.value.message
    deep = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">" + "<x>" * 300 + "</x>" * 300 + "</ClinicalDocument>"
    with pytest.raises(TooLarge) as exc:
        cda.parse(deep.encode())
    assert "depth" in exc.value.message


def test_xinclude_and_stylesheets_are_not_processed() -> None:
    data = (b'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:9/x.xsl"?>'
            b'<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xi="http://www.w3.org/2001/XInclude">'
            b'<title><xi:include href="file:///etc/passwd" parse="text"/></title></ClinicalDocument>')
    root = cda.parse(data)
    assert "root:" not in "".join(root.itertext())
    assert root.getprevious() is None  # the processing instruction was dropped


@pytest.mark.parametrize(("data", "word"), [
    (b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title></ClinicalDocument>', "mal formé"),
    (b"<ClinicalDocument><title/></ClinicalDocument>", "urn:hl7-org:v3"),
    (b'<Patient xmlns="http://hl7.org/fhir"/>', "ClinicalDocument"),
    (b"", "mal formé"),
])
def test_malformed_or_foreign_xml_is_invalid(data: bytes, word: str) -> None:
    with pytest.raises(Invalid) as exc:
        cda.parse(data, expression="Binary.data")
    assert not isinstance(exc.value, cda.UnsafeXml)
    issue = exc.value.issues[0].to_fhir()
    assert word in issue["diagnostics"] and " / " in issue["diagnostics"]
    assert issue["expression"] == ["Binary.data"]


def test_real_documents_with_processing_instructions_and_comments_parse() -> None:
    data = (FIXTURES / "DOC_NON_STRUCTURE_CDA-R2-N1.xml").read_bytes()
    assert data.lstrip().startswith(b"<?xml") and b"<?xml-stylesheet" in data and b"<!--" in data
    root = cda.parse(data)
    assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"
