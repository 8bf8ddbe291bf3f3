"""``carnet demo``'s CDA R2 documents, published through ITI-105 and read back over HTTP: one per
record with an INS, accepted with the metadata the server derives from the header, served byte for
byte, and rendered for the portal with the demo patient's name and the template's sections."""

from __future__ import annotations

import base64
import uuid
from datetime import date, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from carnet import demo, demo_cda, demo_documents, demo_people
from carnet.documents import cda_html
from carnet.identity import nir
from tests.conftest import Fhir, LiveServer

DEMO_SYSTEM = "urn:oid:" + nir.OID_INS_NIR_DEMO
CDA = demo_documents.CDA_CONTENT_TYPE
SEED = 11


def test_demo_cda_documents_are_accepted_served_byte_for_byte_and_rendered(fhir: Fhir, tmp_path: Path) -> None:
    settings = fhir.backend.settings.model_copy(update={"data_dir": tmp_path})
    summary = demo.load(settings, fhir.backend.engine, patients=8, seed=SEED, today=date(2026, 6, 15))
    author = demo_cda.author_of(demo_people.directory(SEED))
    server = LiveServer(settings)  # the demo's data folder holds the keys and the content
    kinds: set[bool] = set()
    try:
        parent: dict[str, Any] | None = None
        for identity in summary.identities:
            if not identity.carries_ins:
                parent = None
                continue
            [pid] = fhir.search_ids(f"Patient?identifier={quote(DEMO_SYSTEM + '|' + identity.matricule)}")
            patient = fhir.get(f"Patient/{pid}").json()
            docs = [e["resource"] for e in fhir.get(f"DocumentReference?patient=Patient/{pid}").json()["entry"]]
            assert len(docs) == 4
            [doc] = [d for d in docs if d["content"][0]["attachment"]["contentType"] == CDA]
            # what the server derived from the header
            assert doc["masterIdentifier"] == {
                "system": "urn:ietf:rfc:3986",
                "value": f"urn:uuid:{uuid.uuid5(demo_documents.NAMESPACE, f'{SEED}/{pid}/cda')}"}
            assert doc["type"]["coding"][0]["code"] == ("29274-8" if identity.minor else "SYNTH")
            assert doc["category"][0]["coding"][0]["code"] == ("10" if identity.minor else "11")
            assert doc["securityLabel"][0]["coding"][0]["code"] == "N"
            assert doc["context"]["practiceSetting"]["coding"][0]["code"] == "AMBULATOIRE"
            assert doc["author"][0]["reference"] == author.reference
            att = doc["content"][0]["attachment"]
            assert att["title"] == ("Carnet de santé de l'enfant - Mesures de l'enfant" if identity.minor
                                    else "Synthèse Médicale")
            served = httpx.get(server.url + "/fhir/Binary/" + att["url"].rsplit("/Binary/", 1)[1], timeout=30)
            assert served.status_code == 200 and served.headers["content-type"].startswith(CDA)
            assert len(served.content) == att["size"]
            # byte for byte what the demo built for this record
            record = demo_documents.Record(pid, "", identity, patient, parent if identity.minor else None)
            built = demo_documents.cda_document(SEED, record, author, datetime.fromisoformat(doc["date"]))
            assert served.content == base64.b64decode(built["content"][0]["attachment"]["data"])

            html = cda_html.render(served.content)
            t = identity.traits
            assert escape(f"{' '.join(t.birth_given_names)} {t.birth_family_name}") in html
            assert t.birth_date.strftime("%d/%m/%Y") in html
            sections = ["Signes vitaux"] if identity.minor else [
                "Pathologie en cours, antécédents, allergies et facteurs de risques", "Points de vigilance",
                "Traitement au long cours"]
            for title in sections:
                assert escape(title) in html
            for example in ("PAT-TROIS", "DOMINIQUE", "DECOURCY", "Ruth", "MEDIONI", "MULLER"):
                assert example not in html
            kinds.add(identity.minor)
            parent = None if identity.minor else patient
    finally:
        server.stop()
    assert kinds == {False, True}  # an adult's synthèse and a child's measures
