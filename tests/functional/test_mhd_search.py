"""IHE MHD queries: every search parameter of ITI-67 (Find Document References) and ITI-66 (Find
Document Lists), on IHE's own examples whose values are varied so that each parameter has matches and
non-matches; the answers are known and compared as exact sets of ids.

The documents and lists are written with the store (``Repository.create``), not through the HTTP
API: publication (ITI-65, ITI-105) has its own rules, which this file does not test. The searches go
over real HTTP.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import pytest

from carnet.auth.principal import Principal
from carnet.fhir.indexer import index_rows
from carnet.fhir.store import Repository
from tests.conftest import FIXTURES, Backend, Fhir

MHD = FIXTURES / "ihe-mhd"
IPP = "urn:oid:1.2.250.1.999.1.1"  # a hospital's local patient numbers
OTHER_IPP = "urn:oid:1.2.250.1.999.1.2"  # another hospital's, whose numbers overlap
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
FORMAT = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
EXT = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
RELATED_OID = "urn:oid:1.2.840.113556.1.8000.2554.17917.46600.21181.17878.33419.62048.57128.2759"
COMP_MASTER_ID = "urn:oid:1.2.840.113556.1.8000.2554.58783.21864.3474.19410.44358.58254.41281.46340"
EMAIL_LIST_ID = "urn:uuid:1d136ed2-d27b-4353-8ccf-49581ab4ae66"

COMP = "ex-DocumentReferenceComprehensive"
BIN = "ex-DocumentReferenceComprehensiveWithBinary"
MIN = "ex-DocumentReferenceMinimal"
SIMPLE = "ex-DocumentReferenceSimplifiedPublish"
DOC2 = "ex-documentreference2"
EMAIL = "ex-compEmailPackage"
SSFULL = "ex-compSubmissionSetFull"
FOLDER = "ex-compFolder"
MINFOLDER = "ex-minimalFolder"


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MHD / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _people() -> list[dict[str, Any]]:
    moehrke = _example("Practitioner-ex-practitioner")
    moehrke["id"] = "dr-moehrke"
    moehrke["name"] = [{"family": "Moehrke", "given": ["John"]}]
    return [
        {"resourceType": "Patient", "id": "pat1", "identifier": [{"system": IPP, "value": "IPP-1"}],
         "name": [{"family": "Dupont", "given": ["Marie"]}]},
        {"resourceType": "Patient", "id": "pat2", "identifier": [{"system": IPP, "value": "IPP-2"}],
         "name": [{"family": "Durand", "given": ["Paul"]}]},
        {"resourceType": "Patient", "id": "pat3", "identifier": [{"system": OTHER_IPP, "value": "IPP-1"}],
         "name": [{"family": "Petit", "given": ["Lucie"]}]},
        moehrke,
        {"resourceType": "Practitioner", "id": "dr-martin", "name": [{"family": "Martin", "given": ["Claire"]}]},
        {"resourceType": "PractitionerRole", "id": "role-martin",
         "practitioner": {"reference": "Practitioner/dr-martin"},
         "code": [_coding("https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante",
                          "10")]},
    ]


def _documents() -> list[dict[str, Any]]:
    # COMP, as published: LOINC 55107-7, class 11369-6, N, xds-sd text format, facility and setting,
    # event ACCTRECEIVABLE, a related identifier, created 2020-12-31T23:50:50-05:00 (2021-01-01 UTC);
    # its author is contained (#in-author): a Practitioner, named here.
    comp = _example(f"DocumentReference-{COMP}")
    comp["subject"] = {"reference": "Patient/pat1"}
    author = next(c for c in comp["contained"] if c["id"] == "in-author")
    author["name"] = [{"family": "Moehrke", "given": ["John"]}]

    # BIN, as published (60591-5, R, created 2020-02-01T23:50:50-05:00), written by a Practitioner.
    binary = _example(f"DocumentReference-{BIN}")
    binary["subject"] = {"reference": "Patient/pat1"}
    binary["author"] = [{"reference": "Practitioner/dr-martin"}]

    # MIN: every ITI-67 value differs from the comprehensive ones.
    minimal = _example(f"DocumentReference-{MIN}")
    minimal.update({
        "status": "superseded",
        "subject": {"reference": "Patient/pat2"},
        "author": [{"reference": "PractitionerRole/role-martin"}],
        "type": _coding(LOINC, "34133-9"),
        "category": [_coding(LOINC, "18842-5")],
        "date": "2023-06-15T10:00:00Z",
        "securityLabel": [_coding(CONF, "V")],
        "context": {
            "period": {"start": "2023-06-01", "end": "2023-06-30"},
            "facilityType": _coding(SCT, "22232009"),
            "practiceSetting": _coding(SCT, "394802001"),
            "event": [_coding(ACT, "IMP")],
            "related": [{"reference": "Encounter/enc-1"}],
        },
    })
    minimal["content"][0]["attachment"]["creation"] = "2023-06-14T09:00:00Z"
    minimal["content"][0]["format"] = {"system": FORMAT, "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}

    # SIMPLE: written by the patient, related to COMP.
    simple = _example(f"DocumentReference-{SIMPLE}")
    simple["subject"] = {"reference": "Patient/pat2"}
    simple["author"] = [{"reference": "Patient/pat2"}]
    simple["date"] = "2024-01-10T07:00:00Z"
    simple["content"][0]["attachment"]["creation"] = "2024-01-09"
    simple["context"]["related"] = [{"reference": f"DocumentReference/{COMP}"}]

    # DOC2: almost nothing, about a patient of another hospital with an overlapping number.
    doc2 = _example(f"DocumentReference-{DOC2}")
    doc2["subject"] = {"reference": "Patient/pat3"}
    return [comp, binary, minimal, simple, doc2]


def _lists() -> list[dict[str, Any]]:
    # EMAIL, as published (submissionset, designationType 225728007, sourceId urn:oid:1.2.3.4,
    # 2004-12-25T23:50:50-05:00), its source a Practitioner of the server.
    email = _example(f"List-{EMAIL}")
    email["subject"] = {"reference": "Patient/pat1"}
    email["source"] = {"reference": "Practitioner/dr-moehrke"}

    # SSFULL: its source is contained (#in-sender), named here; other sourceId, designation, date.
    ssfull = _example(f"List-{SSFULL}")
    ssfull["subject"] = {"reference": "Patient/pat2"}
    ssfull["date"] = "2010-05-03T10:00:00Z"
    for ext in ssfull["extension"]:
        if ext["url"] == EXT + "ihe-sourceId":
            ext["valueIdentifier"] = {"value": "urn:oid:1.2.3.5"}
        elif ext["url"] == EXT + "ihe-designationType":
            ext["valueCodeableConcept"] = _coding(SCT, "371531000")
    sender = next(c for c in ssfull["contained"] if c["id"] == "in-sender")
    sender["name"] = [{"family": "Lefèvre", "given": ["Émilie"]}]

    # FOLDER, as published (two designation types, no sourceId).
    folder = _example(f"List-{FOLDER}")
    folder["subject"] = {"reference": "Patient/pat1"}

    # MINFOLDER: no subject, retired.
    minfolder = _example(f"List-{MINFOLDER}")
    minfolder["status"] = "retired"
    return [email, ssfull, folder, minfolder]


def _write(backend: Backend, resources: Iterable[dict[str, Any]]) -> None:
    with backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        repo = Repository(conn, Principal.system(), validator=None)
        for resource in resources:
            repo.create(copy.deepcopy(resource), rid=resource["id"])


@pytest.fixture
def mhd(fhir: Fhir) -> Fhir:
    _write(fhir.backend, _people() + _documents() + _lists())
    return fhir


def ids(fhir: Fhir, query: str) -> set[str]:
    return set(fhir.search_ids(query + ("&" if "?" in query else "?") + "_count=100"))


ALL_DOCS = {COMP, BIN, MIN, SIMPLE, DOC2}

ITI_67 = [
    # patient, subject, patient.identifier (a chain through the subject reference)
    ("patient=Patient/pat1", {COMP, BIN}),
    ("patient=pat2", {MIN, SIMPLE}),
    ("subject=Patient/pat3", {DOC2}),
    (f"patient.identifier={IPP}|IPP-1", {COMP, BIN}),
    (f"patient.identifier={IPP}|IPP-2", {MIN, SIMPLE}),
    (f"patient.identifier={OTHER_IPP}|IPP-1", {DOC2}),
    ("patient.identifier=IPP-1", {COMP, BIN, DOC2}),
    (f"patient.identifier={IPP}|IPP-9", set()),
    (f"patient:Patient.identifier={IPP}|IPP-1", {COMP, BIN}),
    # author.given / author.family: a chain over every target type having the parameter; a
    # contained author is searched too; a PractitionerRole has no name of its own
    ("author.given=john", {COMP}),
    ("author.family=moehrke", {COMP}),
    ("author.family=martin", {BIN}),
    ("author.given=claire", {BIN}),
    ("author.given=paul", {SIMPLE}),
    ("author.family=martin,moehrke", {COMP, BIN}),
    ("author.family:exact=Moehrke", {COMP}),
    ("author.family:exact=moehrke", set()),
    ("author.family=nobody", set()),
    ("author:Practitioner.family=martin", {BIN}),
    ("author:Practitioner.given=paul", set()),
    ("author:Patient.given=paul", {SIMPLE}),
    ("author=PractitionerRole/role-martin", {MIN}),
    ("author:PractitionerRole.practitioner=Practitioner/dr-martin", {MIN}),
    # status
    ("status=current", {COMP, BIN, SIMPLE, DOC2}),
    ("status=superseded", {MIN}),
    ("status:not=current", {MIN}),
    ("status=superseded,entered-in-error", {MIN}),
    # type, category
    (f"type={LOINC}|55107-7", {COMP}),
    ("type=60591-5", {BIN}),
    (f"type={SCT}|55107-7", set()),
    (f"category={LOINC}|11369-6", {COMP, BIN}),
    ("category=18842-5", {MIN}),
    # date (an instant) with prefixes; searched dates without a zone are UTC:
    # COMP 2021-01-01T04:50:50Z, BIN 2020-02-02T04:50:50Z, MIN 2023-06-15T10:00Z, SIMPLE 2024-01-10T07:00Z
    ("date=ge2021-01-01", {COMP, MIN, SIMPLE}),
    ("date=lt2021", {BIN}),
    ("date=2020-02", {BIN}),
    ("date=2021-01-01", {COMP}),
    ("date=gt2023-06-15T09:00:00Z&date=lt2024", {MIN}),
    ("date=le2024-01-10T07:00:00Z", {COMP, BIN, MIN, SIMPLE}),
    ("date=lt2024-01-10T07:00:00Z", {COMP, BIN, MIN}),
    ("date=sa2023-06-15T10:00:00Z", {SIMPLE}),
    ("date=eb2020-12-31", {BIN}),
    ("date=ne2023-06-15T10:00:00Z", {COMP, BIN, SIMPLE}),
    # period
    ("period=2023-06", {MIN}),
    ("period=ge2023-06-15", {MIN}),
    ("period=lt2022", {COMP}),
    ("period=2021-01-01", {COMP}),
    # setting, facility, event
    (f"setting={SCT}|408467006", {COMP, BIN}),
    ("setting=394802001", {MIN}),
    (f"facility={SCT}|82242000", {COMP, BIN}),
    ("facility=22232009", {MIN}),
    (f"event={ACT}|ACCTRECEIVABLE", {COMP}),
    (f"event={ACT}|IMP", {MIN}),
    (f"event={SCT}|IMP", set()),
    # security-label
    (f"security-label={CONF}|N", {COMP}),
    ("security-label=R", {BIN}),
    ("security-label=N,R", {COMP, BIN}),
    (f"security-label={CONF}|V", {MIN}),
    # format
    (f"format={FORMAT}|urn:ihe:iti:xds-sd:text:2008", {COMP, BIN}),
    ("format=urn:ihe:iti:xds:2017:mimeTypeSufficient", {MIN}),
    # related (DocumentReference.context.related): a reference, an identifier
    ("related=Encounter/enc-1", {MIN}),
    ("related:Encounter=enc-1", {MIN}),
    (f"related=DocumentReference/{COMP}", {SIMPLE}),
    (f"related:identifier=urn:ietf:rfc:3986|{RELATED_OID}", {COMP}),
    ("related:identifier=urn:ietf:rfc:3986|urn:oid:1.2.3", set()),
    # creation (DocumentReference.content.attachment.creation), IHE's parameter, with ge / le:
    # COMP 2021-01-01T04:50:50Z, BIN 2020-02-02T04:50:50Z, MIN 2023-06-14T09:00Z, SIMPLE 2024-01-09
    ("creation=ge2020-06-01", {COMP, MIN, SIMPLE}),
    ("creation=le2020-06-01", {BIN}),
    ("creation=ge2020-01-01&creation=le2021-01-01", {COMP, BIN}),
    ("creation=ge2023-06-14&creation=le2023-06-14", {MIN}),
    ("creation=2024-01-09", {SIMPLE}),
    ("creation=gt2024-01-09", set()),
    ("creation:missing=true", {DOC2}),
    # identifier (masterIdentifier or identifier)
    (f"identifier=urn:ietf:rfc:3986|{COMP_MASTER_ID}", {COMP}),
    # queries as an MHD Document Consumer sends them
    (f"patient.identifier={IPP}|IPP-1&status=current&type={LOINC}|55107-7&creation=ge2020-12-01", {COMP}),
    (f"patient.identifier={IPP}|IPP-1&status=current&category={LOINC}|11369-6&date=lt2021", {BIN}),
    ("patient=pat2&status=current,superseded&author.family=martin", set()),
    ("patient=pat1&author.given=john&security-label=N&format=urn:ihe:iti:xds-sd:text:2008", {COMP}),
]

ITI_66 = [
    # code (SubmissionSet or Folder)
    (f"code={LIST_TYPES}|submissionset", {EMAIL, SSFULL}),
    ("code=folder", {FOLDER, MINFOLDER}),
    # date: EMAIL and FOLDER 2004-12-26T04:50:50Z, SSFULL 2010-05-03T10:00Z
    ("date=lt2005", {EMAIL, FOLDER}),
    ("date=ge2005", {SSFULL}),
    ("date=2004-12-26", {EMAIL, FOLDER}),
    # designationType, IHE's parameter (extension ihe-designationType)
    (f"designationType={SCT}|225728007", {EMAIL, FOLDER}),
    ("designationType=284548004", {FOLDER}),
    ("designationType=371531000", {SSFULL}),
    (f"designationType={LOINC}|225728007", set()),
    # identifier
    (f"identifier=urn:ietf:rfc:3986|{EMAIL_LIST_ID}", {EMAIL}),
    # patient, patient.identifier, subject
    ("patient=Patient/pat1", {EMAIL, FOLDER}),
    ("patient=pat2", {SSFULL}),
    (f"patient.identifier={IPP}|IPP-1", {EMAIL, FOLDER}),
    (f"patient.identifier={IPP}|IPP-2", {SSFULL}),
    (f"patient.identifier={OTHER_IPP}|IPP-1", set()),
    ("subject=Patient/pat2", {SSFULL}),
    # source.given / source.family: a Practitioner of the server, a contained one
    ("source.given=john", {EMAIL}),
    ("source.family=moehrke", {EMAIL}),
    ("source.family=lefevre", {SSFULL}),
    ("source.given=emilie", {SSFULL}),
    ("source.family=martin", set()),
    # sourceId, IHE's parameter (extension ihe-sourceId, an Identifier without a system)
    ("sourceId=urn:oid:1.2.3.4", {EMAIL}),
    ("sourceId=urn:oid:1.2.3.5", {SSFULL}),
    ("sourceId=|urn:oid:1.2.3.4", {EMAIL}),
    ("sourceId=urn:oid:1.2.3", set()),
    # status
    ("status=current", {EMAIL, SSFULL, FOLDER}),
    ("status=retired", {MINFOLDER}),
    # queries as an MHD Document Consumer sends them
    (f"patient.identifier={IPP}|IPP-1&code={LIST_TYPES}|submissionset&status=current", {EMAIL}),
    (f"patient=pat1&code=folder&designationType={SCT}|284548004", {FOLDER}),
    ("code=submissionset&sourceId=urn:oid:1.2.3.5&source.family=lefevre&date=ge2010", {SSFULL}),
]


@pytest.mark.parametrize(("query", "expected"), ITI_67, ids=[c[0] for c in ITI_67])
def test_iti67_find_document_references(mhd: Fhir, query: str, expected: set[str]) -> None:
    assert ids(mhd, f"DocumentReference?{query}") == expected


@pytest.mark.parametrize(("query", "expected"), ITI_66, ids=[c[0] for c in ITI_66])
def test_iti66_find_document_lists(mhd: Fhir, query: str, expected: set[str]) -> None:
    assert ids(mhd, f"List?{query}") == expected


def test_every_document_and_list_is_there(mhd: Fhir) -> None:
    """The sets above are subsets of these: a parameter that were ignored would answer all."""
    assert ids(mhd, "DocumentReference") == ALL_DOCS
    assert ids(mhd, "List") == {EMAIL, SSFULL, FOLDER, MINFOLDER}


def test_contained_resources_are_not_resources_of_the_server(mhd: Fhir) -> None:
    assert ids(mhd, "Practitioner?family=moehrke") == {"dr-moehrke"}
    assert ids(mhd, "Practitioner?family=lefevre") == set()


def test_chains_into_contained_resources_follow_updates_and_deletes(mhd: Fhir) -> None:
    comp = next(d for d in _documents() if d["id"] == COMP)
    next(c for c in comp["contained"] if c["id"] == "in-author")["name"] = [{"family": "Girard", "given": ["Anne"]}]
    with mhd.backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        Repository(conn, Principal.system(), validator=None).update("DocumentReference", COMP, comp)
    assert ids(mhd, "DocumentReference?author.family=moehrke") == set()
    assert ids(mhd, "DocumentReference?author.family=girard") == {COMP}
    with mhd.backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        Repository(conn, Principal.system(), validator=None).delete("DocumentReference", COMP)
    assert ids(mhd, "DocumentReference?author.family=girard") == set()


def test_bad_chains_are_reported(mhd: Fhir) -> None:
    for query in ["DocumentReference?author.given:below=jo", "DocumentReference?author.nope=x",
                  "DocumentReference?status.given=x", "List?source:Device.family=x",
                  "List?sourceId:exact=urn:oid:1.2.3.4"]:
        r = mhd.get(query)
        assert r.status_code == 400, query
        assert r.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_lists_the_mhd_parameters(fhir: Fhir) -> None:
    statement = fhir.get("metadata").json()
    by_type = {r["type"]: {p["name"]: p for p in r["searchParam"]} for r in statement["rest"][0]["resource"]}
    docs, lists = by_type["DocumentReference"], by_type["List"]
    assert docs["creation"]["type"] == "date"
    assert docs["creation"]["definition"] == \
        "https://profiles.ihe.net/ITI/MHD/SearchParameter/DocumentReference-Creation"
    assert lists["designationType"]["type"] == "token"
    assert lists["designationType"]["definition"] == \
        "https://profiles.ihe.net/ITI/MHD/SearchParameter/List-DesignationType"
    assert lists["sourceId"]["type"] == "token"
    assert lists["sourceId"]["definition"] == "https://profiles.ihe.net/ITI/MHD/SearchParameter/List-SourceId"
    mhd_67 = {"author", "category", "creation", "date", "event", "facility", "format", "identifier",
              "patient", "period", "related", "security-label", "setting", "status", "subject", "type"}
    assert mhd_67 <= docs.keys()
    assert {"code", "date", "designationType", "identifier", "patient", "source", "sourceId", "status",
            "subject"} <= lists.keys()


def test_contained_resources_are_indexed_under_their_container_only_when_referenced() -> None:
    comp = next(d for d in _documents() if d["id"] == COMP)
    rows = index_rows(comp)
    strings = {(r["res_type"], r["res_id"], r["param"], r["value"]) for r in rows["string"]}
    assert (("DocumentReference", COMP, "author:Practitioner.family", "moehrke") in strings)
    assert (("DocumentReference", COMP, "authenticator:Practitioner.given", "john") in strings)
    # the contained Patient is only context.sourcePatientInfo, which no search parameter reads
    assert not any(param.split(".")[0].endswith(":Patient") for _, _, param, _ in strings)
    tokens = {(r["param"], r["code"]) for r in rows["token"]}
    assert ("author:Practitioner.email", "JohnMoehrke@gmail.com") in tokens
