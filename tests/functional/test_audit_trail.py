"""Every access is traced, and each patient reads the traces of their own record (SPEC C5), over
real HTTP on both databases: reads, searches split per patient, writes, refusals, emergency
access; who may read which AuditEvents; the exact leaf bytes and their inclusion proof.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from carnet.auth.principal import AccessMode
from carnet.cli.main import main
from carnet.ledger.keys import load_signer, origin_of
from carnet.ledger.merkle import leaf_hash
from carnet.ledger.note import NoteVerifier
from carnet.ledger.sequencer import Sequencer
from carnet.ledger.verify import entry_proof_from_parameters, verify_entry
from tests.conftest import Fhir
from tests.functional.dicah_world import LAB_REPORT, Actor, World


@pytest.fixture
def world(fhir: Fhir) -> World:
    return World(fhir)


def history(world: World, who: Actor, query: str = "", **kw: Any) -> list[dict[str, Any]]:
    """The AuditEvents ``who`` reads (newest first)."""
    with world.client(who, **kw) as c:
        r = c.get("AuditEvent" + query)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def about(events: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    return [e for e in events if any((x.get("what") or {}).get("reference") == reference
                                     for x in e.get("entity", []))]


def agent(event: dict[str, Any]) -> str:
    return str(event["agent"][0]["who"].get("reference") or event["agent"][0]["who"]["identifier"]["value"])


def test_a_professional_read_shows_in_the_patient_history_and_nowhere_else(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    gp = world.professional("gp", "10")
    world.treating(alice, gp)
    doc = world.document(alice, LAB_REPORT)
    assert world.sees(gp, f"DocumentReference/{doc}")
    mine = history(world, alice, f"?patient={alice.id}")
    reads = [e for e in about(mine, f"DocumentReference/{doc}") if e["action"] == "R" and agent(e) == gp.ref]
    assert len(reads) == 1
    event = reads[0]
    assert event["outcome"] == "0"
    assert event["subtype"][0]["code"] == "read"
    assert event["agent"][0]["who"]["identifier"] == {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                                      "value": gp.national_id}
    assert event["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert {"reference": f"Patient/{alice.id}"} in [x["what"] for x in event["entity"]]
    # another patient, and a search for alice's events by bob: nothing (as if there were none)
    assert about(history(world, bob), f"DocumentReference/{doc}") == []
    assert history(world, bob, f"?patient={alice.id}") == []
    # a professional reads their own trail only: the gp sees their read, another doctor nothing of it
    other = world.professional("other", "10")
    assert about(history(world, gp), f"DocumentReference/{doc}")
    assert about(history(world, other, f"?patient={alice.id}"), f"DocumentReference/{doc}") == []
    with world.client(other) as c:
        assert c.get(f"AuditEvent/{event['id']}").status_code == 404
    with world.client(alice) as c:
        assert c.get(f"AuditEvent/{event['id']}").status_code == 200
    with world.client(bob) as c:
        assert c.get(f"AuditEvent/{event['id']}").status_code == 404
    # an app alice granted her documents only does not read her history
    narrow = world.issuer.issue(dataclasses.replace(world.principal(alice),
                                                    scopes=frozenset({"patient/DocumentReference.rs"})))
    with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {narrow}"}) as c:
        assert c.get(f"AuditEvent/{event['id']}").status_code == 404
        assert c.get("AuditEvent").json().get("entry", []) == []


def test_a_search_across_records_is_one_event_per_patient_each_naming_only_its_own(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    doc_a, doc_b = world.document(alice), world.document(bob)
    r = world.fhir.get("DocumentReference", params={"_count": "50"})
    assert r.status_code == 200
    alices = [e for e in history(world, alice) if e["subtype"][0]["code"] == "search"
              and about([e], f"DocumentReference/{doc_a}")]
    assert alices, "the system's search shows in alice's history"
    named = {x["what"].get("reference") for e in alices for x in e["entity"] if "what" in x}
    assert f"DocumentReference/{doc_b}" not in named and f"Patient/{bob.id}" not in named
    bobs = [e for e in history(world, bob) if about([e], f"DocumentReference/{doc_b}")
            and e["subtype"][0]["code"] == "search"]
    assert bobs and {e["id"] for e in bobs}.isdisjoint({e["id"] for e in alices})


def test_a_refused_read_is_traced_for_the_patient_with_its_outcome(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    doc = world.document(alice)
    assert not world.sees(outsider, f"DocumentReference/{doc}")
    refused = [e for e in about(history(world, alice), f"DocumentReference/{doc}")
               if agent(e) == outsider.ref]
    assert len(refused) == 1
    assert refused[0]["outcome"] == "4" and refused[0]["action"] == "R"
    assert refused[0]["outcomeDesc"]
    # the outsider's own trail does not tell them whose record the hidden document is in
    own = history(world, outsider, "?_count=100")
    assert about(own, f"Patient/{alice.id}") == [] and about(own, f"DocumentReference/{doc}") == []
    with world.client(outsider) as c:
        assert c.get(f"AuditEvent/{refused[0]['id']}").status_code == 404


def test_emergency_access_stands_out_with_its_reason_and_a_refusal_is_kept(world: World) -> None:
    alice, carol = world.patient("alice"), world.patient("carol")
    er = world.professional("er", "10")
    doc = world.document(alice)
    reason = "Patiente inconsciente aux urgences"
    with world.client(er) as c:
        r = c.post(f"Patient/{alice.id}/$break-glass", json={"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": reason}]})
        assert r.status_code == 200, r.text
        token = next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "access_token")
    with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"DocumentReference/{doc}").status_code == 200
    events = history(world, alice)
    glass = [e for e in events if e["subtype"][-1]["code"] == "break-glass"]
    assert len(glass) == 1 and glass[0]["outcome"] == "0"
    read = [e for e in about(events, f"DocumentReference/{doc}") if agent(e) == er.ref]
    assert len(read) == 1
    purposes = [c["code"] for p in read[0]["purposeOfEvent"] for c in p["coding"]]
    assert "ETREAT" in purposes and "emergency" in purposes
    assert reason in [p.get("text") for p in read[0]["purposeOfEvent"]]
    # carol opposed emergency access: the refusal is in her history, once, with the reason given
    world.oppose_emergency(carol)
    with world.client(er) as c:
        r = c.post(f"Patient/{carol.id}/$break-glass", json={"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "Détresse respiratoire"}]})
        assert r.status_code == 403
    refused = [e for e in history(world, carol) if e["subtype"][-1]["code"] == "break-glass"]
    assert len(refused) == 1 and refused[0]["outcome"] == "4"


def test_a_write_is_traced_once_and_a_rejected_one_leaves_only_its_failure(world: World) -> None:
    alice = world.patient("alice")
    obs = world.fhir.create({"resourceType": "Observation", "status": "final",
                             "code": {"text": "poids"}, "subject": {"reference": f"Patient/{alice.id}"}})
    created = [e for e in about(history(world, alice), f"Observation/{obs['id']}") if e["action"] == "C"]
    assert len(created) == 1 and created[0]["outcome"] == "0"
    r = world.fhir.post("Observation", json={"resourceType": "Observation", "status": "nonsense",
                                             "code": {"text": "x"}, "subject": {"reference": f"Patient/{alice.id}"}})
    assert r.status_code in (400, 422)
    with world.fhir.__class__(base_url=world.fhir.base + "/") as c:
        r = c.get("AuditEvent", params={"action": "C", "outcome": "4"})
    failures = [e["resource"] for e in r.json().get("entry", [])]
    assert len(failures) == 1 and failures[0]["subtype"][0]["code"] == "create"
    assert len(about(history(world, alice), f"Observation/{obs['id']}")) >= 1


def test_audit_events_cannot_be_written_by_anyone(fhir: Fhir) -> None:
    event = {"resourceType": "AuditEvent", "id": "forged", "type": {"code": "rest"}, "recorded":
             "2026-01-01T00:00:00Z", "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    assert fhir.post("AuditEvent", json=event).status_code == 405
    assert fhir.put("AuditEvent/forged", json=event).status_code == 405
    assert fhir.put("AuditEvent?_id=forged", json=event).status_code == 405
    assert fhir.delete("AuditEvent/forged").status_code == 405
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": event, "request": {"method": "PUT", "url": "AuditEvent/forged"}}]}
    assert fhir.post("", json=bundle).status_code >= 400
    assert fhir.get("AuditEvent/forged").status_code == 404
    r = fhir.get("AuditEvent", params={"outcome": "5"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    assert fhir.get("AuditEvent", params={"nope": "1"}).status_code == 400


def test_an_entry_of_my_history_is_proved_in_the_signed_log(world: World, tmp_path: Any) -> None:
    alice = world.patient("alice")
    gp = world.professional("gp", "10")
    world.treating(alice, gp)
    doc = world.document(alice)
    assert world.sees(gp, f"DocumentReference/{doc}")
    settings = world.fhir.backend.settings
    signer = load_signer(settings)
    event = next(e for e in about(history(world, alice), f"DocumentReference/{doc}") if agent(e) == gp.ref)
    with world.client(alice) as c:
        raw = c.get(f"AuditEvent/{event['id']}")
        assert raw.status_code == 200
        Sequencer(world.fhir.backend.engine, signer, origin_of(settings)).drain()
        r = c.get(f"AuditEvent/{event['id']}/$inclusion-proof")
        assert r.status_code == 200, r.text
    params = r.json()
    proof = entry_proof_from_parameters(params)
    assert proof.leaf == raw.content  # the event as served is the exact leaf
    key = httpx.get(world.fhir.live.url + "/ledger/key").text.strip()
    assert key == signer.verifier_key()
    assert "is in the log" in verify_entry(proof, NoteVerifier.from_key(key))
    # the offline command, with the key from a trusted source
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(params))
    ok = CliRunner().invoke(main, ["verify-proof", str(path), "--key", key])
    assert ok.exit_code == 0, ok.output
    # an altered entry (someone's name changed in it) is refused
    for p in params["parameter"]:
        if p["name"] == "leaf":
            p["valueBase64Binary"] = base64.b64encode(raw.content.replace(gp.ref.encode(), b"Practitioner/x")).decode()
    path.write_text(json.dumps(params))
    bad = CliRunner().invoke(main, ["verify-proof", str(path), "--key", key])
    assert bad.exit_code == 1 and "not at index" in bad.output
    # the entry by its hash, through the public proof endpoint
    digest = base64.b64encode(leaf_hash(raw.content)).decode()
    r2 = httpx.get(world.fhir.live.url + "/ledger/proof/inclusion", params={"hash": digest, "size": proof.size})
    assert r2.status_code == 200 and r2.json()["index"] == proof.index
    assert [base64.b64decode(h) for h in r2.json()["hashes"]] == proof.hashes


def test_emergency_reads_and_normal_reads_are_told_apart(world: World) -> None:
    alice = world.patient("alice")
    er = world.professional("er", "10")
    doc = world.document(alice)
    assert world.search(er, f"DocumentReference?patient={alice.id}", mode=AccessMode.EMERGENCY,
                        patient=alice.id, reason="arrêt cardiaque") == [doc]
    searches = [e for e in about(history(world, alice), f"DocumentReference/{doc}") if agent(e) == er.ref]
    assert searches and all("purposeOfEvent" in e for e in searches)


def test_the_capability_statement_says_audit_events_are_read_and_searched_only(fhir: Fhir) -> None:
    cs = fhir.get("metadata").json()
    audit = next(r for r in cs["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "search-type"}
    assert {p["name"] for p in audit["searchParam"]} == {"_id", "patient", "agent", "date", "action", "outcome",
                                                          "subtype"}
    assert [o["name"] for o in audit["operation"]] == ["inclusion-proof"]
    # and every parameter it lists works
    for name, value in (("patient", "x"), ("agent", "Practitioner/x"), ("date", "ge2026-01-01"),
                        ("action", "R"), ("outcome", "0"), ("subtype", "read"), ("_id", "x")):
        assert fhir.get("AuditEvent", params={name: value}).status_code == 200, name

