"""ITI-68 Retrieve Document: ``GET Binary/{id}`` (the ``attachment.url`` of a DocumentReference).

The answer is the exact bytes, with the content type they were published with, streamed from the
blob store (every read checks the content's hash or authenticated segments: corrupt content is
never served). ``Range: bytes=…`` gives a 206 with one range. Asking for FHIR JSON
(``Accept: application/fhir+json`` or ``_format=json``) gives the Binary resource with its
``data`` in base64, as FHIR's REST API defines for Binary.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select

from carnet.blobs import BadRange, BlobRef, EncryptedBlobStore
from carnet.db.tables import document_contents
from carnet.fhir import jsonio
from carnet.fhir.store import Repository

if TYPE_CHECKING:
    from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter

_C = document_contents.c
SELECT_CONTENT = select(_C.patient_id, _C.blob_key, _C.sha256, _C.sha1, _C.size, _C.content_type).where(
    _C.binary_id == bindparam("binary_id"))
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single ``bytes=`` range, None for the whole content (or a header we
    ignore, as RFC 9110 allows: several ranges)."""
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        if header.strip().startswith("bytes") and "," in header:
            return None
        raise BadRange(f"unsupported Range header {header!r}")
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        raise BadRange(f"unsupported Range header {header!r}")
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0:
            raise BadRange("a suffix range of 0 bytes is not satisfiable")
        return max(size - n, 0), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        raise BadRange(f"range {header.strip()} is not satisfiable for {size} bytes")
    return start, end


class Retrieval:
    def __init__(self, router: FhirRouter, store: EncryptedBlobStore) -> None:
        self.router = router
        self.store = store

    def content_ref(self, repo: Repository, binary_id: str) -> tuple[str, BlobRef, str] | None:
        row = repo.conn.execute(SELECT_CONTENT, {"binary_id": binary_id}).first()
        if row is None:
            return None
        return row.patient_id, BlobRef(row.blob_key, row.sha256, row.sha1, int(row.size)), row.content_type

    def read(self, repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        from carnet.fhir.router import FhirResponse

        assert rid is not None
        stored = repo.read("Binary", rid)
        found = self.content_ref(repo, rid)
        accept = req.headers.get("accept", "")
        fmt = dict(req.query).get("_format", "")
        wants_fhir = "fhir+json" in accept or fmt in ("json", "application/fhir+json", "application/json")
        if found is None:  # a plain Binary resource (not document content)
            resource = stored.resource()
            if wants_fhir or not isinstance(resource.get("data"), str):
                return self.router.resource_response(stored, 200)
            data = base64.b64decode(resource["data"])
            return FhirResponse(200, data, {"ETag": stored.etag},
                                media_type=resource.get("contentType") or "application/octet-stream")
        patient_id, ref, content_type = found
        blobs = self.store.for_patient(patient_id)
        headers = {"ETag": stored.etag, "Accept-Ranges": "bytes"}
        if wants_fhir:
            resource = stored.resource()
            resource["data"] = base64.b64encode(b"".join(blobs.open(ref))).decode("ascii")
            return FhirResponse(200, jsonio.dumps(resource), {"ETag": stored.etag})
        try:
            span = parse_range(req.headers.get("range"), ref.size)
        except BadRange:
            headers["Content-Range"] = f"bytes */{ref.size}"
            raise
        if span is None or span == (0, ref.size):
            if ref.size <= self.store.verify_whole:  # read (and verified) whole: one plain body
                return FhirResponse(200, b"".join(blobs.open(ref)), headers, media_type=content_type)
            headers["Content-Length"] = str(ref.size)
            return FhirResponse(200, None, headers, stream=blobs.open(ref), media_type=content_type)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{ref.size}"
        headers["Content-Length"] = str(end - start)
        return FhirResponse(206, None, headers, stream=blobs.open(ref, start, end), media_type=content_type)
