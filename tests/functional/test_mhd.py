"""IHE MHD over real HTTP on SQLite and PostgreSQL (C3): ITI-65 with IHE's own bundles, ITI-105,
ITI-68 retrieval (exact bytes, ranges, tamper detection), unique ids, replacement and lifecycle,
and the French metadata rules."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from carnet.db.tables import document_contents
from carnet.identity import fhir as insfhir
from carnet.identity import nir
from carnet.identity.status import Traits
from tests.conftest import FIXTURES, Fhir

BUNDLES = FIXTURES / "ihe-mhd-bundles"
LOINC = "http://loinc.org"
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
MARIE_NIR = nir.make_matricule("2840376540123")
MARIE = Traits("MARTIN", ("MARIE",), date(1984, 3, 12), "female", "76540")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BUNDLES / name).read_text())
    return data


def put_patient(fhir: Fhir, pid: str) -> None:
    r = fhir.put(f"Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                          "name": [{"family": "Schmidt", "given": ["Dee"]}]})
    assert r.status_code in (200, 201), r.text


def ins_patient(fhir: Fhir, pid: str, traits: Traits = MARIE, matricule: str = MARIE_NIR,
                oid: str = nir.OID_INS_NIR_TEST) -> None:
    patient = insfhir.build_patient(traits, matricule=matricule, oid=oid, resource_id=pid)
    r = fhir.put(f"Patient/{pid}", json=patient)
    assert r.status_code == 201, r.text


def docs_of(resp: dict[str, Any]) -> list[str]:
    return [e["response"]["location"].split("/")[1] for e in resp["entry"]
            if e["response"].get("location", "").startswith("DocumentReference/")]


# IHE's examples that break a rule of C3: each is refused, and the answer names the defect.
DEFECTIVE = {
    # two DocumentReferences with one masterIdentifier (uniqueId) and different content
    "Bundle-ex-comprehensiveProvideDocumentBundleMultiple.json": (422, "same unique id"),
    # attachment.size says 24, the Binary holds 23 bytes
    "Bundle-ex-comprehensiveProvideDocumentBundleReplace.json": (422, "attachment.size (24)"),
    # no subject anywhere: the document would belong to no patient's record
    "Bundle-ex-minimalProvideDocumentBundleSimpleContained.json": (422, "must name its patient"),
}
REQUESTS = sorted(p.name for p in BUNDLES.glob("Bundle-ex-*ProvideDocumentBundle*.json") if "response" not in p.name)
RESPONSE_OF = {
    "Bundle-ex-minimalProvideDocumentBundleSimple.json": "Bundle-ex-response-minimalProvideDocumentBundleSimple.json",
    "Bundle-ex-comprehensiveProvideDocumentBundleSimple.json":
        "Bundle-ex-response-comprehensiveProvideDocumentBundleSimple.json",
    "Bundle-ex-unContainedComprehensiveProvideDocumentBundleComplete.json":
        "Bundle-ex-response-unContainedComprehensiveProvideDocumentBundleCompt.json",
}


@pytest.mark.parametrize("name", REQUESTS)
def test_ihe_provide_bundles(fhir: Fhir, name: str) -> None:
    for pid in ("ex-patient", "fdoc-patient"):
        put_patient(fhir, pid)
    bundle = load(name)
    r = fhir.post("", json=bundle)
    if name in DEFECTIVE:
        status, words = DEFECTIVE[name]
        assert r.status_code == status, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert words in json.dumps(r.json())
        assert fhir.get("DocumentReference?_summary=count").json()["total"] == 0
        return
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "transaction-response"
    assert len(resp["entry"]) == len(bundle["entry"])
    sent_types = [e["resource"]["resourceType"] if e["resource"]["resourceType"] != "Bundle" else "Binary"
                  for e in bundle["entry"]]
    got_types = [e["response"]["location"].split("/")[0] for e in resp["entry"]]
    assert got_types == sent_types
    assert all(e["response"]["status"] == "201 Created" for e in resp["entry"])
    if name in RESPONSE_OF:  # shaped like IHE's example response: one 201 per entry, same types, in order
        ihe = load(RESPONSE_OF[name])
        assert [e["response"]["status"] for e in ihe["entry"]] == [e["response"]["status"] for e in resp["entry"]]
        assert [e["response"]["location"].split("/")[0] for e in ihe["entry"]] == got_types
    # every published document's content comes back byte-identical, with its hash and size
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] != "DocumentReference":
            continue
        uid = e["resource"]["masterIdentifier"]["value"]
        found = fhir.get("DocumentReference", params={"identifier": uid}).json()["entry"]
        assert len(found) == 1
        att = found[0]["resource"]["content"][0]["attachment"]
        content = fhir.get(att["url"])
        assert content.status_code == 200
        binary = next(x["resource"] for x in bundle["entry"] if x.get("fullUrl") ==
                      e["resource"]["content"][0]["attachment"]["url"])
        if binary["resourceType"] == "Binary":
            assert content.content == base64.b64decode(binary["data"])
        else:  # a FHIR Document (Bundle) as content
            assert json.loads(content.content) == binary
        assert att["size"] == len(content.content)
        assert base64.b64decode(att["hash"]) == hashlib.sha1(content.content).digest()


def simple(content: bytes = b"Hello World", uid: str = "urn:oid:1.2.3.4.5.1", patient: str = "ex-patient",
           **extra: Any) -> dict[str, Any]:
    bundle = load("Bundle-ex-comprehensiveProvideDocumentBundleSimple.json")
    for e in bundle["entry"]:
        res = e["resource"]
        if res["resourceType"] == "DocumentReference":
            res["masterIdentifier"]["value"] = uid
            res["subject"] = {"reference": f"Patient/{patient}"}
            att = res["content"][0]["attachment"]
            att.pop("hash", None)
            att.pop("size", None)
            for key, value in extra.items():
                if value is None:
                    res.pop(key, None)
                else:
                    res[key] = value
        elif res["resourceType"] == "Binary":
            res["data"] = base64.b64encode(content).decode()
        elif res["resourceType"] == "List":
            res["subject"] = {"reference": f"Patient/{patient}"}
            res["identifier"] = [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": uid + ".99"}]
    return bundle


def published(fhir: Fhir, bundle: dict[str, Any]) -> dict[str, Any]:
    resp = fhir.bundle(bundle)
    rid = docs_of(resp)[0]
    doc: dict[str, Any] = fhir.get(f"DocumentReference/{rid}").json()
    return doc


def test_retrieve_exact_bytes_ranges_and_fhir_form(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    payload = bytes(range(256)) * 40  # 10 KiB, every byte value
    doc = published(fhir, simple(payload))
    att = doc["content"][0]["attachment"]
    assert att["url"].startswith(fhir.base + "/Binary/")
    r = fhir.get(att["url"])
    assert r.content == payload
    assert r.headers["content-type"] == "text/plain"  # exactly as published
    assert r.headers["accept-ranges"] == "bytes"
    part = fhir.get(att["url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == payload[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(payload)}"
    tail = fhir.get(att["url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == payload[-10:]
    bad = fhir.get(att["url"], headers={"Range": f"bytes={len(payload)}-"})
    assert bad.status_code == 416
    assert bad.json()["resourceType"] == "OperationOutcome"
    as_fhir = fhir.get(att["url"], headers={"Accept": "application/fhir+json"}).json()
    assert as_fhir["resourceType"] == "Binary" and base64.b64decode(as_fhir["data"]) == payload
    assert as_fhir["securityContext"]["reference"] == f"DocumentReference/{doc['id']}"


def test_tampered_content_is_never_served(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    doc = published(fhir, simple(b"confidential discharge letter"))
    binary_id = doc["content"][0]["attachment"]["url"].rsplit("/", 1)[1]
    with fhir.backend.engine.connect() as conn:
        key = conn.execute(select(document_contents.c.blob_key)
                           .where(document_contents.c.binary_id == binary_id)).scalar_one()
    files = [p for p in Path(fhir.backend.settings.data_dir, "blobs").rglob(key) if p.is_file()]
    assert len(files) == 1
    stored = files[0].read_bytes()
    assert b"confidential" not in stored  # encrypted at rest
    tampered = bytearray(stored)
    tampered[-5] ^= 0x01
    files[0].write_bytes(bytes(tampered))
    r = fhir.get(f"Binary/{binary_id}")
    assert r.status_code == 500
    assert r.json()["resourceType"] == "OperationOutcome"
    assert b"confidential" not in r.content


def test_resubmission_is_idempotent_and_other_content_conflicts(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    first = fhir.bundle(simple(b"version one"))
    again = fhir.bundle(simple(b"version one"))
    assert docs_of(again) == docs_of(first)
    assert again["entry"][1]["response"]["status"] == "200 OK"
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 1
    other = fhir.post("", json=simple(b"version two"))
    assert other.status_code == 409, other.text
    assert "urn:oid:1.2.3.4.5.1" in other.text
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 1
    assert fhir.get(fhir.get(f"DocumentReference/{docs_of(first)[0]}").json()["content"][0]["attachment"]["url"]
                    ).content == b"version one"


def test_supplied_hash_and_size_are_checked(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    bundle = simple(b"abc")
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["hash"] = base64.b64encode(
        hashlib.sha1(b"abd").digest()).decode()
    r = fhir.post("", json=bundle)
    assert r.status_code == 422 and "hash" in r.text
    bundle = simple(b"abc")
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["hash"] = base64.b64encode(
        hashlib.sha1(b"abc").digest()).decode()
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["size"] = 3
    doc = published(fhir, bundle)
    assert doc["content"][0]["attachment"]["size"] == 3


def test_replacement_supersedes_the_old_entry_in_the_same_transaction(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    old = published(fhir, simple(b"first letter", uid="urn:oid:1.2.3.9.1"))
    replacing = simple(b"corrected letter", uid="urn:oid:1.2.3.9.2",
                       relatesTo=[{"code": "replaces", "target": {"reference": f"DocumentReference/{old['id']}"}}])
    new = published(fhir, replacing)
    assert fhir.get(f"DocumentReference/{old['id']}").json()["status"] == "superseded"
    assert new["status"] == "current"
    current = fhir.search_ids("DocumentReference?patient=Patient/ex-patient&status=current")
    assert current == [new["id"]]
    # replacing it again is refused: it is no longer current
    again = fhir.post("", json=simple(b"third", uid="urn:oid:1.2.3.9.3", relatesTo=[
        {"code": "replaces", "target": {"reference": f"DocumentReference/{old['id']}"}}]))
    assert again.status_code == 409, again.text
    # another patient's document cannot be replaced (nor told apart from an absent one)
    put_patient(fhir, "someone-else")
    foreign = fhir.post("", json=simple(b"x", uid="urn:oid:1.2.3.9.4", patient="someone-else", relatesTo=[
        {"code": "replaces", "target": {"reference": f"DocumentReference/{new['id']}"}}]))
    assert foreign.status_code == 404, foreign.text
    assert fhir.get(f"DocumentReference/{new['id']}").json()["status"] == "current"


def test_ihe_replace_bundle_corrected(fhir: Fhir) -> None:
    """IHE's Replace example, with its attachment.size corrected (24 → 23 bytes)."""
    put_patient(fhir, "ex-patient")
    original = simple(b"the original", uid="urn:oid:1.2.3.7.1")
    old = published(fhir, original)
    bundle = load("Bundle-ex-comprehensiveProvideDocumentBundleReplace.json")
    text = json.dumps(bundle).replace("DocumentReference/ex-documentreference", f"DocumentReference/{old['id']}")
    bundle = json.loads(text)
    bundle["entry"][2]["resource"]["content"][0]["attachment"]["size"] = 23
    resp = fhir.bundle(bundle)
    assert [e["response"]["status"] for e in resp["entry"]] == ["201 Created", "200 OK", "201 Created",
                                                                 "201 Created"]
    assert fhir.get(f"DocumentReference/{old['id']}").json()["status"] == "superseded"


def test_simplified_publish_builds_the_submission_set(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    dr = {"resourceType": "DocumentReference", "status": "current",
          "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.8.1"},
          "type": {"coding": [{"system": LOINC, "code": "11490-0"}]},
          "subject": {"reference": "Patient/ex-patient"},
          "content": [{"attachment": {"contentType": "application/pdf",
                                      "data": base64.b64encode(b"%PDF-1.4 letter").decode()}}]}
    r = fhir.post("DocumentReference", json=dr)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"].startswith(f"{fhir.base}/DocumentReference/{doc['id']}")
    att = doc["content"][0]["attachment"]
    assert "data" not in att and att["size"] == len(b"%PDF-1.4 letter")
    assert fhir.get(att["url"]).content == b"%PDF-1.4 letter"
    assert doc["category"][0]["coding"][0]["system"] == A03  # derived from the type
    sets = fhir.get("List", params={"code": "submissionset", "patient": "Patient/ex-patient"}).json()["entry"]
    assert [e["resource"]["entry"][0]["item"]["reference"] for e in sets] == [f"DocumentReference/{doc['id']}"]
    assert "Warning" in r.headers  # a patient without INS: accepted outside production, with a warning
    # without content, ITI-105 is refused
    no_content = copy.deepcopy(dr)
    no_content["content"][0]["attachment"].pop("data")
    no_content["masterIdentifier"]["value"] = "urn:oid:1.2.3.8.2"
    assert fhir.post("DocumentReference", json=no_content).status_code == 422


def test_lifecycle_status_metadata_update_and_delete(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    doc = published(fhir, simple(b"report", uid="urn:oid:1.2.3.6.1"))
    rid = doc["id"]
    logical = next(i["value"] for i in doc["identifier"] if i.get("use") == "official")
    # metadata update: a new entry with the same logical id; the previous one is superseded
    r = fhir.patch(f"DocumentReference/{rid}", headers={"Content-Type": "application/json-patch+json"},
                   json=[{"op": "replace", "path": "/securityLabel",
                          "value": [{"coding": [{"system": CONF, "code": "V"}]}]}])
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["id"] != rid and new["status"] == "current"
    assert next(i["value"] for i in new["identifier"] if i.get("use") == "official") == logical
    assert new["content"] == doc["content"]
    assert fhir.get(f"DocumentReference/{rid}").json()["status"] == "superseded"
    assert sorted(fhir.search_ids(f"DocumentReference?identifier={logical}")) == sorted([rid, new["id"]])
    # what is not lifecycle metadata does not change
    r = fhir.patch(f"DocumentReference/{new['id']}", headers={"Content-Type": "application/json-patch+json"},
                   json=[{"op": "replace", "path": "/type/coding/0/code", "value": "11488-4"}])
    assert r.status_code == 422 and "type" in r.text
    assert fhir.put(f"DocumentReference/{new['id']}", json=new).status_code == 405
    # a status change (FHIRPath Patch, as MHD sends it) is made in place
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "DocumentReference.status"},
        {"name": "value", "valueCode": "entered-in-error"}]}]}
    r = fhir.patch(f"DocumentReference/{new['id']}", json=params)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == new["id"] and r.json()["status"] == "entered-in-error"
    back = dict(params)
    back["parameter"] = [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "DocumentReference.status"},
        {"name": "value", "valueCode": "current"}]}]
    assert fhir.patch(f"DocumentReference/{new['id']}", json=back).status_code == 409
    # document content is immutable; logical deletion keeps it
    binary = new["content"][0]["attachment"]["url"]
    assert fhir.delete(binary).status_code == 405
    assert fhir.delete(f"DocumentReference/{new['id']}").status_code == 204
    assert fhir.get(f"DocumentReference/{new['id']}").status_code == 410
    assert fhir.get(binary).content == b"report"
    # its uniqueId stays taken: the same submission again is refused, not answered with the deleted entry
    again = fhir.post("", json=simple(b"report", uid="urn:oid:1.2.3.6.1"))
    assert again.status_code == 409 and "deleted" in again.text


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"type": {"coding": [{"system": LOINC, "code": "99999-9"}]}}, 422, "99999-9"),
    ({"category": [{"coding": [{"system": A03, "code": "11"}]}]}, 422, "incompatible"),
    ({"securityLabel": [{"coding": [{"system": CONF, "code": "Z"}]}]}, 422, "Z"),
    ({"status": "superseded"}, 422, "current"),
])
def test_french_rules_for_a_patient_with_an_ins(fhir: Fhir, change: dict[str, Any], status: int,
                                                 words: str) -> None:
    ins_patient(fhir, "ins-patient")
    base = {"type": {"coding": [{"system": LOINC, "code": "11490-0"}]}, "category": None}
    ok = simple(b"letter", uid="urn:oid:1.2.3.5.0", patient="ins-patient", **base)
    assert docs_of(fhir.bundle(ok))
    bad = simple(b"letter 2", uid="urn:oid:1.2.3.5.1", patient="ins-patient", **{**base, **change})
    r = fhir.post("", json=bad)
    assert r.status_code == status, r.text
    assert words in r.text
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 1


def test_submission_sets_are_the_record_of_a_publication(fhir: Fhir) -> None:
    put_patient(fhir, "ex-patient")
    resp = fhir.bundle(simple(b"letter"))
    ss = next(e["response"]["location"] for e in resp["entry"] if e["response"]["location"].startswith("List/"))
    rid = ss.split("/")[1]
    current = fhir.get(f"List/{rid}").json()
    assert fhir.put(f"List/{rid}", json=current).status_code == 405
    assert fhir.delete(f"List/{rid}").status_code == 405
    assert fhir.get(f"List/{rid}").json()["meta"]["versionId"] == "1"
    fake = dict(current)
    fake.pop("id")
    assert fhir.post("List", json=fake).status_code == 422
    # a Folder (or any other List) stays an ordinary resource
    folder = {"resourceType": "List", "status": "current", "mode": "working", "code": {"coding": [
        {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "folder"}]}}
    created = fhir.create(folder)
    created["title"] = "Suivi cardiologique"
    assert fhir.put(f"List/{created['id']}", json=created).status_code == 200


def _malformed(kind: str) -> dict[str, Any]:
    bundle = simple(b"content")
    entries = bundle["entry"]
    if kind == "no-submission-set":
        bundle["entry"] = [e for e in entries if e["resource"]["resourceType"] != "List"]
    elif kind == "two-submission-sets":
        entries.append(copy.deepcopy(entries[0]))
        entries[-1]["fullUrl"] = "urn:uuid:0b9c7a7e-0000-4000-8000-000000000001"
    elif kind == "bad-base64":
        next(e for e in entries if e["resource"]["resourceType"] == "Binary")["resource"]["data"] = "%%%not base64"
    elif kind == "orphan-binary":
        entries.append({"fullUrl": "urn:uuid:0b9c7a7e-0000-4000-8000-000000000002", "request": {
            "method": "POST", "url": "Binary"}, "resource": {"resourceType": "Binary", "contentType": "text/plain",
                                                             "data": "eA=="}})
    elif kind == "no-content":
        next(e for e in entries if e["resource"]["resourceType"] == "DocumentReference")["resource"]["content"] = []
    elif kind == "dangling-url":
        doc = next(e for e in entries if e["resource"]["resourceType"] == "DocumentReference")["resource"]
        doc["content"][0]["attachment"]["url"] = "urn:uuid:0b9c7a7e-0000-4000-8000-00000000dead"
    elif kind == "unknown-patient":
        for e in entries:
            if "subject" in e["resource"]:
                e["resource"]["subject"] = {"reference": "Patient/nobody"}
    elif kind == "no-masterIdentifier":
        next(e for e in entries if e["resource"]["resourceType"] == "DocumentReference")["resource"].pop(
            "masterIdentifier")
    return bundle


@pytest.mark.parametrize(("kind", "status"), [
    ("no-submission-set", 422), ("two-submission-sets", 422), ("bad-base64", 400), ("orphan-binary", 422),
    ("no-content", 422), ("dangling-url", 422), ("unknown-patient", 422), ("no-masterIdentifier", 422)])
def test_malformed_submissions_are_refused_and_change_nothing(fhir: Fhir, kind: str, status: int) -> None:
    put_patient(fhir, "ex-patient")
    r = fhir.post("", json=_malformed(kind))
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]
    for rtype in ("DocumentReference", "Binary", "List"):
        assert fhir.get(f"{rtype}?_summary=count").json()["total"] == 0


def test_content_of_a_failed_transaction_is_never_served_and_is_swept(fhir: Fhir) -> None:
    from datetime import timedelta

    from carnet.blobs import sweep_orphans
    from carnet.documents.storage import open_document_store, referenced_keys

    put_patient(fhir, "ex-patient")
    store = open_document_store(fhir.backend.settings, fhir.backend.engine)
    before = {b.key for b in store.objects.list()}  # earlier tests' content (their rows are gone)
    kept = published(fhir, simple(b"kept"))
    # the same uniqueId with other content: its bytes were stored before the transaction refused it
    assert fhir.post("", json=simple(b"refused content")).status_code == 409
    new = {b.key for b in store.objects.list()} - before
    assert len(new) == 2
    with fhir.backend.engine.connect() as conn:
        rows = set(conn.execute(select(document_contents.c.blob_key)).scalars())
    assert len(rows) == 1 and rows < new  # no row, so no Binary, references the orphan
    report = sweep_orphans(store.objects, referenced_keys(fhir.backend.engine), grace=timedelta(0))
    assert report.referenced == 1
    assert {b.key for b in store.objects.list()} == rows
    assert fhir.get(kept["content"][0]["attachment"]["url"]).content == b"kept"


def test_concurrent_submissions_of_one_document_store_it_once(fhir: Fhir) -> None:
    from concurrent.futures import ThreadPoolExecutor

    put_patient(fhir, "ex-patient")
    bundle = simple(b"sent eight times at once")

    def send(_: int) -> tuple[int, list[str]]:
        r = fhir.post("", json=copy.deepcopy(bundle))
        return r.status_code, docs_of(r.json()) if r.status_code == 200 else []

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    ok = [docs for status, docs in results if status == 200]
    assert ok, results
    assert all(status in (200, 409) for status, _ in results), results  # 409: lost the race, retry
    assert len({d for docs in ok for d in docs}) == 1
    assert fhir.get("DocumentReference?_summary=count").json()["total"] == 1
