"""Demo documents: each demo patient with an INS gets a few PDF documents in their record and one
structured CDA R2 document built from a real ANS example (:mod:`carnet.demo_cda`: a synthèse médicale
for adults, the child's measures for minors), published through ITI-105 like any producer's (content
encrypted, metadata checked against the French rules; the CDA's metadata derived by the server from
its header, which it checks against the record). Unique ids are derived from the seed, so a second
``carnet demo`` run resubmits the same documents and stores nothing twice."""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from carnet import demo_cda
from carnet.auth.principal import Principal
from carnet.directory import keys
from carnet.fhir import jsonio

if TYPE_CHECKING:
    from carnet.demo_people import DemoIdentity

LOINC = "http://loinc.org"
# (LOINC type, French title, first line of the text)
KINDS = (
    ("11490-0", "Lettre de liaison à la sortie", "Sortie d'hospitalisation : consignes et traitement."),
    ("11502-2", "Compte rendu d'examens biologiques", "Bilan sanguin : hémogramme et ionogramme normaux."),
    ("18748-4", "Compte rendu d'imagerie médicale", "Radiographie thoracique de face : pas d'anomalie."),
    ("57833-6", "Prescription de produits de santé", "Paracétamol 1 g, 3 fois par jour pendant 5 jours."),
    ("87273-9", "Note de vaccination", "Vaccination antigrippale, injection intramusculaire."),
    ("11488-4", "Compte rendu de consultation", "Consultation de suivi : examen clinique normal."),
)
NAMESPACE = uuid.UUID("2f1c7a52-5b0e-4c38-9d8e-6c0a51d7e001")
CDA_CONTENT_TYPE = "application/hl7-v3+xml"


@dataclass(frozen=True)
class Record:
    """A demo record that receives documents."""

    pid: str
    name: str  # display name, printed in the PDFs
    identity: DemoIdentity | None = None  # with the stored Patient, gives the CDA document
    patient: dict[str, Any] | None = None
    guardian: dict[str, Any] | None = None  # a minor's parent (their Patient resource)


def _pdf_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def minimal_pdf(lines: Iterable[str]) -> bytes:
    """A small valid one-page PDF (Helvetica, WinAnsi text) with a correct cross-reference table."""
    ops = ["BT", "/F1 12 Tf", "72 770 Td", "16 TL"]
    for line in lines:
        ops.append(f"({_pdf_text(line)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("cp1252", errors="replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def document(seed: int, n: int, patient_id: str, patient_name: str, author: str, kind: tuple[str, str, str],
             when: date) -> dict[str, Any]:
    code, title, line = kind
    pdf = minimal_pdf([title, f"Patient : {patient_name}", f"Date : {when.strftime('%d/%m/%Y')}", "", line,
                       "", "Document de démonstration (données fictives)."])
    return {
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                             "value": f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{seed}/{patient_id}/{n}')}"},
        "type": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": f"{when.isoformat()}T09:30:00+01:00",
        "author": [{"reference": author}],
        "description": title,
        "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "N"}]}],
        "content": [{"attachment": {"contentType": "application/pdf", "language": "fr-FR", "title": title,
                                    "creation": f"{when.isoformat()}T09:30:00+01:00",
                                    "data": base64.b64encode(pdf).decode("ascii")}}],
        "context": {"period": {"start": when.isoformat()}},
    }


def cda_when(seed: int, record: Record, before: date, today: date) -> datetime:
    """When the CDA document was written: an adult's synthèse some weeks before ``before`` (their
    oldest PDF), a child's measures in the first days of life (never after yesterday)."""
    rng = random.Random(f"{seed}/{record.pid}/cda")  # noqa: S311 - synthetic data
    assert record.identity is not None
    if record.identity.minor:
        born = record.identity.traits.birth_date
        day = max(born, min(born + timedelta(days=rng.randrange(3, 12)), today - timedelta(days=1)))
    else:
        day = before - timedelta(days=rng.randrange(7, 60))
    return datetime.combine(day, time(rng.randrange(8, 18), rng.randrange(60)), tzinfo=demo_cda.PARIS)


def cda_document(seed: int, record: Record, author: demo_cda.Author, when: datetime) -> dict[str, Any]:
    """The ITI-105 DocumentReference of the record's CDA: the server derives the rest from the header."""
    assert record.identity is not None
    assert record.patient is not None
    identity = record.identity
    template = demo_cda.CHILD_TEMPLATE if identity.minor else demo_cda.ADULT_TEMPLATE
    guardian = demo_cda.guardian_of(record.guardian) if identity.minor and record.guardian else None
    person = demo_cda.person_of(identity, record.patient)
    xml = demo_cda.build(template, person, (identity.oid, identity.matricule), author,
                         document_id=uuid.uuid5(NAMESPACE, f"{seed}/{record.pid}/cda"),
                         set_id=uuid.uuid5(NAMESPACE, f"{seed}/{record.pid}/cda-set"), when=when,
                         guardian=guardian)
    return {
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": f"Patient/{record.pid}"},
        "author": [{"reference": author.reference,
                    "identifier": {"system": f"urn:oid:{keys.PS_IDNAT_OID}", "value": author.idnat}}],
        "content": [{"attachment": {"contentType": CDA_CONTENT_TYPE, "language": "fr-FR",
                                    "data": base64.b64encode(xml).decode("ascii")}}],
    }


def publish(router: Any, principal: Principal, patients: list[Record], authors: list[str], *,
            seed: int, today: date, per_patient: int = 3, cda_author: demo_cda.Author | None = None) -> int:
    """Publish ``per_patient`` PDF documents for each record and, given ``cda_author``, one CDA document
    for each record that names its identity and Patient; answers how many documents."""
    from carnet.fhir.router import FhirRequest

    def post(body: dict[str, Any]) -> None:
        resp = router.handle(FhirRequest("POST", "DocumentReference", [], {}, jsonio.dumps(body)), principal)
        if resp.status not in (200, 201):
            raise RuntimeError(f"demo document refused: {resp.json_bytes()[:500]!r}")

    count = 0
    for record in patients:
        pid = record.pid
        rng = random.Random(f"{seed}/{pid}")  # noqa: S311 - synthetic data; one stream per patient
        oldest = today
        for n, kind in enumerate(rng.sample(KINDS, per_patient)):
            when = today - timedelta(days=rng.randrange(10, 900))
            oldest = min(oldest, when)
            post(document(seed, n, pid, record.name, rng.choice(authors), kind, when))
            count += 1
        if cda_author is not None and record.identity is not None and record.patient is not None:
            post(cda_document(seed, record, cda_author, cda_when(seed, record, oldest, today)))
            count += 1
    return count
