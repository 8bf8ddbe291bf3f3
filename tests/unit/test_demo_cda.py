"""The demo's CDA R2 documents, as built from the ANS examples (package data): their header names the
demo patient and the demo professional and passes the server's own checks; the body is the
template's. (Publication through the server: tests/functional/test_demo_cda.py.)"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import date, datetime
from html import escape
from typing import Any

import pytest
from lxml import etree

from carnet import demo_cda, demo_documents, demo_people
from carnet.directory import keys
from carnet.documents import cda, cda_html
from carnet.documents.cda_checks import check_against_metadata, check_header, metadata_from_header
from tests.conftest import FIXTURES

TODAY = date(2026, 6, 15)
WHEN = datetime(2025, 11, 3, 10, 42, tzinfo=demo_cda.PARIS)
# Who the examples are about and by: none of it may remain in the header of a demo document.
EXAMPLE_PEOPLE = ("PAT-TROIS", "DOMINIQUE", "279035121518989", "NESSI", "MEDIONI", "Belvédère", "DECOURCY",
                  "Ruth", "222127505611201", "MULLER", "ANDRE", "801234567897", "2801234567", "Breteuil")
SECTIONS = {demo_cda.ADULT_TEMPLATE: ["Pathologie en cours, antécédents, allergies et facteurs de risques",
                                      "Allergies et hypersensibilités", "Points de vigilance",
                                      "Traitement au long cours"],
            demo_cda.CHILD_TEMPLATE: ["Signes vitaux"]}


@pytest.fixture(scope="module")
def people() -> tuple[demo_people.DemoDirectory, list[demo_people.DemoIdentity], list[dict[str, Any]]]:
    directory = demo_people.directory(11)
    batches = list(demo_people.patient_bundles(11, 8, performers=directory.performers, today=TODAY))
    identities = [i for b in batches for i in b.identities]
    patients = [e["resource"] for b in batches for e in b.bundle["entry"]
                if e["resource"]["resourceType"] == "Patient"]
    return directory, identities, patients


def test_the_templates_are_package_data_copied_from_the_fixtures() -> None:
    for name in (demo_cda.ADULT_TEMPLATE, demo_cda.CHILD_TEMPLATE):
        shipped = (demo_cda.TEMPLATES / name).read_bytes()
        assert hashlib.sha256(shipped).digest() == hashlib.sha256((FIXTURES / "cda-r2" / name).read_bytes()).digest()
        assert name in (demo_cda.TEMPLATES / "PROVENANCE.md").read_text(encoding="utf-8")


def test_the_author_is_the_demo_medecin_traitant_and_his_practice(people: Any) -> None:
    from carnet.demo_access import roles

    directory, _, _ = people
    author = demo_cda.author_of(directory)
    assert author.reference == roles(directory)["10/L"]
    assert keys.parse_ps_idnat(author.idnat).kind is keys.IdNatKind.RPPS
    assert keys.parse_structure_idnat(author.organization_idnat).identifier
    assert (author.code, author.code_display) == ("G15_10/SM54", "Médecin - Médecine générale (SM)")
    assert author.organization_name == "Cabinet des Lilas"


@pytest.mark.parametrize("minor", [False, True], ids=["adult", "minor"])
def test_a_demo_cda_names_the_patient_passes_the_checks_and_keeps_the_template_body(people: Any,
                                                                                   minor: bool) -> None:
    directory, identities, patients = people
    k = next(n for n, i in enumerate(identities) if i.carries_ins and i.minor == minor)
    identity, patient = identities[k], patients[k]
    author = demo_cda.author_of(directory)
    record = demo_documents.Record("p1", "", identity, patient, patients[k - 1] if minor else None)
    body = demo_documents.cda_document(11, record, author, WHEN)
    xml = base64.b64decode(body["content"][0]["attachment"]["data"])
    assert body == demo_documents.cda_document(11, record, author, WHEN)  # deterministic, byte for byte

    header = cda.read_header(xml)
    assert check_header(header) == []
    # the server's comparison of the header with the metadata and the record: nothing disagrees
    assert check_against_metadata(header, body, patient=patient) == []
    t = identity.traits
    assert header.ins is not None and (header.ins.oid.oid, header.ins.value) == (identity.oid, identity.matricule)
    assert header.patient is not None and header.patient.name is not None
    assert header.patient.name.birth_family == t.birth_family_name
    assert header.patient.name.given == t.birth_given_names
    assert header.patient.birth_time is not None and header.patient.birth_time.to_date() == t.birth_date
    assert header.patient.fhir_gender == t.sex
    assert header.patient.birthplace is not None and header.patient.birthplace.insee_code == t.birthplace_code
    assert header.id is not None and header.id.root == str(uuid.uuid5(demo_documents.NAMESPACE, "11/p1/cda")).upper()
    assert header.effective_time is not None and header.effective_time.value == WHEN
    assert [a.ids[0].extension for a in header.authors] == [author.idnat]
    derived = metadata_from_header(header)
    assert derived["type"]["coding"][0]["code"] == ("29274-8" if minor else "SYNTH")
    assert derived["context"]["practiceSetting"]["coding"][0]["code"] == "AMBULATOIRE"
    assert derived["custodian"]["display"] == author.organization_name

    root = cda.parse(xml)
    head = b"".join(etree.tostring(el) for el in root if el.tag != f"{{{cda.HL7}}}component")
    for trace in EXAMPLE_PEOPLE:
        assert trace.encode() not in head, trace
    assert root.findall("h:informant", cda.NS) == []
    guardian = root.find("h:recordTarget/h:patientRole/h:patient/h:guardian", cda.NS)
    assert (guardian is not None) == minor
    template = demo_cda.CHILD_TEMPLATE if minor else demo_cda.ADULT_TEMPLATE
    original = cda.parse((demo_cda.TEMPLATES / template).read_bytes())
    [new_body], [old_body] = root.findall("h:component", cda.NS), original.findall("h:component", cda.NS)
    assert etree.tostring(new_body) == etree.tostring(old_body)

    html = cda_html.render(xml)
    assert escape(f"{' '.join(t.birth_given_names)} {t.birth_family_name}") in html
    assert author.family in html and author.organization_name in html
    for title in SECTIONS[template]:
        assert escape(title) in html
    for trace in ("PAT-TROIS", "DOMINIQUE", "DECOURCY", "MEDIONI", "MULLER"):
        assert trace not in html
