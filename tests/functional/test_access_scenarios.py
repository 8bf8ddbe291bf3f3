"""Who may see what (DICAH, SPEC C4), scenario by scenario, over real HTTP on both databases.

Each test builds a small world (tests/functional/dicah_world.py) as the operator, then reads as the
people in it with tokens the server issued. Hidden and absent must look the same: 404 on read,
missing from searches, counts, includes and history.
"""

from __future__ import annotations

import dataclasses
import os

import httpx
import pytest
from click.testing import CliRunner

from carnet.auth.principal import AccessMode
from carnet.cli.main import main
from carnet.policy.explain import explain
from carnet.policy.matrix import load_habilitations
from tests.conftest import Fhir
from tests.functional.dicah_world import LAB_REPORT, NORMAL, PRESCRIPTION, World

IMAGING = "18748-4"  # ASS_X04 class 31 "Imagerie médicale": not a nurse's nor a pharmacist's by default


@pytest.fixture
def world(fhir: Fhir) -> World:
    return World(fhir)


def test_a_care_team_member_reads_the_record_and_an_outsider_sees_nothing(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    outsider = world.professional("outsider", "10")
    world.care_team(alice, nurse)
    doc = world.document(alice, LAB_REPORT)
    assert world.sees(nurse, f"DocumentReference/{doc}")
    assert world.sees(nurse, f"Patient/{alice.id}")
    assert not world.sees(outsider, f"DocumentReference/{doc}")
    assert not world.sees(outsider, f"Patient/{alice.id}")
    assert world.search(outsider, f"DocumentReference?patient={alice.id}") == []
    assert world.search(outsider, "Patient") == []
    assert world.search(nurse, f"DocumentReference?patient={alice.id}") == [doc]


def test_hidden_answers_exactly_like_absent(world: World) -> None:
    alice = world.patient("alice")
    outsider = world.professional("outsider", "10")
    doc = world.document(alice)
    with world.client(outsider) as c:
        hidden = c.get(f"DocumentReference/{doc}")
        absent = c.get("DocumentReference/00000000-0000-4000-8000-000000000000")
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json()["issue"][0]["code"] == absent.json()["issue"][0]["code"]
        assert c.get(f"DocumentReference/{doc}/_history").status_code == 404
        assert c.get(f"DocumentReference/{doc}/_history/1").status_code == 404
        count = c.get("DocumentReference", params={"_summary": "count"}).json()
        assert count["total"] == 0
        total = c.get("DocumentReference", params={"_total": "accurate"}).json()
        assert total["total"] == 0 and not total.get("entry")
        history = c.get("DocumentReference/_history").json()
        assert not history.get("entry")
        binary = world.fhir.get(f"DocumentReference/{doc}").json()["content"][0]["attachment"]["url"]
        assert c.get("Binary/" + binary.rsplit("/", 1)[1]).status_code == 404


def test_an_explicit_authorisation_opens_the_record_and_a_block_always_closes_it(world: World) -> None:
    alice = world.patient("alice")
    doctor = world.professional("doctor", "10")
    doc = world.document(alice)
    assert not world.sees(doctor, f"DocumentReference/{doc}")
    world.authorise(alice, doctor)
    assert world.sees(doctor, f"DocumentReference/{doc}")
    world.care_team(alice, doctor)
    world.block(alice, doctor)  # blocked: refused, authorised and in the care team or not
    assert not world.sees(doctor, f"DocumentReference/{doc}")
    assert world.search(doctor, f"DocumentReference?patient={alice.id}") == []


def test_blocking_governs_reading_not_feeding(world: World) -> None:
    alice = world.patient("alice")
    blocked = world.professional("blocked", "10")
    world.block(alice, blocked)
    doc = world.document(alice, author=blocked)  # a blocked professional still publishes
    assert world.fhir.get(f"DocumentReference/{doc}").status_code == 200
    assert not world.sees(blocked, f"DocumentReference/{doc}")


def test_masked_documents_reach_only_the_treating_doctor_the_author_and_the_patient(world: World) -> None:
    alice = world.patient("alice")
    gp, nurse, specialist = (world.professional("gp", "10"), world.professional("nurse", "60"),
                             world.professional("specialist", "10"))
    world.treating(alice, gp)
    world.care_team(alice, nurse, specialist)
    masked = world.document(alice, labels=("MASQUE_PS",), author=specialist)
    plain = world.document(alice)
    assert world.sees(gp, f"DocumentReference/{masked}")
    assert world.sees(specialist, f"DocumentReference/{masked}")  # its author
    assert not world.sees(nurse, f"DocumentReference/{masked}")
    assert world.search(nurse, f"DocumentReference?patient={alice.id}") == [plain]
    assert world.sees(alice, f"DocumentReference/{masked}")


def test_the_patient_may_give_another_professional_the_treating_doctors_rights(world: World) -> None:
    alice = world.patient("alice")
    cardio = world.professional("cardio", "10")
    masked = world.document(alice, labels=("MASQUE_PS",))
    world.authorise(alice, cardio)
    assert not world.sees(cardio, f"DocumentReference/{masked}")
    world.authorise(alice, cardio, full=True)
    assert world.sees(cardio, f"DocumentReference/{masked}")


def test_the_access_matrix_limits_what_each_profession_reads(world: World) -> None:
    alice = world.patient("alice")
    pharmacist, nurse, physician = (world.professional("pharma", "21"), world.professional("nurse", "60"),
                                    world.professional("physician", "10"))
    world.care_team(alice, pharmacist, nurse, physician)
    lab = world.document(alice, LAB_REPORT)  # class 10: not a pharmacist's
    prescription = world.document(alice, PRESCRIPTION)  # class 42: everyone's
    imaging = world.document(alice, IMAGING)  # class 31: physicians (and dentists, midwives, physios)
    query = f"DocumentReference?patient={alice.id}"
    assert world.search(pharmacist, query) == [prescription]
    assert world.search(nurse, query) == sorted([lab, prescription])
    assert world.search(physician, query) == sorted([lab, prescription, imaging])
    binary = world.fhir.get(f"DocumentReference/{lab}").json()["content"][0]["attachment"]["url"]
    assert not world.sees(pharmacist, "Binary/" + binary.rsplit("/", 1)[1])
    assert world.sees(nurse, "Binary/" + binary.rsplit("/", 1)[1])


def test_an_unqualified_identity_keeps_professionals_out(world: World) -> None:
    bob = world.patient("bob", qualified=False)
    doctor = world.professional("doctor", "10")
    world.care_team(bob, doctor)
    doc = world.document(bob)
    assert not world.sees(doctor, f"DocumentReference/{doc}")
    assert world.sees(bob, f"DocumentReference/{doc}")  # the patient still reads their own


def test_a_closed_record_is_closed_to_professionals(world: World) -> None:
    alice = world.patient("alice")
    doctor = world.professional("doctor", "10")
    world.care_team(alice, doctor)
    doc = world.document(alice)
    assert world.sees(doctor, f"DocumentReference/{doc}")
    current = world.fhir.get(f"Patient/{alice.id}").json()
    current["active"] = False
    assert world.fhir.put(f"Patient/{alice.id}", json=current).status_code == 200
    assert not world.sees(doctor, f"DocumentReference/{doc}")


def test_a_weak_sign_on_reads_nothing(world: World) -> None:
    alice = world.patient("alice")
    weak = world.professional("weak", "10", strong=False)
    world.care_team(alice, weak)
    doc = world.document(alice)
    assert not world.sees(weak, f"DocumentReference/{doc}")


def test_patients_see_their_own_record_only_and_not_invisible_documents(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    visible = world.document(alice)
    invisible = world.document(alice, labels=("INVISIBLE_PATIENT",))
    theirs = world.document(bob)
    assert world.search(alice, "DocumentReference") == [visible]
    assert not world.sees(alice, f"DocumentReference/{invisible}")
    assert not world.sees(alice, f"DocumentReference/{theirs}")
    assert not world.sees(alice, f"Patient/{bob.id}")
    assert world.sees(alice, f"Patient/{alice.id}")


def test_a_parent_reads_the_childs_record_but_not_what_is_hidden_from_representatives(world: World) -> None:
    parent = world.patient("parent")
    child = world.minor("child", parent)
    shown = world.document(child)
    hidden = world.document(child, labels=("INVISIBLE_REPRESENTANTS_LEGAUX",))
    assert world.search(parent, f"DocumentReference?patient={child.id}") == [shown]
    assert not world.sees(parent, f"DocumentReference/{hidden}")
    assert world.sees(child, f"DocumentReference/{hidden}")  # the minor still reads it


def test_invisible_patient_is_set_at_publication_only_and_never_again_once_lifted(world: World) -> None:
    alice = world.patient("alice")
    plain = world.document(alice)
    patch = [{"op": "add", "path": "/securityLabel/-", "value": {"coding": [{
        "system": "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                  "TRE-A07-StatutVisibiliteDocument", "code": "INVISIBLE_PATIENT"}]}}]
    headers = {"Content-Type": "application/json-patch+json"}
    r = world.fhir.patch(f"DocumentReference/{plain}", json=patch, headers=headers)
    assert r.status_code == 422, r.text
    hidden = world.document(alice, labels=("INVISIBLE_PATIENT",))
    assert not world.sees(alice, f"DocumentReference/{hidden}")
    lift = [{"op": "replace", "path": "/securityLabel", "value": [NORMAL]}]
    r = world.fhir.patch(f"DocumentReference/{hidden}", json=lift, headers=headers)
    assert r.status_code == 200, r.text
    hidden = r.json()["id"]  # a metadata update is a new entry; the previous one is superseded
    assert world.sees(alice, f"DocumentReference/{hidden}")
    r = world.fhir.patch(f"DocumentReference/{hidden}", json=patch, headers=headers)
    assert r.status_code == 422 and "never" in r.text, r.text


def test_includes_and_revincludes_do_not_leak_hidden_resources(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    plain = world.document(alice)
    with world.client(nurse) as c:
        bundle = c.get("Patient", params={"_id": alice.id, "_revinclude": "DocumentReference:subject"}).json()
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert plain in ids and masked not in ids and alice.id in ids


def test_professionals_never_read_consents_and_cannot_write_them(world: World) -> None:
    alice = world.patient("alice")
    doctor = world.professional("doctor", "10")
    world.care_team(alice, doctor)
    world.block(alice, world.professional("other", "10"))
    assert world.search(doctor, f"Consent?patient={alice.id}") == []
    assert world.search(alice, f"Consent?patient={alice.id}") != []
    r = world.consent(alice, doctor, "permit", full=True, by=doctor)
    assert r.status_code == 403, r.text


def test_a_patient_manages_their_own_consents_but_not_someone_elses(world: World) -> None:
    alice, bob = world.patient("alice"), world.patient("bob")
    doctor = world.professional("doctor", "10")
    doc = world.document(alice)
    r = world.consent(alice, doctor, "permit", by=alice)
    assert r.status_code == 201, r.text
    assert world.sees(doctor, f"DocumentReference/{doc}")
    r = world.consent(bob, doctor, "permit", by=alice)
    assert r.status_code == 403, r.text


def test_a_patient_uploads_only_documents_of_class_90(world: World) -> None:
    alice = world.patient("alice")
    mine = world.document(alice, "74465-6", class_code="90", by=alice)
    assert world.sees(alice, f"DocumentReference/{mine}")
    with world.client(alice) as c:
        r = c.post("DocumentReference", json={**world.fhir.get(f"DocumentReference/{mine}").json(),
                                              "id": None})
    assert r.status_code in (400, 403, 409, 422), r.text


def test_break_glass_opens_one_record_with_a_reason_unless_the_patient_opposed(world: World) -> None:
    alice, carol = world.patient("alice"), world.patient("carol")
    er = world.professional("er", "10")
    doc = world.document(alice)
    assert not world.sees(er, f"DocumentReference/{doc}")
    with world.client(er) as c:
        r = c.post(f"Patient/{alice.id}/$break-glass", json={"resourceType": "Parameters", "parameter": []})
        assert r.status_code in (400, 422), r.text  # the reason is mandatory
        r = c.post(f"Patient/{alice.id}/$break-glass", json={"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "Patiente inconsciente aux urgences"}]})
        assert r.status_code == 200, r.text
        token = next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "access_token")
    with world.fhir.__class__(base_url=world.fhir.base + "/", headers={
            "Authorization": f"Bearer {token}"}) as emergency:
        assert emergency.get(f"DocumentReference/{doc}").status_code == 200
        assert emergency.get(f"Patient/{carol.id}").status_code == 404  # that one record only
    world.oppose_emergency(carol)
    with world.client(er) as c:
        r = c.post(f"Patient/{carol.id}/$break-glass", json={"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "Détresse respiratoire"}]})
        assert r.status_code == 403, r.text


def test_an_emergency_token_forged_for_an_opposed_record_reads_nothing(world: World) -> None:
    alice = world.patient("alice")
    er = world.professional("er", "10")
    doc = world.document(alice)
    assert world.search(er, f"DocumentReference?patient={alice.id}", mode=AccessMode.EMERGENCY,
                        patient=alice.id, reason="test") == [doc]
    world.oppose_emergency(alice)
    assert world.search(er, f"DocumentReference?patient={alice.id}", mode=AccessMode.EMERGENCY,
                        patient=alice.id, reason="test") == []


def test_explain_gives_each_reason_and_agrees_with_what_is_enforced(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = world.patient("alice")
    gp, nurse, blocked, outsider = (world.professional("gp", "10"), world.professional("nurse", "60"),
                                    world.professional("blocked", "10"), world.professional("outsider", "10"))
    world.treating(alice, gp)
    world.care_team(alice, nurse, blocked)
    world.block(alice, blocked)
    masked = world.document(alice, labels=("MASQUE_PS",))
    imaging = world.document(alice, IMAGING)
    habilitations = load_habilitations(None)
    with world.fhir.backend.engine.connect() as conn:
        for who in (gp, nurse, blocked, outsider, alice):
            for doc in (masked, imaging):
                result = explain(conn, habilitations, world.principal(who), alice.id, doc)
                assert result.allowed == world.sees(who, f"DocumentReference/{doc}"), result.lines()
        nurse_view = explain(conn, habilitations, world.principal(nurse), alice.id, imaging)
    assert [s.condition for s in nurse_view.steps if not s.ok] == ["H"]
    assert "équipe de soins" in next(s.reason for s in nurse_view.steps if s.condition == "C")

    for name in [k for k in os.environ if k.startswith("CARNET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CARNET_DATA_DIR", str(world.fhir.backend.settings.data_dir))
    monkeypatch.setenv("CARNET_DATABASE_URL", world.fhir.backend.url)
    r = CliRunner().invoke(main, ["policy", "explain", "--who", f"practitioner:{blocked.national_id}",
                                  "--patient", alice.matricule, "--document", imaging])
    assert r.exit_code == 1, r.output
    assert "REFUSÉ / DENIED" in r.output and "Bloqué par le patient" in r.output


def test_a_token_reads_only_the_types_its_scopes_name(world: World) -> None:
    alice = world.patient("alice")
    doc = world.document(alice)
    narrow = world.principal(alice)
    for scopes, sees_doc, sees_patient in (({"patient/DocumentReference.rs"}, True, False),
                                          ({"patient/Observation.rs", "patient/Patient.r"}, False, True),
                                          ({"patient/*.cud"}, False, False)):
        token = world.issuer.issue(dataclasses.replace(narrow, scopes=frozenset(scopes)))
        with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {token}"}) as c:
            assert (c.get(f"DocumentReference/{doc}").status_code == 200) is sees_doc, scopes
            assert (c.get(f"Patient/{alice.id}").status_code == 200) is sees_patient, scopes
            history = c.get("_history").json()
            types = {e["resource"]["resourceType"] for e in history.get("entry", []) if e.get("resource")}
            assert types <= {t.split("/")[1].split(".")[0] for t in scopes if "r" in t.split(".")[1]}, scopes


def test_a_binary_of_no_record_is_read_only_by_whoever_wrote_it(world: World) -> None:
    writer, other = world.professional("writer", "10"), world.professional("other", "10")
    alice = world.patient("alice")
    with world.client(writer) as c:
        r = c.post("Binary", json={"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert c.get(f"Binary/{rid}").status_code == 200
    assert not world.sees(other, f"Binary/{rid}")
    assert not world.sees(alice, f"Binary/{rid}")
    assert world.fhir.get(f"Binary/{rid}").status_code == 200


def test_a_patient_designates_the_treating_doctor_but_does_not_edit_the_identity(world: World) -> None:
    alice = world.patient("alice")
    gp = world.professional("gp", "10")
    masked = world.document(alice, labels=("MASQUE_PS",))
    with world.client(alice) as c:
        mine = c.get(f"Patient/{alice.id}").json()
        mine["generalPractitioner"] = [{"reference": gp.ref}]
        r = c.put(f"Patient/{alice.id}", json=mine)
        assert r.status_code == 200, r.text
        assert world.sees(gp, f"DocumentReference/{masked}")
        again = r.json()
        again["birthDate"] = "1990-01-01"
        r = c.put(f"Patient/{alice.id}", json=again)
        assert r.status_code == 403 and "birthDate" in r.text, r.text


def test_a_patient_masks_and_unmasks_a_document_from_professionals(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    doc = world.document(alice)
    masq = {"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                                  "TRE-A07-StatutVisibiliteDocument", "code": "MASQUE_PS"}]}
    headers = {"Content-Type": "application/json-patch+json"}
    with world.client(alice) as c:
        r = c.patch(f"DocumentReference/{doc}", headers=headers,
                    json=[{"op": "replace", "path": "/securityLabel", "value": [NORMAL, masq]}])
        assert r.status_code == 200, r.text
        masked = r.json()["id"]
        assert not world.sees(nurse, f"DocumentReference/{masked}")
        assert world.search(nurse, f"DocumentReference?patient={alice.id}&status=current") == []
        r = c.patch(f"DocumentReference/{masked}", headers=headers,
                    json=[{"op": "replace", "path": "/securityLabel", "value": [NORMAL]}])
        assert r.status_code == 200, r.text
        assert world.sees(nurse, f"DocumentReference/{r.json()['id']}")
        invisible = dict(masq, coding=[dict(masq["coding"][0], code="INVISIBLE_REPRESENTANTS_LEGAUX")])
        r = c.patch(f"DocumentReference/{r.json()['id']}", headers=headers,
                    json=[{"op": "replace", "path": "/securityLabel", "value": [NORMAL, invisible]}])
        assert r.status_code == 403, r.text


def test_the_patient_and_a_representative_list_who_can_access_and_why(world: World) -> None:
    parent = world.patient("parent")
    child = world.minor("child", parent)
    gp, nurse, blocked = (world.professional("gp", "10"), world.professional("nurse", "60"),
                          world.professional("blocked", "10"))
    world.treating(child, gp)
    world.care_team(child, nurse)
    world.block(child, blocked)
    for who in (child, parent):
        with world.client(who) as c:
            r = c.get(f"Patient/{child.id}/$access")
        assert r.status_code == 200, r.text
        actors = {next(p["valueReference"]["reference"] for p in a["part"] if p["name"] == "who"):
                  next(p["valueCode"] for p in a["part"] if p["name"] == "rights")
                  for a in r.json()["parameter"] if a["name"] == "actor"}
        assert actors == {gp.ref: "full", nurse.ref: "read", blocked.ref: "blocked",
                          parent.ref: "representative"}
    with world.client(gp) as c:  # a professional, even the médecin traitant: as if absent
        assert c.get(f"Patient/{child.id}/$access").status_code == 404


def test_regulation_access_is_for_a_centre_15_regulating_doctor(world: World) -> None:
    alice = world.patient("alice")
    regulator, plain = world.professional("samu", "10"), world.professional("plain", "10")
    doc = world.document(alice)
    body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Appel au 15"}]}
    with world.client(plain) as c:
        assert c.post(f"Patient/{alice.id}/$regulation-access", json=body).status_code == 403
    token = world.issuer.issue(dataclasses.replace(world.principal(regulator), roles=frozenset({"centre15"})))
    with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post(f"Patient/{alice.id}/$regulation-access", json=body)
        assert r.status_code == 200, r.text
        bound = next(p["valueString"] for p in r.json()["parameter"] if p["name"] == "access_token")
    with httpx.Client(base_url=world.fhir.base + "/", headers={"Authorization": f"Bearer {bound}"}) as c:
        assert c.get(f"DocumentReference/{doc}").status_code == 200
        assert c.post("Observation", json={"resourceType": "Observation", "status": "final", "code": {
            "text": "x"}, "subject": {"reference": f"Patient/{alice.id}"}}).status_code == 403  # read only


def test_a_submission_set_does_not_show_the_masked_documents_it_published(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    world.care_team(alice, nurse)
    masked = world.document(alice, labels=("MASQUE_PS",))
    plain = world.document(alice)

    def items(bundle: dict[str, object]) -> set[str]:
        out = set()
        for e in bundle.get("entry", []):  # type: ignore[union-attr]
            for item in e["resource"].get("entry", []):
                out.add(item["item"]["reference"].split("/")[-1])
        return out

    query = f"List?patient={alice.id}&code=https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"
    every = world.fhir.get(query).json()
    assert {masked, plain} <= items(every)
    with world.client(nurse) as c:
        seen = c.get(query).json()
        assert plain in items(seen) and masked not in items(seen)
        for e in seen["entry"]:
            one = c.get(f"List/{e['resource']['id']}").json()
            assert masked not in items({"entry": [{"resource": one}]})
