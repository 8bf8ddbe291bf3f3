"""A review of the access-control layer (DICAH, SPEC C4) from the outside, over real HTTP, both
databases: can a caller see or infer what the rules hide (hidden must answer like absent), or write
what they may not write?

Passing tests are regressions: of what held when reviewed, and of defects since fixed. Tests
marked ``xfail(strict=True)`` are open defects: each reason says what leaks or what is wrongly
allowed; once the defect is fixed they fail as XPASS, and the mark goes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import date
from typing import Any

import httpx
import pytest

from carnet.auth.principal import AccessMode, Kind, Principal
from carnet.policy.attributes import VISIBILITY_SYSTEM
from tests.conftest import FIXTURES, Fhir
from tests.functional.dicah_world import DEMO, LAB_REPORT, LOINC, NORMAL, PDF, PRESCRIPTION, Actor, World

INS_SYSTEM = f"urn:oid:{DEMO}"
ABSENT = "00000000-0000-4000-8000-000000000000"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
PATIENT_UPLOAD = "74465-6"  # a type of class 90, what a patient uploads


def _label(code: str) -> dict[str, Any]:
    return {"coding": [{"system": VISIBILITY_SYSTEM, "code": code}]}


@pytest.fixture
def world(fhir: Fhir) -> World:
    return World(fhir)


# -- helpers ------------------------------------------------------------------------------------

def _binary_of(world: World, doc: str) -> str:
    url = world.fhir.get(f"DocumentReference/{doc}").json()["content"][0]["attachment"]["url"]
    return str(url.rsplit("/", 1)[1])


def _submission_set_of(world: World, doc: str) -> str:
    bundle = world.fhir.get("List", params={"item": f"DocumentReference/{doc}"}).json()
    ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert len(ids) == 1, bundle
    return str(ids[0])


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if e.get("resource") and (mode is None or e["search"]["mode"] == mode)}


def _observation(patient: Actor, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}], "text": "Heart rate"},
            "subject": {"reference": f"Patient/{patient.id}"},
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}, **extra}


def _iti105(subject: dict[str, Any], type_code: str = PATIENT_UPLOAD) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            "type": {"coding": [{"system": LOINC, "code": type_code}]},
            "subject": subject, "securityLabel": [NORMAL],
            "content": [{"attachment": {"contentType": "application/pdf",
                                        "data": base64.b64encode(PDF + uuid.uuid4().bytes).decode()}}]}


def _outcome_codes(r: httpx.Response) -> list[str]:
    return [i.get("code") for i in r.json().get("issue", [])] if r.content else []


# ==============================================================================================
# What holds
# ==============================================================================================

def test_chained_searches_through_the_subject_stay_inside_readable_records(world: World) -> None:
    alice = world.patient("alice")
    nurse, outsider = world.professional("nurse", "60"), world.professional("outsider", "10")
    world.care_team(alice, nurse)
    plain = world.document(alice)
    world.document(alice, labels=("MASQUE_PS",))
    family = world.fhir.get(f"Patient/{alice.id}").json()["name"][0]["family"]
    queries = [f"DocumentReference?patient.identifier={INS_SYSTEM}|{alice.matricule}",
               f"DocumentReference?subject:Patient.name={family}",
               f"DocumentReference?patient._id={alice.id}",
               f"List?patient.identifier={INS_SYSTEM}|{alice.matricule}"]
    for query in queries:
        assert world.search(outsider, query) == [], query
    assert world.search(nurse, queries[0]) == [plain]
    assert world.search(nurse, queries[1]) == [plain]
    with world.client(outsider) as c:
        r = c.get("DocumentReference", params={"patient.identifier": f"{INS_SYSTEM}|{alice.matricule}",
                                               "_summary": "count"})
        assert r.json()["total"] == 0


def test_reverse_chaining_is_refused_alike_for_every_caller(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    world.document(alice)
    query = {"_has:DocumentReference:subject:type": LAB_REPORT}
    with world.client(outsider) as c:
        mine = c.get("Patient", params=query)
    theirs = world.fhir.get("Patient", params=query)
    assert mine.status_code == theirs.status_code == 400
    assert _outcome_codes(mine) == _outcome_codes(theirs)


def test_counts_totals_paging_and_sorting_only_ever_count_what_the_caller_reads(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    plain = {world.document(alice) for _ in range(3)}
    for _ in range(2):
        world.document(alice, labels=("MASQUE_PS",))
    world.document(alice, "18748-4")  # imaging: not a nurse's
    with world.client(nurse) as c:
        base = {"patient": alice.id}
        assert c.get("DocumentReference", params={**base, "_summary": "count"}).json()["total"] == 3
        total = c.get("DocumentReference", params={**base, "_total": "accurate", "_count": "1"}).json()
        assert total["total"] == 3
        seen: list[str] = []
        url: str | None = str(c.get("DocumentReference", params={**base, "_count": "1"}).request.url)
        while url:
            page = c.get(url).json()
            seen += [e["resource"]["id"] for e in page.get("entry", [])]
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        assert sorted(seen) == sorted(plain)
        beyond = c.get("DocumentReference", params={**base, "_offset": "3"}).json()
        assert not beyond.get("entry") and beyond["total"] == 3
        for key in ("-date", "_id", "-_lastUpdated", "type"):
            ordered = c.get("DocumentReference", params={**base, "_sort": key}).json()
            assert _ids(ordered) == plain, key


def test_history_at_every_level_and_vread_hide_what_reads_hide(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    plain = world.document(alice)
    world.block(alice, world.professional("other", "10"))  # a Consent: never a professional's
    binary = _binary_of(world, masked)
    with world.client(nurse) as c:
        system = c.get("_history", params={"_count": "500"}).json()
        typed = c.get("DocumentReference/_history", params={"_count": "500"}).json()
        binaries = c.get("Binary/_history", params={"_count": "500"}).json()
        for bundle in (system, typed):
            ids = {e["fullUrl"].rsplit("/", 1)[1] for e in bundle.get("entry", [])}
            assert masked not in ids and plain in ids
        assert binary not in {e["fullUrl"].rsplit("/", 1)[1] for e in binaries.get("entry", [])}
        assert "Consent" not in {e["fullUrl"].split("/")[-2] for e in system.get("entry", [])}
        for path in (f"DocumentReference/{masked}/_history", f"DocumentReference/{masked}/_history/1",
                     f"Binary/{binary}/_history/1", f"Binary/{binary}/_history"):
            hidden, absent = c.get(path), c.get(path.replace(masked, ABSENT).replace(binary, ABSENT))
            assert hidden.status_code == absent.status_code == 404, path
        assert c.get(f"DocumentReference/{plain}/_history/1").status_code == 200


def test_conditional_interactions_against_a_hidden_record_answer_as_if_it_were_absent(world: World) -> None:
    alice, nobody = world.patient("alice"), world.patient("nobody")
    outsider = world.professional("outsider", "10")
    tag = f"obs-{uuid.uuid4().hex[:8]}"
    hidden_obs = world.fhir.create(_observation(alice, identifier=[{"system": "urn:test", "value": tag}]))
    answers = {}
    with world.client(outsider) as c:
        for name, ident in (("hidden", tag), ("absent", f"no-{tag}")):
            criteria = f"identifier=urn:test|{ident}"
            # If-None-Exist: a hidden match is no match (a new resource, in the record the body names)
            created = c.post("Observation", json=_observation(nobody), headers={"If-None-Exist": criteria})
            # conditional update: no match either, so a creation
            put = c.put(f"Observation?{criteria}", json=_observation(nobody))
            # conditional delete: nothing visible matches, nothing is touched
            gone = c.delete(f"Observation?{criteria}")
            patch = c.patch(f"Observation?{criteria}", headers=JSON_PATCH,
                            json=[{"op": "replace", "path": "/status", "value": "amended"}])
            answers[name] = (created.status_code, put.status_code, gone.status_code, patch.status_code,
                             _outcome_codes(patch))
    assert answers["hidden"] == answers["absent"]
    assert answers["hidden"][:4] == (201, 201, 204, 404)
    after = world.fhir.get(f"Observation/{hidden_obs['id']}")
    assert after.status_code == 200 and after.json()["meta"]["versionId"] == "1"


def test_batch_and_transaction_reads_of_hidden_resources_answer_like_absent_ones(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    doc = world.document(alice)
    binary = _binary_of(world, doc)
    reads = [f"Patient/{alice.id}", f"DocumentReference/{doc}", f"Binary/{binary}",
             f"DocumentReference/{doc}/_history/1", f"DocumentReference?patient={alice.id}",
             f"List?patient={alice.id}"]
    absent = [r.replace(alice.id, ABSENT).replace(doc, ABSENT).replace(binary, ABSENT) for r in reads]
    with world.client(outsider) as c:
        body = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": url}} for url in reads + absent]}
        r = c.post("", json=body)
        assert r.status_code == 200, r.text
        entries = r.json()["entry"]
        got = [(e["response"]["status"], _ids(e.get("resource") or {}) if e.get("resource") else None,
                [i.get("code") for i in (e["response"].get("outcome") or {}).get("issue", [])])
               for e in entries]
        assert got[:len(reads)] == got[len(reads):]
        assert [g[0][:3] for g in got[:len(reads)]] == ["404"] * 4 + ["200"] * 2
        for hidden, gone in zip(reads, absent, strict=True):  # a transaction fails on its first 404
            answers = [c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "GET", "url": url}}]}) for url in (hidden, gone)]
            assert answers[0].status_code == answers[1].status_code, hidden
            assert _outcome_codes(answers[0]) == _outcome_codes(answers[1]), hidden


def test_a_conditional_reference_to_a_hidden_patient_resolves_like_an_absent_one(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    answers = []
    with world.client(outsider) as c:
        for matricule in (alice.matricule, world._matricule(date(1980, 5, 17), True)):
            body = {"resourceType": "Bundle", "type": "transaction", "entry": [{
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {**_observation(alice), "subject": {
                    "reference": f"Patient?identifier={INS_SYSTEM}|{matricule}"}},
                "request": {"method": "POST", "url": "Observation"}}]}
            r = c.post("", json=body)
            answers.append((r.status_code, _outcome_codes(r)))
    assert answers[0] == answers[1] and answers[0][0] == 412
    assert not world.fhir.get("Observation", params={"subject": alice.id}).json().get("entry")


def test_submission_sets_show_only_readable_documents_through_includes(world: World) -> None:
    alice = world.patient("alice")
    nurse, outsider = world.professional("nurse", "60"), world.professional("outsider", "10")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    plain = world.document(alice)
    sets = {_submission_set_of(world, masked), _submission_set_of(world, plain)}
    query = f"List?patient={alice.id}&code=submissionset&_include=List:item&_include=List:item:Binary"
    with world.client(outsider) as c:
        assert not c.get(query).json().get("entry")
        for ss in sets:
            assert c.get(f"List/{ss}").status_code == 404
    with world.client(nurse) as c:
        bundle = c.get(query).json()
        assert _ids(bundle, "match") == sets
        assert _ids(bundle, "include") == {plain}
        revs = c.get("DocumentReference", params={"_id": plain, "_revinclude": "List:item"}).json()
        assert _ids(revs, "include") == {_submission_set_of(world, plain)}


def test_masked_and_invisible_content_is_not_served_by_range_format_or_search(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    for who, label in ((nurse, "MASQUE_PS"), (alice, "INVISIBLE_PATIENT")):
        doc = world.document(alice, labels=(label,))
        binary = _binary_of(world, doc)
        with world.client(who) as c:
            for target in (binary, ABSENT):
                answers = [c.get(f"Binary/{target}"),
                           c.get(f"Binary/{target}", headers={"Range": "bytes=0-3"}),
                           c.get(f"Binary/{target}", headers={"Range": "bytes=99999-"}),
                           c.get(f"Binary/{target}", params={"_format": "json"}),
                           c.get(f"Binary/{target}", headers={"Accept": "application/fhir+json"})]
                assert [r.status_code for r in answers] == [404] * 5, (label, target)
            assert not c.get("Binary", params={"_id": binary}).json().get("entry")
            assert not c.post("Binary/_search", data={"_id": binary},
                              headers={"Content-Type": "application/x-www-form-urlencoded"}
                              ).json().get("entry")
        with world.client(alice if who is nurse else nurse) as c:  # the other one reads it
            assert c.get(f"Binary/{binary}").content.startswith(PDF)


def test_post_search_hides_what_get_search_hides(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    plain = world.document(alice)
    world.document(alice, labels=("MASQUE_PS",))
    with world.client(nurse) as c:
        r = c.post("DocumentReference/_search", data={"patient": alice.id, "_total": "accurate"},
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200, r.text
        assert _ids(r.json()) == {plain} and r.json()["total"] == 1
        r = c.post("DocumentReference/_search", params={"_summary": "count"}, data={"patient": alice.id},
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.json()["total"] == 1


def test_patient_match_proposes_no_patient_the_caller_cannot_read(world: World) -> None:
    alice = world.patient("alice")
    outsider, nurse = world.professional("outsider", "10"), world.professional("nurse", "60")
    world.care_team(alice, nurse)
    me = world.fhir.get(f"Patient/{alice.id}").json()
    probe = {k: me[k] for k in ("resourceType", "name", "birthDate", "gender", "identifier") if k in me}
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": probe}]}
    with world.client(outsider) as c:
        r = c.post("Patient/$match", json=body)
        assert r.status_code == 200, r.text
        assert not r.json().get("entry") and r.json()["total"] == 0
    with world.client(nurse) as c:
        assert alice.id in _ids(c.post("Patient/$match", json=body).json())


def test_operations_on_a_hidden_record_answer_like_on_an_absent_one(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    world.document(alice)
    with world.client(outsider) as c:
        for method, op in (("GET", "$identity-history"), ("GET", "$access"), ("GET", "$everything"),
                           ("POST", "$ins-verify")):
            hidden = c.request(method, f"Patient/{alice.id}/{op}")
            absent = c.request(method, f"Patient/{ABSENT}/{op}")
            assert hidden.status_code == absent.status_code, op
            assert hidden.status_code in (400, 404), (op, hidden.text)
            assert _outcome_codes(hidden) == _outcome_codes(absent), op


def test_a_patient_cannot_write_into_another_patients_record_through_a_bundle(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    doctor = world.professional("doctor", "10")
    consent = world.consent(bob, doctor, "permit", by=alice)  # one entry alone: refused
    assert consent.status_code == 403
    body = consent.request.content
    resource = json.loads(body)
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": {"method": "POST",
                                                                                  "url": "Consent"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{bob.id}"},
            "identifier": [{"system": INS_SYSTEM, "value": alice.matricule}]},
         "request": {"method": "POST", "url": "RelatedPerson"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "List", "status": "current", "mode": "working",
            "subject": {"reference": f"Patient/{bob.id}"}}, "request": {"method": "POST", "url": "List"}}]
    with world.client(alice) as c:
        r = c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert r.status_code == 403, r.text
        r = c.post("", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
        assert r.status_code == 200, r.text
        assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["403"] * 3
        # a conditional reference naming bob resolves to nothing alice may write in
        via_ref = dict(resource, patient={"reference": f"Patient?identifier={INS_SYSTEM}|{bob.matricule}"})
        r = c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": via_ref,
             "request": {"method": "POST", "url": "Consent"}}]})
        assert r.status_code in (403, 412), r.text
    for rtype in ("Consent", "RelatedPerson", "List"):
        found = world.fhir.get(rtype, params={"patient": bob.id}).json()
        assert rtype == "List" or not found.get("entry"), rtype
    own = world.document(bob)
    assert world.search(bob, "List") == [_submission_set_of(world, own)]
    assert not world.sees(doctor, f"Patient/{bob.id}")


def test_a_professional_cannot_write_consents_or_care_teams_by_any_route(world: World) -> None:
    alice = world.patient("alice")
    doctor = world.professional("doctor", "10")
    world.care_team(alice, doctor)
    team = {"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{alice.id}"},
            "participant": [{"member": {"reference": doctor.ref}}]}
    consent = world.consent(alice, doctor, "permit", full=True, by=doctor)
    assert consent.status_code == 403
    permit = json.loads(consent.request.content)
    with world.client(doctor) as c:
        for btype in ("transaction", "batch"):
            r = c.post("", json={"resourceType": "Bundle", "type": btype, "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": permit,
                 "request": {"method": "POST", "url": "Consent"}},
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": team,
                 "request": {"method": "POST", "url": "CareTeam"}},
                {"resource": {**team, "id": "team-by-doctor"},
                 "request": {"method": "PUT", "url": "CareTeam/team-by-doctor"}},
                {"resource": permit, "request": {"method": "PUT", "url": f"Consent?patient={alice.id}"}}]})
            if btype == "transaction":
                assert r.status_code == 403, r.text
            else:
                assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["403"] * 4, r.text
        assert c.put(f"CareTeam?subject={alice.id}", json=team).status_code == 403
        assert c.put("CareTeam/team-by-doctor", json={**team, "id": "team-by-doctor"}).status_code == 403
        assert c.delete(f"CareTeam?subject={alice.id}").status_code == 403
    assert not world.fhir.get("Consent", params={"patient": alice.id}).json().get("entry")
    assert len(world.fhir.get("CareTeam", params={"subject": alice.id}).json()["entry"]) == 1


def test_a_blocked_professional_reads_nothing_even_with_an_emergency_token(world: World) -> None:
    alice = world.patient("alice")
    blocked = world.professional("blocked", "10")
    world.care_team(alice, blocked)
    doc = world.document(alice)
    world.block(alice, blocked)
    reason = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Urgence"}]}
    with world.client(blocked) as c:
        assert c.post(f"Patient/{alice.id}/$break-glass", json=reason).status_code == 403
    for mode in (AccessMode.EMERGENCY, AccessMode.REGULATION):
        principal = dataclasses.replace(world.principal(blocked, mode=mode, patient=alice.id, reason="x"),
                                        roles=frozenset({"centre15"}), scopes=frozenset({"user/*.rs"}))
        token = world.issuer.issue(principal)
        with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.get(f"Patient/{alice.id}").status_code == 404
            assert c.get(f"DocumentReference/{doc}").status_code == 404
            assert c.get(f"Binary/{_binary_of(world, doc)}").status_code == 404
            assert not c.get("DocumentReference", params={"patient": alice.id}).json().get("entry")
            history = c.get("_history", params={"_count": "500"}).json()
            assert {e["fullUrl"].split("/")[-2] for e in history.get("entry", [])} <= {
                "Practitioner", "PractitionerRole", "Organization"}  # the directory, shared


def test_includes_with_iterate_do_not_cross_into_a_hidden_record(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    mine = world.document(alice)
    theirs = world.document(bob)
    current = world.fhir.get(f"Patient/{alice.id}").json()
    current["link"] = [{"other": {"reference": f"Patient/{bob.id}"}, "type": "seealso"}]
    assert world.fhir.put(f"Patient/{alice.id}", json=current).status_code == 200
    with world.client(nurse) as c:
        for params in ({"_id": alice.id, "_include": "Patient:link",
                        "_revinclude:iterate": "DocumentReference:subject"},
                       {"_id": alice.id, "_include:iterate": "*", "_revinclude:iterate": "*"}):
            bundle = c.get("Patient", params=params).json()
            ids = _ids(bundle)
            assert bob.id not in ids and theirs not in ids, params
        assert mine in _ids(c.get("Patient", params={"_id": alice.id,
                                                     "_revinclude": "DocumentReference:subject"}).json())
        linked = c.get("Patient", params={"link": f"Patient/{bob.id}"}).json()
        assert _ids(linked) == {alice.id}  # her own link, not bob


def test_the_include_limit_counts_only_what_the_caller_may_read(world: World) -> None:
    """A refusal for too many included resources would tell how many hidden ones point at a
    record: the limit counts what the caller may read, and hidden ones never trip it."""
    from tests.conftest import LiveServer

    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    shown = world.document(alice)
    hidden = [world.document(alice, labels=("MASQUE_PS",)) for _ in range(3)]
    tight = LiveServer(world.fhir.live.settings.model_copy(update={"max_include_resources": 2}))
    try:
        headers = {"Authorization": f"Bearer {tight.app.state.issuer.issue(world.principal(nurse))}"}
        with httpx.Client(base_url=tight.url + "/fhir/", headers=headers, timeout=30) as c:
            r = c.get("Patient", params={"_id": alice.id, "_revinclude": "DocumentReference:subject"})
            assert r.status_code == 200, r.text  # 4 documents point at her; 1 may be read
            assert _ids(r.json()) == {alice.id, shown} and not set(hidden) & _ids(r.json())
        with httpx.Client(base_url=tight.url + "/fhir/", timeout=30) as system:  # development: reads all
            r = system.get("Patient", params={"_id": alice.id, "_revinclude": "DocumentReference:subject"})
            assert r.status_code == 422  # for a caller who reads them all, the limit holds
    finally:
        tight.stop()


# ==============================================================================================
# Defects found by this review: xfail while open, plain regressions once fixed
# ==============================================================================================

def test_chaining_through_a_submission_set_reveals_nothing_of_a_masked_document(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, LAB_REPORT, labels=("MASQUE_PS",))
    ss = _submission_set_of(world, masked)
    assert world.sees(nurse, f"List/{ss}")  # the SubmissionSet itself is readable
    probes = [f"List?_id={ss}&item:DocumentReference.type={LAB_REPORT}",
              f"List?_id={ss}&item:DocumentReference.security-label=MASQUE_PS",
              f"List?patient={alice.id}&item:DocumentReference.type={PRESCRIPTION}"]
    answers = [world.search(nurse, q) for q in probes]
    # what it holds must not leak: a true and a false guess answer alike
    assert answers[0] == answers[2] and answers[1] == answers[2], answers


def test_chaining_through_a_submission_set_reveals_nothing_of_a_document_invisible_to_the_patient(
        world: World) -> None:
    alice = world.patient("alice")
    invisible = world.document(alice, LAB_REPORT, labels=("INVISIBLE_PATIENT",))
    ss = _submission_set_of(world, invisible)
    assert world.sees(alice, f"List/{ss}")
    right = world.search(alice, f"List?_id={ss}&item:DocumentReference.type={LAB_REPORT}")
    wrong = world.search(alice, f"List?_id={ss}&item:DocumentReference.type={PRESCRIPTION}")
    with world.client(alice) as c:
        counted = c.get("List", params={"item:DocumentReference.security-label": "INVISIBLE_PATIENT",
                                        "_summary": "count"}).json()["total"]
    assert right == wrong and counted == 0, (right, wrong, counted)


def test_update_as_create_on_a_hidden_id_answers_like_on_an_absent_id(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    taken = f"obs-{uuid.uuid4().hex[:10]}"
    r = world.fhir.put(f"Observation/{taken}", json={**_observation(alice), "id": taken})
    assert r.status_code == 201, r.text
    free = f"obs-{uuid.uuid4().hex[:10]}"
    with world.client(outsider) as c:
        hidden = c.put(f"Observation/{taken}", json={**_observation(alice), "id": taken})
        absent = c.put(f"Observation/{free}", json={**_observation(alice), "id": free})
        hidden_patient = c.put(f"Patient/{alice.id}", json=world.fhir.get(f"Patient/{alice.id}").json())
    assert hidden.status_code == absent.status_code, (hidden.text, absent.text)
    assert hidden_patient.status_code in (403, 404, absent.status_code), hidden_patient.text


def test_a_conditional_delete_of_a_document_is_reserved_to_its_author(world: World) -> None:
    alice = world.patient("alice")
    nurse, author = world.professional("nurse", "60"), world.professional("author", "10")
    world.care_team(alice, nurse)
    doc = world.document(alice, author=author)
    with world.client(nurse) as c:
        assert c.delete(f"DocumentReference/{doc}").status_code == 403  # the instance route holds
        c.delete("DocumentReference", params={"_id": doc})
    assert world.fhir.get(f"DocumentReference/{doc}").status_code == 200


def test_a_conditional_patch_cannot_rewrite_a_document_or_move_it_to_another_record(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    doc = world.document(alice)
    with world.client(nurse) as c:
        r = c.patch("DocumentReference", params={"_id": doc}, headers=JSON_PATCH, json=[
            {"op": "replace", "path": "/subject", "value": {"reference": f"Patient/{bob.id}"}}])
    assert r.status_code >= 400, r.text
    assert world.fhir.get(f"DocumentReference/{doc}").json()["subject"]["reference"] == f"Patient/{alice.id}"
    assert world.search(bob, "DocumentReference") == []


def test_a_conditional_update_cannot_replace_or_create_a_document(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    doc = world.document(alice)
    stored = world.fhir.get(f"DocumentReference/{doc}").json()
    with world.client(nurse) as c:
        instance = c.put(f"DocumentReference/{doc}", json=stored)
        assert instance.status_code == 405  # the instance route refuses
        replaced = c.put("DocumentReference", params={"_id": doc},
                         json={**stored, "description": "rewritten"})
        made = c.put("DocumentReference", params={"identifier": "urn:none|nothing"},
                     json={**stored, "id": f"forged-{uuid.uuid4().hex[:8]}", "description": "forged"})
    assert (replaced.status_code, made.status_code) == (405, 405), (replaced.text, made.text)


def test_masking_a_document_hides_its_earlier_entry_from_professionals(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    doc = world.document(alice)
    with world.client(alice) as c:
        r = c.patch(f"DocumentReference/{doc}", headers=JSON_PATCH, json=[
            {"op": "replace", "path": "/securityLabel", "value": [NORMAL, _label("MASQUE_PS")]}])
        assert r.status_code == 200, r.text
    assert not world.sees(nurse, f"DocumentReference/{r.json()['id']}")
    # the entry it replaced is the same document, with the same type, dates and content link
    assert world.search(nurse, f"DocumentReference?patient={alice.id}") == []


def test_a_new_entry_naming_a_masked_documents_content_does_not_unmask_it(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    doc = world.document(alice, labels=("MASQUE_PS",))
    binary = _binary_of(world, doc)
    assert not world.sees(nurse, f"Binary/{binary}")
    forged = {"resourceType": "DocumentReference", "id": f"forged-{uuid.uuid4().hex[:8]}", "status": "current",
              "type": {"coding": [{"system": LOINC, "code": LAB_REPORT}]},
              "subject": {"reference": f"Patient/{alice.id}"}, "securityLabel": [NORMAL],
              "content": [{"attachment": {"contentType": "application/pdf",
                                          "url": f"{world.fhir.base}/Binary/{binary}"}}]}
    with world.client(nurse) as c:
        c.put("DocumentReference", params={"identifier": "urn:none|nothing"}, json=forged)
        leaked = c.get(f"Binary/{binary}")
    assert leaked.status_code == 404 and not leaked.content.startswith(PDF)


def test_a_professional_cannot_make_themselves_the_treating_doctor(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, PRESCRIPTION, labels=("MASQUE_PS",))
    with world.client(nurse) as c:
        me = c.get(f"Patient/{alice.id}").json()
        me["generalPractitioner"] = [{"reference": nurse.ref}]
        r = c.put(f"Patient/{alice.id}", json=me)
    assert r.status_code == 403, r.text
    assert not world.sees(nurse, f"DocumentReference/{masked}")


def test_a_professional_cannot_close_a_record_by_deleting_the_patient(world: World) -> None:
    alice = world.patient("alice")
    nurse, gp = world.professional("nurse", "60"), world.professional("gp", "10")
    world.care_team(alice, nurse, gp)
    doc = world.document(alice)
    with world.client(nurse) as c:
        r = c.delete(f"Patient/{alice.id}")
    assert r.status_code == 403, r.text
    assert world.sees(gp, f"DocumentReference/{doc}")


def test_a_professional_cannot_take_over_the_practitioner_role_a_record_names(world: World) -> None:
    alice = world.patient("alice")
    gp, intruder = world.professional("gp", "10"), world.professional("intruder", "10")
    role = world.fhir.create({"resourceType": "PractitionerRole", "active": True,
                              "practitioner": {"reference": gp.ref}})["id"]
    current = world.fhir.get(f"Patient/{alice.id}").json()
    current["generalPractitioner"] = [{"reference": f"PractitionerRole/{role}"}]
    assert world.fhir.put(f"Patient/{alice.id}", json=current).status_code == 200
    masked = world.document(alice, labels=("MASQUE_PS",))
    assert world.sees(gp, f"DocumentReference/{masked}")
    with world.client(intruder) as c:
        stored = c.get(f"PractitionerRole/{role}").json()  # the directory is public
        stored["practitioner"] = {"reference": intruder.ref}
        c.put(f"PractitionerRole/{role}", json=stored)
    world.authorise(alice, world.professional("someone", "10"))  # any later change of the record
    assert not world.sees(intruder, f"DocumentReference/{masked}")
    assert world.sees(gp, f"DocumentReference/{masked}")


def test_publishing_for_someone_elses_ins_answers_a_patient_alike_whether_it_exists_or_not(
        world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    unknown = world._matricule(date(1980, 5, 17), True)
    with world.client(alice) as c:
        answers = [c.post("DocumentReference", json=_iti105({"identifier": {"system": INS_SYSTEM,
                                                                            "value": m}}))
                   for m in (bob.matricule, unknown)]
    assert all(a.status_code >= 400 for a in answers), [a.text for a in answers]
    assert answers[0].status_code == answers[1].status_code, [a.text for a in answers]


def test_a_reader_who_is_not_the_author_cannot_retire_or_relabel_a_document(world: World) -> None:
    alice = world.patient("alice")
    nurse, author = world.professional("nurse", "60"), world.professional("author", "10")
    world.care_team(alice, nurse)
    doc = world.document(alice, author=author)
    with world.client(nurse) as c:
        retired = c.patch(f"DocumentReference/{doc}", headers=JSON_PATCH,
                          json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}])
    assert retired.status_code == 403, retired.text
    assert world.fhir.get(f"DocumentReference/{doc}").json()["status"] == "current"


def test_searching_lists_by_a_hidden_item_answers_like_an_absent_item(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    assert world.search(nurse, f"List?item=DocumentReference/{ABSENT}") == []
    assert world.search(nurse, f"List?item=DocumentReference/{masked}") == []


def test_a_refused_cda_does_not_tell_a_patient_someone_elses_ins(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    data = (FIXTURES / "cda-r2" / "BIO-TROD_2024.01_COVID-19.xml").read_bytes()
    body = {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": f"Patient/{alice.id}"},
            "content": [{"attachment": {"contentType": "text/xml", "data": base64.b64encode(data).decode()}}]}
    with world.client(bob) as c:
        hidden = c.post("DocumentReference", json=body)
        absent = c.post("DocumentReference", json={**body, "subject": {"reference": f"Patient/{ABSENT}"}})
    assert hidden.status_code >= 400 and absent.status_code >= 400
    assert alice.matricule not in hidden.text, hidden.text


def test_an_operator_reads_no_clinical_content_by_default(world: World) -> None:
    alice = world.patient("alice")
    doc = world.document(alice)
    operator = Principal(Kind.OPERATOR, "operator-on-duty", frozenset({"system/*.cruds"}))
    token = world.issuer.issue(operator)
    with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"Patient/{alice.id}/$access").status_code == 200  # who may access: the operator's
        assert c.get(f"DocumentReference/{doc}").status_code == 404
        assert c.get(f"Binary/{_binary_of(world, doc)}").status_code == 404


def test_a_stored_document_bundle_about_a_patient_is_not_shared_with_everyone(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    author, outsider = world.professional("author", "10"), world.professional("outsider", "10")
    world.care_team(alice, author)
    composition = str(uuid.uuid4())
    document = {"resourceType": "Bundle", "type": "document",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                "timestamp": "2026-01-02T10:00:00Z", "entry": [
                    {"fullUrl": f"{world.fhir.base}/Composition/{composition}", "resource": {
                        "resourceType": "Composition", "id": composition, "status": "final", "title": "Compte rendu",
                        "type": {"coding": [{"system": LOINC, "code": LAB_REPORT}]},
                        "subject": {"reference": f"Patient/{alice.id}"}, "date": "2026-01-02",
                        "author": [{"reference": author.ref}]}},
                    {"fullUrl": f"{world.fhir.base}/Patient/{alice.id}",
                     "resource": world.fhir.get(f"Patient/{alice.id}").json()},
                    {"fullUrl": f"{world.fhir.base}/{author.ref}",
                     "resource": world.fhir.get(author.ref).json()}]}
    with world.client(author) as c:
        r = c.post("Bundle", json=document)
        assert r.status_code == 201, r.text
        stored = r.json()["id"]
    assert not world.sees(outsider, f"Bundle/{stored}")
    assert not world.sees(bob, f"Bundle/{stored}")


def test_content_cannot_be_attached_to_a_document_the_caller_cannot_write_or_read(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    theirs = world.document(bob)
    data = base64.b64encode(b"attached").decode()
    with world.client(alice) as c:  # a patient writes in their own record only
        r = c.post("Binary", json={"resourceType": "Binary", "contentType": "text/plain", "data": data,
                                   "securityContext": {"reference": f"DocumentReference/{theirs}"}})
        assert r.status_code == 403, r.text
    with world.client(nurse) as c:  # feeding is allowed, but the new content takes the masked labels
        r = c.post("Binary", json={"resourceType": "Binary", "contentType": "text/plain", "data": data,
                                   "securityContext": {"reference": f"DocumentReference/{masked}"}})
        assert r.status_code == 201, r.text
        assert c.get(f"Binary/{r.json()['id']}").status_code == 404
        assert c.get(f"DocumentReference/{masked}").status_code == 404
    assert world.fhir.get(f"Binary/{r.json()['id']}").status_code == 200


def test_replacing_a_hidden_document_answers_like_replacing_an_absent_one(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    answers = []
    with world.client(nurse) as c:
        for target in (masked, ABSENT):
            body = _iti105({"reference": f"Patient/{alice.id}"}, PRESCRIPTION)
            body["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{target}"}}]
            r = c.post("DocumentReference", json=body)
            answers.append((r.status_code, _outcome_codes(r), r.text.replace(target, "<target>")))
    assert answers[0][:2] == answers[1][:2] and answers[0][0] >= 400, answers
    assert answers[0][2] == answers[1][2]
    assert world.fhir.get(f"DocumentReference/{masked}").json()["status"] == "current"


def test_instance_writes_on_a_hidden_document_answer_like_on_an_absent_one(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    doc = world.document(alice)
    stored = world.fhir.get(f"DocumentReference/{doc}").json()
    with world.client(outsider) as c:
        for target in (doc, ABSENT):
            answers = [c.delete(f"DocumentReference/{target}"),
                       c.patch(f"DocumentReference/{target}", headers=JSON_PATCH,
                               json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}]),
                       c.put(f"DocumentReference/{target}", json={**stored, "id": target})]
            assert [(a.status_code, _outcome_codes(a)) for a in answers] == [
                (404, ["not-found"]), (404, ["not-found"]), (405, _outcome_codes(answers[2]))], target
    assert world.fhir.get(f"DocumentReference/{doc}").json()["meta"]["versionId"] == "1"


def test_emergency_access_refused_for_the_caller_answers_alike_for_hidden_and_absent(world: World) -> None:
    alice = world.patient("alice")
    weak, plain = world.professional("weak", "10", strong=False), world.professional("plain", "10")
    reason = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Urgence"}]}
    for who, op, body in ((weak, "$break-glass", reason), (plain, "$regulation-access", reason),
                          (plain, "$break-glass", {"resourceType": "Parameters", "parameter": []}),
                          (alice, "$break-glass", reason)):
        with world.client(who) as c:
            hidden = c.post(f"Patient/{alice.id}/{op}", json=body)
            absent = c.post(f"Patient/{ABSENT}/{op}", json=body)
        assert hidden.status_code == absent.status_code and hidden.status_code in (400, 403, 422), op
        assert hidden.text.replace(alice.id, "<id>") == absent.text.replace(ABSENT, "<id>"), op


def test_writing_a_hidden_documents_content_answers_like_writing_an_absent_binary(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    binary = _binary_of(world, world.document(alice))
    body = {"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="}
    with world.client(outsider) as c:
        hidden = [c.delete(f"Binary/{binary}").status_code,
                  c.patch(f"Binary/{binary}", headers=JSON_PATCH, json=[]).status_code]
        absent = [c.delete(f"Binary/{ABSENT}").status_code,
                  c.patch(f"Binary/{ABSENT}", headers=JSON_PATCH, json=[]).status_code]
        taken = c.put(f"Binary/{binary}", json={**body, "id": binary}).status_code
    assert hidden == absent, (hidden, absent)
    assert taken != 405


def test_reverse_includes_from_the_shared_directory_reach_no_record(world: World) -> None:
    alice = world.patient("alice")
    gp, outsider = world.professional("gp", "10"), world.professional("outsider", "10")
    world.treating(alice, gp)
    world.document(alice, author=gp)
    world.care_team(alice, gp)
    with world.client(outsider) as c:
        bundle = c.get("Practitioner", params={
            "_id": gp.id, "_revinclude": ["Patient:general-practitioner", "DocumentReference:author",
                                          "CareTeam:participant"],
            "_revinclude:iterate": "DocumentReference:subject"}).json()
    assert _ids(bundle) == {gp.id}
    with world.client(gp) as c:  # the treating doctor reaches them
        bundle = c.get("Practitioner", params={"_id": gp.id, "_revinclude": "Patient:general-practitioner"})
        assert alice.id in _ids(bundle.json())


def test_a_patients_system_history_holds_only_what_they_read(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    shown = world.document(alice)
    invisible = world.document(alice, labels=("INVISIBLE_PATIENT",))
    theirs = world.document(bob)
    hidden = {invisible, _binary_of(world, invisible), theirs, _binary_of(world, theirs), bob.id}
    with world.client(alice) as c:
        history = c.get("_history", params={"_count": "500"}).json()
        ids = {e["fullUrl"].rsplit("/", 1)[1] for e in history.get("entry", [])}
        assert shown in ids and _binary_of(world, shown) in ids and alice.id in ids
        assert not ids & hidden
        typed = c.get("DocumentReference/_history", params={"_count": "500"}).json()
        assert {e["fullUrl"].rsplit("/", 1)[1] for e in typed.get("entry", [])} == {shown}


def test_hiding_a_document_from_representatives_hides_its_earlier_entry_too(world: World) -> None:
    parent = world.patient("parent")
    child = world.minor("child", parent)
    doc = world.document(child)
    r = world.fhir.patch(f"DocumentReference/{doc}", headers=JSON_PATCH, json=[
        {"op": "replace", "path": "/securityLabel", "value": [NORMAL, _label("INVISIBLE_REPRESENTANTS_LEGAUX")]}])
    assert r.status_code == 200, r.text
    assert not world.sees(parent, f"DocumentReference/{r.json()['id']}")
    assert world.search(parent, f"DocumentReference?patient={child.id}") == []


def test_the_author_of_a_document_deletes_it(world: World) -> None:
    alice = world.patient("alice")
    author = world.professional("author", "10")
    world.care_team(alice, author)
    doc = world.document(alice, author=author)
    with world.client(author) as c:
        r = c.delete(f"DocumentReference/{doc}")
    assert r.status_code == 204, r.text
    assert world.fhir.get(f"DocumentReference/{doc}").status_code == 410


def test_masking_a_document_again_hides_every_earlier_entry(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    current = world.document(alice)
    with world.client(alice) as c:
        for labels in ([NORMAL, _label("MASQUE_PS")], [NORMAL], [NORMAL, _label("MASQUE_PS")]):
            r = c.patch(f"DocumentReference/{current}", headers=JSON_PATCH,
                        json=[{"op": "replace", "path": "/securityLabel", "value": labels}])
            assert r.status_code == 200, r.text
            current = r.json()["id"]
    assert world.search(nurse, f"DocumentReference?patient={alice.id}") == []


def test_a_group_naming_a_patient_is_not_shared_with_everyone(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    doctor, outsider = world.professional("doctor", "10"), world.professional("outsider", "10")
    world.care_team(alice, doctor)
    with world.client(doctor) as c:
        r = c.post("Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                  "name": "File active du service", "member": [
                                      {"entity": {"reference": f"Patient/{alice.id}"}}]})
        assert r.status_code == 201, r.text
        group = r.json()["id"]
    assert world.search(outsider, f"Group?member={alice.id}") == []
    assert not world.sees(bob, f"Group/{group}")


def test_a_refused_cda_does_not_tell_a_feeder_the_ins_of_a_record_it_cannot_read(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    data = (FIXTURES / "cda-r2" / "BIO-TROD_2024.01_COVID-19.xml").read_bytes()
    body = {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": f"Patient/{alice.id}"},
            "content": [{"attachment": {"contentType": "text/xml", "data": base64.b64encode(data).decode()}}]}
    assert not world.sees(outsider, f"Patient/{alice.id}")
    with world.client(outsider) as c:
        r = c.post("DocumentReference", json=body)
    assert r.status_code == 422, r.text  # the header's INS is not the record's
    assert alice.matricule not in r.text, r.text


def test_two_criteria_chained_through_one_reference_reveal_nothing_of_a_hidden_target(world: World) -> None:
    # Observation.encounter holds one Encounter: its two chained criteria are answered by one search
    # of Encounters, which must leave out those the caller cannot read (here, of another record)
    alice, bob = world.patient("alice"), world.patient("bob")
    doctor = world.professional("doctor", "10")
    world.care_team(alice, doctor)
    encounter = world.fhir.post("Encounter", json={
        "resourceType": "Encounter", "status": "finished", "subject": {"reference": f"Patient/{bob.id}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}).json()["id"]
    observation = world.fhir.post("Observation", json=_observation(
        alice, encounter={"reference": f"Encounter/{encounter}"})).json()["id"]
    assert world.sees(doctor, f"Observation/{observation}")
    assert not world.sees(doctor, f"Encounter/{encounter}")
    right = world.search(doctor, "Observation?encounter:Encounter.status=finished&encounter:Encounter.class=AMB")
    wrong = world.search(doctor, "Observation?encounter:Encounter.status=planned&encounter:Encounter.class=AMB")
    assert right == wrong == []
    # the system client, which reads every record, finds it through the same two criteria
    found = world.fhir.get("Observation", params={"encounter:Encounter.status": "finished",
                                                  "encounter:Encounter.class": "AMB"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [observation]
