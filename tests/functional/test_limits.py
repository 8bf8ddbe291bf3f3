"""Limits a hostile client cannot exceed, each proved over real HTTP on both databases.

Body size and time, Bundle entries, ``_count`` and search criteria, include depth and count, XML
(FHIR and CDA) and JSON bombs, silent connections, statements that run too long. Every refusal is
an OperationOutcome (an OAuth error on /oauth) with its status, a French / English diagnostic, and
leaves nothing stored. The limits are set small on servers of their own (same database) so each
proof is quick; docs/limits.md lists them with their settings.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from carnet.config import Settings
from tests.conftest import Backend, Fhir

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FHIR_XML = {"Content-Type": "application/fhir+xml"}
# A hostile body must be refused, not worked on: a request still running after this many seconds is
# a failure (a bound on hanging, not a speed target; those are measured in bench/).
HANG = 30
TIGHT = {"max_body_bytes": 64 * 1024, "max_bundle_entries": 5, "max_page_size": 5, "max_search_terms": 10,
         "max_include_depth": 2, "max_include_resources": 5, "body_read_seconds": 1.0,
         "body_min_rate": 1_000_000}


class Server:
    """A uvicorn server for the app with these settings, on the HTTP protocol ``carnet serve`` uses
    (carnet.api.limits.HttpProtocol: the deadline on headers), in a background thread."""

    def __init__(self, settings: Settings, **changes: Any) -> None:
        from carnet.api.limits import uvicorn_options
        from carnet.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.settings = settings.model_copy(update={**changes, "port": self.port})
        config = uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=self.port,
                                log_level="error", access_log=False, lifespan="on", **uvicorn_options())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url + "/fhir/", headers=FHIR_JSON, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tight(backend: Backend) -> Iterator[Server]:
    server = Server(backend.settings, **TIGHT)
    yield server
    server.stop()


def refusal(r: httpx.Response, status: int) -> str:
    """The diagnostics of a refusal, checked: the status, an OperationOutcome, French and English."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json"), r.headers
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    text = " ".join(i["diagnostics"] for i in body["issue"])
    assert " / " in text, text  # bilingual(fr, en)
    return text


def stored(fhir: Fhir, rtype: str = "Patient") -> int:
    return int(fhir.get(f"{rtype}?_summary=count").json()["total"])


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Martin"}], **extra}


def post_all(n: int, btype: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": btype, "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}} for i in range(n)]}


# -- body size ------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_declared_or_chunked(fhir: Fhir, tight: Server) -> None:
    big = json.dumps(patient(text={"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                                   + "x" * (70 * 1024) + "</div>"})).encode()
    text = refusal(tight.client.post("Patient", content=big), 413)  # declared by Content-Length
    assert "65536" in text and "octets" in text

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for at in range(0, len(big), 8192):
            yield big[at:at + 8192]

    refusal(tight.client.post("Patient", content=chunks()), 413)
    # every route, not only the FHIR API: the OAuth token endpoint answers an OAuth error
    r = httpx.post(tight.url + "/oauth/token", content=chunks(),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.json()["error"] == "invalid_request" and " / " in r.json()["error_description"]
    assert stored(fhir) == 0
    # under the limit, the same server stores it
    assert tight.client.post("Patient", json=patient()).status_code == 201


# -- Bundle entries -------------------------------------------------------------------------------

@pytest.mark.parametrize("btype", ["transaction", "batch"])
def test_a_bundle_with_too_many_entries_is_refused(fhir: Fhir, tight: Server, btype: str) -> None:
    text = refusal(tight.client.post("", json=post_all(6, btype)), 413)
    assert "6" in text and "5" in text
    assert stored(fhir) == 0
    assert tight.client.post("", json=post_all(5, btype)).status_code == 200
    assert stored(fhir) == 5


# -- _count and search criteria -------------------------------------------------------------------

def test_count_is_capped_with_a_next_link_and_must_be_a_number(fhir: Fhir, tight: Server) -> None:
    fhir.bundle(post_all(7))
    page = tight.client.get("Patient", params={"_count": "1000000000"}).json()
    assert len(page["entry"]) == 5
    [after] = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert "_count=5" in after
    assert len(httpx.get(after, timeout=30).json()["entry"]) == 2
    for query in ({"_count": "abc"}, {"_count": "-1"}, {"_offset": "1e3"}, {"_offset": "9" * 30}):
        refusal(tight.client.get("Patient", params=query), 400)
        refusal(tight.client.get("Patient/_history", params=query), 400)  # was an internal error
    refusal(tight.client.get("_history", params={"_snapshot": "yesterday"}), 400)


def test_a_search_with_too_many_criteria_is_refused(fhir: Fhir, tight: Server) -> None:
    fhir.bundle(post_all(1))
    ten = ",".join(f"n{i}" for i in range(10))
    assert tight.client.get("Patient", params={"name": ten}).status_code == 200
    text = refusal(tight.client.get("Patient", params={"name": ten + ",martin"}), 413)
    assert "11" in text and "10" in text
    refusal(tight.client.get("Patient", params=[("name", "a"), ("family", "b"), ("_sort", "name")] * 4), 413)
    # thousands of values (an internal error of the SQL engine before): refused before any SQL
    form = "name=" + ",".join(f"v{i}" for i in range(5000))
    r = tight.client.post("Patient/_search", content=form, timeout=HANG,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    refusal(r, 413)
    # _id values are keys, bounded by the page size
    assert tight.client.get("Patient", params={"_id": "a,b,c,d,e"}).status_code == 200
    refusal(tight.client.get("Patient", params={"_id": "a,b,c,d,e,f"}), 413)


# -- includes -------------------------------------------------------------------------------------

def test_iterated_includes_stop_at_the_depth_limit_and_say_so(fhir: Fhir, tight: Server) -> None:
    for i in range(5, 0, -1):  # p1 -> p2 -> p3 -> p4 -> p5 through Patient.link
        link = [{"other": {"reference": f"Patient/p{i + 1}"}, "type": "seealso"}] if i < 5 else []
        assert fhir.put(f"Patient/p{i}", json={"resourceType": "Patient", "id": f"p{i}",
                                                **({"link": link} if link else {})}).status_code == 201
    bundle = tight.client.get("Patient", params={"_id": "p1", "_include:iterate": "Patient:link"}).json()
    included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert included == {"p2", "p3"}  # max_include_depth = 2
    [warning] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert warning["issue"][0]["severity"] == "warning" and " / " in warning["issue"][0]["diagnostics"]
    # where iterating ends by itself, no warning
    bundle = tight.client.get("Patient", params={"_id": "p3", "_include:iterate": "Patient:link"}).json()
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "include", "include"]


def test_includes_adding_too_many_resources_are_refused(fhir: Fhir, tight: Server) -> None:
    fhir.put("Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
           "subject": {"reference": "Patient/p1"}}
    fhir.bundle({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}} for _ in range(5)]})
    query = {"_id": "p1", "_revinclude": "Observation:subject"}
    assert len(tight.client.get("Patient", params=query).json()["entry"]) == 6  # 5 included: the limit
    fhir.create(obs)
    text = refusal(tight.client.get("Patient", params=query), 422)
    assert "5" in text and tight.client.get("Patient", params=query).json()["issue"][0]["code"] == "too-costly"


# -- XML and JSON bombs ---------------------------------------------------------------------------

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
FHIR_XML_BOMBS = {
    "billion-laughs": '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                      + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
                                for i in range(1, 10))
                      + f']><Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/>'
                        f'<div {XHTML}>&lol9;</div></text></Patient>',
    "external-entity": '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                       '<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>',
    "deep": '<Patient xmlns="http://hl7.org/fhir">' + '<extension url="http://x">' * 20000
            + "</extension>" * 20000 + "</Patient>",
    "million-problems": '<Patient xmlns="http://hl7.org/fhir">' + "<foo/>" * 100_000 + "</Patient>",
}


@pytest.mark.parametrize("name", FHIR_XML_BOMBS)
def test_hostile_fhir_xml_is_refused(fhir: Fhir, name: str) -> None:
    r = fhir.post("Patient", content=FHIR_XML_BOMBS[name].encode(), headers=FHIR_XML, timeout=HANG)
    refusal(r, 400)
    assert len(r.content) < 100_000  # at most a hundred problems listed
    assert "root:" not in r.text  # nothing read from the file system
    assert stored(fhir) == 0


def test_json_nested_too_deep_or_too_many_values_is_refused(fhir: Fhir) -> None:
    for depth in (150, 900, 5000):  # was an internal error: orjson writes at most 254 levels
        body = '{"resourceType": "Patient", "extension": [' + '{"url": "http://x", "extension": [' * depth
        body += '{"url": "http://x", "valueString": "a"}' + "]}" * depth + "]}"
        refusal(fhir.post("Patient", content=body), 400)
    refusal(fhir.post("Patient", content="[" * 5000 + "]" * 5000), 400)
    # 2 million values in 6 MB (Python would need some 200 MB for them): refused before parsing
    refusal(fhir.post("Patient", content=b"[" + b"[]," * 2_000_000 + b"[]]", timeout=HANG), 413)
    assert stored(fhir) == 0


def test_validation_lists_at_most_a_hundred_problems(fhir: Fhir) -> None:
    r = fhir.post("Patient", json={"resourceType": "Patient", "name": [{"family": 1}] * 100_000}, timeout=HANG)
    assert r.status_code == 422 and len(r.json()["issue"]) == 101, r.text[:500]
    assert r.json()["issue"][-1]["code"] == "too-costly"
    assert stored(fhir) == 0


def test_xml_with_too_many_elements_is_refused(fhir: Fhir, monkeypatch: pytest.MonkeyPatch) -> None:
    from carnet.fhir import xml

    monkeypatch.setattr(xml, "MAX_ELEMENTS", 1000)  # 500,000 in earnest: a few seconds to reach
    body = '<Patient xmlns="http://hl7.org/fhir">' + '<extension url="http://x"/>' * 1000 + "</Patient>"
    assert "1000" in refusal(fhir.post("Patient", content=body.encode(), headers=FHIR_XML), 400)
    assert stored(fhir) == 0


CDA_BOMBS = {
    "billion-laughs": (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
                       b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
                       b'<ClinicalDocument xmlns="urn:hl7-org:v3">&c;</ClinicalDocument>', 400),
    "external-entity": (b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY s SYSTEM "file:///etc/passwd">]>'
                        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&s;</title></ClinicalDocument>', 400),
    "deep": (b'<ClinicalDocument xmlns="urn:hl7-org:v3">' + b"<component>" * 5000 + b"</component>" * 5000
             + b"</ClinicalDocument>", 413),
}


@pytest.mark.parametrize("name", CDA_BOMBS)
def test_hostile_cda_is_refused(fhir: Fhir, name: str) -> None:
    data, status = CDA_BOMBS[name]
    fhir.put("Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    doc = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": "Patient/p1"},
           "content": [{"attachment": {"contentType": "text/xml", "data": base64.b64encode(data).decode()}}]}
    r = fhir.post("DocumentReference", json=doc, timeout=HANG)
    refusal(r, status)
    assert "root:" not in r.text
    assert stored(fhir, "DocumentReference") == 0 and stored(fhir, "Binary") == 0


# -- slow clients ---------------------------------------------------------------------------------

def _read_to_end(sock: socket.socket, within: float) -> bytes:
    sock.settimeout(within)
    data = b""
    while chunk := sock.recv(65536):  # b"": the server closed the connection
        data += chunk
    return data


def _outcome(response: bytes) -> dict[str, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return dict(json.loads(body))


HEAD = (b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
        b"Content-Length: 1000\r\n\r\n")


def test_a_body_that_stalls_or_trickles_is_cut_off(fhir: Fhir, tight: Server) -> None:
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:  # a few bytes, then nothing
        started = time.monotonic()
        sock.sendall(HEAD + b'{"resourceType": ')
        response = _read_to_end(sock, 10)
        assert response.startswith(b"HTTP/1.1 408"), response
        assert 0.9 < time.monotonic() - started < 5  # CARNET_BODY_READ_SECONDS = 1
        issue = _outcome(response)["issue"][0]
        assert issue["code"] == "timeout" and " / " in issue["diagnostics"]
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:  # a byte every 50 ms
        started = time.monotonic()
        sock.sendall(HEAD)
        sock.settimeout(0.05)
        response = b""
        while not response and time.monotonic() - started < 10:
            try:
                sock.send(b" ")
                response = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        response += _read_to_end(sock, 10)
        assert response.startswith(b"HTTP/1.1 408"), response
        assert time.monotonic() - started < 5
    assert stored(fhir) == 0
    assert tight.client.get("Patient").status_code == 200  # the server is free


def test_a_connection_that_sends_nothing_or_trickles_its_headers_is_closed(backend: Backend) -> None:
    server = Server(backend.settings, header_read_seconds=0.5)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            started = time.monotonic()
            assert _read_to_end(sock, 10) == b""
            assert time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            started = time.monotonic()
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n":
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)
            assert _read_to_end(sock, 10) == b""
            assert time.monotonic() - started < 3
        # a client that asks promptly is answered, and again on the same connection
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/healthz").status_code == 200
            time.sleep(0.2)
            assert client.get("/healthz").status_code == 200
    finally:
        server.stop()


# -- request time ---------------------------------------------------------------------------------

def _seed_patients(backend: Backend, n: int) -> None:
    """n patients straight into the tables (quicker than the API): a sort over them all is slow."""
    if backend.name == "sqlite":
        numbers = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
        source, false, content = "FROM s", "0", "X'7B7D'"
    else:
        numbers, source, false, content = "", "FROM generate_series(1, :n) AS s(i)", "false", "'\\x7b7d'::bytea"
    with backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(text(numbers + "INSERT INTO resources (res_type, res_id, version, last_updated, "
                          f"created_at, deleted, content, visibility) SELECT 'Patient', 'seed' || i, 1, 1, 1, "
                          f"{false}, {content}, 0 {source}"), {"n": n})
        conn.execute(text("INSERT INTO idx_string (res_type, res_id, param, value, exact) "
                          "SELECT res_type, res_id, 'name', 'martin' || res_id, 'Martin' FROM resources "
                          "WHERE res_type = 'Patient'"))


def test_a_query_running_too_long_is_stopped_without_internals(fhir: Fhir, backend: Backend) -> None:
    _seed_patients(backend, 20_000)
    server = Server(backend.settings, statement_timeout_seconds=0.02, ledger_sequencer=False)
    try:
        started = time.monotonic()
        r = server.client.get("Patient", params={"name:contains": "n", "_sort": "-name", "_count": "1"})
        text = refusal(r, 503)
        assert time.monotonic() - started < 5
        assert r.json()["issue"][0]["code"] == "timeout" and "0.02 s" in text
        assert not any(word in r.text.lower() for word in ("select", "sqlite", "psycopg", "idx_", "statement "))
        assert server.client.get("Patient/seed1").status_code == 200  # a quick request still answers
    finally:
        server.stop()
    # the refusal is traced (outcome 12: a failure of the server)
    events = fhir.get("AuditEvent", params={"outcome": "12", "_count": "20"}).json().get("entry") or []
    assert any("0.02 s" in (e["resource"].get("outcomeDesc") or "") for e in events)
