"""``carnet demo``'s French data, loaded through the FHIR engine and read back over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from carnet import demo
from carnet.directory import fhir as directory_fhir
from carnet.directory import keys
from carnet.identity import nir
from carnet.identity.insi import InsiFound, LocalInsi
from tests.conftest import Fhir

DEMO_SYSTEM = "urn:oid:" + nir.OID_INS_NIR_DEMO


def identity_status(patient: dict[str, Any]) -> str:
    [ext] = [e for e in patient["extension"] if e["url"].endswith("fr-core-identity-reliability")]
    return str(next(p["valueCoding"]["code"] for p in ext["extension"] if p["url"] == "identityStatus"))


def test_demo_patients_are_found_by_their_ins_and_verify_with_the_local_insi(fhir: Fhir, tmp_path: Path) -> None:
    settings = fhir.backend.settings.model_copy(update={"data_dir": tmp_path})
    summary = demo.load(settings, fhir.backend.engine, patients=8, seed=11)
    assert summary.counts["Patient"] == 8 and summary.counts["Observation"] == 8 * 19
    assert summary.counts["RelatedPerson"] == 2
    assert summary.insi_file == tmp_path / "insi" / "identities.json"
    insi = LocalInsi(summary.insi_file)
    for identity in summary.identities:
        assert isinstance(insi.verify(identity.matricule, identity.oid, identity.traits), InsiFound)
        found = fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + identity.matricule)}")
        assert len(found) == (1 if identity.carries_ins else 0)
        if found:  # the status was earned through $ins-verify and $identity-check, not declared
            stored = fhir.get(f"Patient/{found[0]}").json()
            assert identity_status(stored) == identity.status.value
            history = fhir.get(f"Patient/{found[0]}/$identity-history").json()
            steps = [p for p in history["parameter"] if p["name"] == "transition"]
            assert len(steps) == {"QUAL": 2, "RECUP": 1, "VALI": 1}[identity.status.value]
    minors = [i for i in summary.identities if i.minor]
    for minor in minors:
        [child] = fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + minor.matricule)}")
        r = fhir.get(f"RelatedPerson?patient=Patient/{child}")
        assert r.status_code == 200 and r.json()["total"] == 1
        parent_ins = r.json()["entry"][0]["resource"]["identifier"][0]["value"]
        assert len(fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + parent_ins)}")) == 1


def test_demo_directory_lists_every_profession_and_loads_idempotently(fhir: Fhir, tmp_path: Path) -> None:
    settings = fhir.backend.settings.model_copy(update={"data_dir": tmp_path})
    first = demo.load(settings, fhir.backend.engine, patients=1, seed=5)
    system = directory_fhir.profession_system()
    for code in keys.professions():
        r = fhir.get(f"PractitionerRole?role={quote(system + '|' + code)}&_include=PractitionerRole:practitioner")
        assert r.status_code == 200, r.text
        kinds = [e["resource"]["resourceType"] for e in r.json()["entry"]]
        assert kinds.count("PractitionerRole") == 2 and kinds.count("Practitioner") == 2, code
    directory = demo_directory_rpps(seed=5)
    for rpps in directory:
        idnat = quote(directory_fhir.PS_IDNAT_SYSTEM + "|8" + rpps)
        assert len(fhir.search_ids(f"Practitioner?identifier={idnat}")) == 1
    second = demo.load(settings, fhir.backend.engine, patients=1, seed=5)
    for rtype in ("Practitioner", "PractitionerRole", "Organization"):
        assert second.counts[rtype] == first.counts[rtype]
    assert second.counts["Patient"] == 2


def demo_directory_rpps(seed: int) -> list[str]:
    from carnet import demo_people

    return [n for numbers in demo_people.directory(seed).rpps.values() for n in numbers]


def test_demo_records_hold_pdf_documents(fhir: Fhir, tmp_path: Path) -> None:
    from tests.conftest import LiveServer

    settings = fhir.backend.settings.model_copy(update={"data_dir": tmp_path})
    summary = demo.load(settings, fhir.backend.engine, patients=6, seed=3)
    with_ins = [i for i in summary.identities if i.carries_ins]
    # three PDF documents and one CDA document per record (the CDA: test_demo_cda.py)
    assert summary.counts["DocumentReference"] == 4 * len(with_ins) > 0
    server = LiveServer(settings)  # the demo's data folder holds the keys and the content
    try:
        identity = with_ins[0]
        [pid] = fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + identity.matricule)}")
        docs = fhir.get(f"DocumentReference?patient=Patient/{pid}&_sort=-date").json()["entry"]
        assert len(docs) == 4
        kinds = [e["resource"]["content"][0]["attachment"]["contentType"] for e in docs]
        # an adult's synthèse médicale predates their PDFs: the newest document is a PDF
        assert kinds == ["application/pdf"] * 3 + ["application/hl7-v3+xml"]
        for entry in docs[:3]:
            doc = entry["resource"]
            assert doc["status"] == "current" and doc["author"][0]["reference"].startswith("Practitioner/")
            att = doc["content"][0]["attachment"]
            url = server.url + "/fhir/Binary/" + att["url"].rsplit("/Binary/", 1)[1]
            pdf = httpx.get(url, timeout=30)
            assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
            assert pdf.content.startswith(b"%PDF-1.4") and pdf.content.rstrip().endswith(b"%%EOF")
            assert len(pdf.content) == att["size"]
    finally:
        server.stop()


def test_demo_records_carry_access_rules_the_professionals_see_at_work(fhir: Fhir, tmp_path: Path) -> None:
    from carnet import demo_access, demo_people
    from carnet.auth import people
    from carnet.wiring import build_router

    settings = fhir.backend.settings.model_copy(update={"data_dir": tmp_path})
    summary = demo.load(settings, fhir.backend.engine, patients=8, seed=11)
    who = demo_access.roles(demo_people.directory(11))
    router = build_router(fhir.backend.settings, fhir.backend.engine)
    issuer = fhir.live.app.state.issuer

    def documents(ref: str, query: str = "DocumentReference?_count=200") -> set[str]:
        rid = ref.split("/")[1]
        idnat = next(i["value"] for i in fhir.get(ref).json()["identifier"] if i["value"].startswith("8"))
        principal = people.practitioner_principal(router, idnat)
        assert principal.fhir_user == ref
        r = fhir.get(query, headers={"Authorization": f"Bearer {issuer.issue(principal)}"})
        assert r.status_code == 200, r.text
        return {e["resource"]["id"] for e in r.json().get("entry", [])} - {rid}

    everything = {e["resource"]["id"] for e in fhir.get("DocumentReference?_count=200").json()["entry"]}
    adults = [i for i in summary.identities if i.carries_ins and not i.minor]
    [first] = fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + adults[0].matricule)}")
    firsts = set(fhir.search_ids(f"DocumentReference?patient={first}&_count=200"))
    treating, blocked, nurse, pharmacist = (documents(who[k]) for k in ("10/L", "10/S", "60/L", "21/L"))
    qualified = set()
    for identity in summary.identities:
        if identity.status.value == "QUAL":
            [pid] = fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + identity.matricule)}")
            qualified |= set(fhir.search_ids(f"DocumentReference?patient={pid}&_count=200"))
    assert firsts and firsts <= qualified <= everything
    assert blocked == qualified - firsts  # in every care team, blocked by the first patient
    assert firsts <= treating <= qualified  # médecin traitant of the adults
    assert nurse and pharmacist and pharmacist < nurse <= qualified  # the access matrix at work
