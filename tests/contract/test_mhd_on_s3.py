"""MHD publication and retrieval with the content on S3 (Swift's s3api), encrypted per patient."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
from pydantic import SecretStr

from tests.conftest import Fhir, LiveServer
from tests.contract.conftest import ACCESS_KEY, ENDPOINT, SECRET_KEY


def test_documents_on_s3_round_trip_encrypted(fhir: Fhir, s3_client: Any, s3_bucket: str) -> None:
    prefix = f"documents-{uuid.uuid4().hex[:8]}"
    settings = fhir.backend.settings.model_copy(update={
        "blob_url": f"s3://{s3_bucket}/{prefix}", "s3_endpoint_url": ENDPOINT, "s3_region": "us-east-1",
        "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SecretStr(SECRET_KEY)})
    server = LiveServer(settings)
    try:
        with httpx.Client(base_url=server.url + "/fhir/", timeout=60,
                          headers={"Content-Type": "application/fhir+json"}) as api:
            api.put("Patient/s3-patient", json={"resourceType": "Patient", "id": "s3-patient"})
            payload = b"%PDF-1.4 compte rendu " + bytes(range(256)) * 64
            r = api.post("DocumentReference", json={
                "resourceType": "DocumentReference", "status": "current",
                "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4.555"},
                "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
                "subject": {"reference": "Patient/s3-patient"},
                "content": [{"attachment": {"contentType": "application/pdf",
                                            "data": base64.b64encode(payload).decode()}}]})
            assert r.status_code == 201, r.text
            binary = r.json()["content"][0]["attachment"]["url"].rsplit("/", 1)[1]
            got = api.get(f"Binary/{binary}")
            assert got.status_code == 200 and got.content == payload
            part = api.get(f"Binary/{binary}", headers={"Range": "bytes=1000-1999"})
            assert part.status_code == 206 and part.content == payload[1000:2000]
        objects = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{prefix}/").get("Contents", [])
        assert len(objects) == 1
        stored = s3_client.get_object(Bucket=s3_bucket, Key=objects[0]["Key"])["Body"].read()
        assert b"compte rendu" not in stored and len(stored) > len(payload)
    finally:
        server.stop()
