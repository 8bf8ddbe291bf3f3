"""IHE MHD Document Recipient: ITI-65 Provide Document Bundle and ITI-105 Simplified Publish.

A publication runs in two steps, so that the write transaction holds only database work:

1. **Prework** (:func:`DocumentService.prework`, before the request queues for the database):
   the Bundle is checked, each document's bytes are decoded, checked against the supplied
   ``attachment.hash``/``size``, read as CDA when they are one (header checked, missing metadata
   derived, contradictions refused), checked against the French rules (C3), and written to the
   blob store encrypted under the patient's data key. Every Binary and every new Patient gets its
   id now (the content is encrypted for a patient id that must be known). Binary entries are left
   with their content type and security context only; ``attachment.url`` names the Binary.
2. **Transaction** (:func:`DocumentService.process_bundle`): producers' unique ids are claimed
   (resubmitting the same content is idempotent, other content under a known id answers 409),
   replaced documents are checked, the entries are written by the engine's transaction, then the
   content rows and the supersession of replaced documents, all in one database transaction.

Blobs are therefore written before the transaction that references them; when that transaction
fails they are orphans, which no row references (so nothing serves them) and the janitor removes.
ITI-105 is turned into the equivalent ITI-65 Bundle (the server builds the SubmissionSet).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from carnet.auth.principal import Kind, Principal
from carnet.blobs import BlobRef, EncryptedBlobStore
from carnet.config import Mode, Settings
from carnet.db.tables import document_contents, document_unique_ids
from carnet.documents import cda, cda_checks, valuesets
from carnet.errors import CarnetError, Conflict, Invalid, Issue, NotFound, Unprocessable
from carnet.errors import bilingual as _t
from carnet.fhir import jsonio
from carnet.fhir.store import Repository, new_id
from carnet.fhir.values import instant_text, now_us
from carnet.identity import fhir as idfhir
from carnet.identity.status import IdentityStatus

if TYPE_CHECKING:
    from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter

MHD = "https://profiles.ihe.net/ITI/MHD"
LIST_TYPES = f"{MHD}/CodeSystem/MHDlistTypes"
SOURCE_ID = f"{MHD}/StructureDefinition/ihe-sourceId"
PROVIDE_PROFILES = frozenset(
    f"{MHD}/StructureDefinition/{name}"
    for name in (
        "IHE.MHD.Minimal.ProvideBundle",
        "IHE.MHD.Comprehensive.ProvideBundle",
        "IHE.MHD.UnContained.Comprehensive.ProvideBundle",
    )
)
SUBMISSION_SET_PROFILE = f"{MHD}/StructureDefinition/IHE.MHD.Minimal.SubmissionSet"
RESPONSE_PROFILE = f"{MHD}/StructureDefinition/IHE.MHD.ProvideDocumentBundleResponse"
RFC3986 = "urn:ietf:rfc:3986"
DOCUMENT_TYPES = ("DocumentReference", "Binary")
CDA_MEDIA = ("text/xml", "application/xml", "application/hl7-v3+xml", "application/cda+xml")


_U = document_unique_ids.c
SELECT_UNIQUE_IDS = select(_U.unique_id, _U.kind, _U.res_id, _U.patient_id, _U.sha256).where(
    _U.unique_id.in_(bindparam("ids", expanding=True)))
INSERT_UNIQUE_IDS = insert(document_unique_ids)
INSERT_CONTENTS = insert(document_contents)



def _problem(fr: str, en: str, expression: str, code: str = "business-rule") -> Unprocessable:
    return Unprocessable(_t(fr, en), issues=[Issue("error", code, _t(fr, en), [expression])])


def is_submission_set(resource: Any) -> bool:
    if not isinstance(resource, dict) or resource.get("resourceType") != "List":
        return False
    codings = (resource.get("code") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("code") == "submissionset" for c in codings)


def is_provide_bundle(bundle: dict[str, Any]) -> bool:
    profiles = set((bundle.get("meta") or {}).get("profile") or [])
    if profiles & PROVIDE_PROFILES:
        return True
    return any(
        isinstance(e, dict) and is_submission_set(e.get("resource")) for e in bundle.get("entry") or []
    )


def _writes_documents(bundle: dict[str, Any]) -> bool:
    for e in bundle.get("entry") or []:
        if not isinstance(e, dict):
            continue
        method = (e.get("request") or {}).get("method")
        rtype = (e.get("resource") or {}).get("resourceType") if isinstance(e.get("resource"), dict) else None
        if method in ("POST", "PUT") and rtype in DOCUMENT_TYPES:
            return True
    return False


@dataclass
class Content:
    binary_id: str
    patient_id: str
    ref: BlobRef
    content_type: str


@dataclass
class Plan:
    """What prework prepared for the transaction of one submission."""

    original_count: int  # entries of the submitted Bundle (appended Binary entries are not answered)
    preassigned: dict[int, str] = field(default_factory=dict)  # entry index -> id of the created resource
    contents: list[Content] = field(default_factory=list)
    documents: dict[int, str] = field(default_factory=dict)  # DocumentReference entry -> patient id
    unique_ids: dict[int, tuple[str, str]] = field(default_factory=dict)  # entry -> (uniqueId, sha256)
    submission: int = -1  # entry index of the SubmissionSet
    warnings: dict[int, list[Issue]] = field(default_factory=dict)


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise Invalid(f"{where} must be base64 text", expression=[where])
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(
                _t(f"{where} : base64 invalide", f"{where}: invalid base64"), expression=[where]
            ) from None


def _unique_id(identifier: Any) -> str | None:
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        return None
    value = identifier["value"].strip()
    return value or None


def _lookup(repo: Repository) -> Repository:
    """Where a publication finds its patient: a professional feeds a record they may not read
    (blocking governs reading, not feeding); a patient publishes only into the records they read,
    so that another person's record answers exactly like no record."""
    return repo if repo.principal.kind == Kind.PATIENT else repo.as_system()


class DocumentService:
    def __init__(self, settings: Settings, store: EncryptedBlobStore) -> None:
        self.settings = settings
        self.store = store
        self.production = settings.mode == Mode.PRODUCTION

    # -- prework ----------------------------------------------------------------------------------
    def prework(self, router: FhirRouter, request: FhirRequest, principal: Principal) -> FhirRequest:
        from dataclasses import replace

        path = request.path.strip("/")
        body = request.body
        if request.method != "POST" or not isinstance(body, dict):
            return request
        if (
            path == ""
            and body.get("resourceType") == "Bundle"
            and body.get("type") == "transaction"
            and is_provide_bundle(body)
        ):
            plan = self._prepare(router, body, principal)
            return replace(request, context={**request.context, "mhd": plan})
        if path == "DocumentReference" and body.get("resourceType") == "DocumentReference":
            bundle = self._simplified_bundle(body, principal)
            plan = self._prepare(router, bundle, principal)
            return replace(request, body=bundle, context={**request.context, "mhd": plan, "iti105": True})
        return request

    def _simplified_bundle(self, dr: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """ITI-105: the ITI-65 Bundle the producer would have sent (SubmissionSet built here)."""
        doc_url = f"urn:uuid:{uuid.uuid4()}"
        dr = dict(dr)
        dr.pop("id", None)
        submission = {
            "resourceType": "List",
            "meta": {"profile": [SUBMISSION_SET_PROFILE]},
            "extension": [
                {"url": SOURCE_ID, "valueIdentifier": {"value": f"urn:carnet:source:{principal.subject}"}}
            ],
            "identifier": [{"use": "usual", "system": RFC3986, "value": f"urn:uuid:{uuid.uuid4()}"}],
            "status": "current",
            "mode": "working",
            "code": {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]},
            "date": instant_text(now_us()),
            "entry": [{"item": {"reference": doc_url}}],
        }
        if isinstance(dr.get("subject"), dict):
            submission["subject"] = dict(dr["subject"])
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "meta": {"profile": [f"{MHD}/StructureDefinition/IHE.MHD.Minimal.ProvideBundle"]},
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": submission,
                    "request": {"method": "POST", "url": "List"},
                },
                {
                    "fullUrl": doc_url,
                    "resource": dr,
                    "request": {"method": "POST", "url": "DocumentReference"},
                },
            ],
        }

    def _prepare(self, router: FhirRouter, bundle: dict[str, Any], principal: Principal) -> Plan:
        entries = bundle.get("entry")
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("request"), dict) for e in entries
        ):
            raise Invalid(
                "Bundle.entry must be an array of entries with a request", expression=["Bundle.entry"]
            )
        plan = Plan(original_count=len(entries))
        by_url = {e["fullUrl"]: i for i, e in enumerate(entries) if isinstance(e.get("fullUrl"), str)}
        sets = [i for i, e in enumerate(entries) if is_submission_set(e.get("resource"))]
        if len(sets) != 1:
            raise _problem(
                "Une soumission ITI-65 porte exactement un SubmissionSet (List code submissionset)",
                "An ITI-65 submission carries exactly one SubmissionSet (List with code submissionset)",
                "Bundle.entry",
            )
        plan.submission = sets[0]
        documents = [
            i
            for i, e in enumerate(entries)
            if isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "DocumentReference"
            and e["request"].get("method") == "POST"
        ]
        if not documents:
            raise _problem(
                "La soumission ne contient aucun DocumentReference",
                "The submission contains no DocumentReference",
                "Bundle.entry",
            )
        binaries = {
            i
            for i, e in enumerate(entries)
            if isinstance(e.get("resource"), dict)
            and (e["resource"].get("resourceType") == "Binary"
                 # the FHIR Document option: the content is a document Bundle of the submission
                 or (e["resource"].get("resourceType") == "Bundle"
                     and e["resource"].get("type") == "document"))
        }
        used: set[int] = set()
        with router.engine.connect() as conn:
            repo = router.repository(conn, principal)
            for i in documents:
                self._prepare_document(router, repo, entries, i, by_url, binaries, used, plan)
            self._prepare_submission(router, repo, entries, plan)
        for j in sorted(binaries - used):
            raise _problem(
                f"L'entrée {j} (Binary) n'est le contenu d'aucun DocumentReference",
                f"Entry {j} (Binary) is the content of no DocumentReference",
                f"Bundle.entry[{j}]",
            )
        return plan

    def _prepare_submission(
        self, router: FhirRouter, repo: Repository, entries: list[dict[str, Any]], plan: Plan
    ) -> None:
        i = plan.submission
        ss = entries[i]["resource"]
        uid = next(
            (
                _unique_id(x)
                for x in ss.get("identifier") or []
                if isinstance(x, dict) and x.get("use") == "usual"
            ),
            None,
        ) or next((_unique_id(x) for x in ss.get("identifier") or []), None)
        if uid is None:
            uid = f"urn:uuid:{uuid.uuid4()}"
            ss.setdefault("identifier", []).append({"use": "usual", "system": RFC3986, "value": uid})
        plan.unique_ids[i] = (uid, "")
        seen: dict[str, int] = {}
        for k, (u, _) in sorted(plan.unique_ids.items()):
            if u in seen:
                raise _problem(
                    f"Les entrées {seen[u]} et {k} portent le même identifiant unique {u}",
                    f"Entries {seen[u]} and {k} carry the same unique id {u}",
                    f"Bundle.entry[{k}].resource.masterIdentifier", "duplicate")
            seen[u] = k
        patients = set(plan.documents.values())
        if len(patients) > 1:
            raise _problem(
                "Tous les documents d'une soumission concernent le même patient",
                "All documents of a submission concern the same patient",
                "Bundle.entry",
            )
        subject = ss.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("reference"), str):
            pid = self._patient_id(
                router, repo, entries, subject, plan, f"Bundle.entry[{i}].resource.subject"
            )
            if pid not in patients:
                raise _problem(
                    "Le patient du SubmissionSet diffère de celui des documents",
                    "The SubmissionSet's patient differs from the documents'",
                    f"Bundle.entry[{i}].resource.subject",
                )
        else:
            ss["subject"] = {"reference": f"Patient/{next(iter(patients))}"}

    # -- one document -------------------------------------------------------------------------------
    def _prepare_document(
        self,
        router: FhirRouter,
        repo: Repository,
        entries: list[dict[str, Any]],
        i: int,
        by_url: dict[str, int],
        binaries: set[int],
        used: set[int],
        plan: Plan,
    ) -> None:
        where = f"Bundle.entry[{i}].resource"
        dr: dict[str, Any] = entries[i]["resource"]
        contents = dr.get("content")
        if not isinstance(contents, list) or not contents:
            raise _problem(
                "Le DocumentReference n'a pas de contenu (content)",
                "The DocumentReference has no content",
                f"{where}.content",
                "required",
            )
        payloads: list[tuple[dict[str, Any], bytes, int | None]] = []
        for k, content in enumerate(contents):
            att = content.get("attachment") if isinstance(content, dict) else None
            if not isinstance(att, dict):
                raise Invalid(
                    f"{where}.content[{k}].attachment is missing",
                    expression=[f"{where}.content[{k}].attachment"],
                )
            url = att.get("url")
            j = by_url.get(url) if isinstance(url, str) else None
            if "data" in att:
                data = _b64(att.pop("data"), f"{where}.content[{k}].attachment.data")
                j = None
            elif j is not None and j in binaries:
                binary = entries[j]["resource"]
                if j in used:
                    raise _problem(
                        f"L'entrée {j} (Binary) est le contenu de deux documents",
                        f"Entry {j} (Binary) is the content of two documents",
                        f"Bundle.entry[{j}]",
                    )
                if binary.get("resourceType") == "Bundle":
                    data = jsonio.dumps(binary)
                    att.setdefault("contentType", "application/fhir+json")
                else:
                    data = _b64(binary.get("data", ""), f"Bundle.entry[{j}].resource.data")
                    att.setdefault("contentType", binary.get("contentType"))
                used.add(j)
            else:
                raise _problem(
                    "Le contenu du document doit être fourni : attachment.data, ou attachment.url "
                    "désignant un Binary de la soumission",
                    "The document's content must be supplied: attachment.data, or attachment.url naming a "
                    "Binary of the submission",
                    f"{where}.content[{k}].attachment",
                    "required",
                )
            if not isinstance(att.get("contentType"), str) or not att["contentType"]:
                raise _problem(
                    "Type MIME du contenu absent (attachment.contentType)",
                    "The content's media type is missing (attachment.contentType)",
                    f"{where}.content[{k}].attachment.contentType",
                    "required",
                )
            if len(data) > self.store.max_size:
                from carnet.errors import TooLarge

                raise TooLarge(f"the document is larger than the limit of {self.store.max_size} bytes")
            self._check_digest(att, data, f"{where}.content[{k}].attachment")
            payloads.append((att, data, j))
        first_att, first_data, _ = payloads[0]
        header = self._cda_header(first_att, first_data, f"{where}.content[0].attachment")
        supplied = dr
        if header is not None:
            supplied = copy.deepcopy(dr)  # what the producer said, to compare with the header
            self._derive(dr, header)
            body = header.non_xml_body
            if body is not None and body.content and body.media_type and len(payloads) == 1:
                # a CDA level 1 document exposes its embedded file (usually a PDF) as a second content
                embedded = {"contentType": body.media_type}
                if isinstance(first_att.get("title"), str):
                    embedded["title"] = first_att["title"]
                dr["content"].append({"attachment": embedded})
                payloads.append((embedded, body.content, None))
        pid = self._patient_id(router, repo, entries, dr.get("subject"), plan, f"{where}.subject")
        patient = self._patient(repo, entries, pid, plan)
        warnings: list[Issue] = []
        if header is not None:
            issues = cda_checks.check_header(
                header, production=self.production, expression=f"{where}.content[0].attachment"
            )
            against = cda_checks.check_against_metadata(header, supplied, patient=patient)
            if against and repo.principal.kind == Kind.PRACTITIONER and repo._current("Patient", pid) is None:
                # fed without the right to read the record: say what disagrees, never the record's values
                against = [Issue(x.severity, x.code, _t(
                    "Le document CDA ne correspond pas au dossier désigné (" + ", ".join(x.expression) + ")",
                    "The CDA document does not match the record it names (" + ", ".join(x.expression) + ")"),
                    list(x.expression)) for x in against]
            issues += against
            errors = [x for x in issues if x.severity in ("error", "fatal")]
            if errors:
                fields = ", ".join(sorted({e for x in errors for e in x.expression})) or "CDA"
                raise Unprocessable(
                    _t(
                        f"Le document CDA contredit ses métadonnées ({fields})",
                        f"The CDA document contradicts its metadata ({fields})",
                    ),
                    issues=errors,
                )
            warnings += [x for x in issues if x.severity == "warning"]
        warnings += self._check_rules(dr, patient, where)
        if warnings:
            plan.warnings[i] = warnings
        store = self.store.for_patient(pid)
        doc_url = entries[i].get("fullUrl")
        for k, (att, data, j) in enumerate(payloads):
            ref = store.put([data])
            if j is None:  # inline content: the Binary entry the producer did not send
                j = len(entries)
                entries.append(
                    {
                        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                        "resource": {"resourceType": "Binary"},
                        "request": {"method": "POST", "url": "Binary"},
                    }
                )
            binary_id = plan.preassigned.setdefault(j, new_id())
            old = entries[j]["resource"]
            entries[j]["request"] = {"method": "POST", "url": "Binary"}
            entries[j]["resource"] = {
                "resourceType": "Binary",
                **({"meta": old["meta"]} if isinstance(old.get("meta"), dict) else {}),
                "contentType": att["contentType"],
                "securityContext": {"reference": doc_url if isinstance(doc_url, str) else f"Patient/{pid}"},
            }
            att["url"] = f"{router.base}/Binary/{binary_id}"
            att["size"] = ref.size
            att["hash"] = ref.sha1_base64
            plan.contents.append(Content(binary_id, pid, ref, att["contentType"]))
            if k == 0:
                uid = _unique_id(dr.get("masterIdentifier"))
                if uid is None:
                    raise _problem(
                        "Identifiant unique du document absent (masterIdentifier)",
                        "The document's unique id is missing (masterIdentifier)",
                        f"{where}.masterIdentifier",
                        "required",
                    )
                plan.unique_ids[i] = (uid, ref.sha256)
        plan.documents[i] = pid
        plan.preassigned.setdefault(i, new_id())
        logical = f"urn:uuid:{plan.preassigned[i]}"
        if not any(isinstance(x, dict) and x.get("use") == "official" for x in dr.get("identifier") or []):
            dr.setdefault("identifier", []).append({"use": "official", "system": RFC3986, "value": logical})

    @staticmethod
    def _check_digest(att: dict[str, Any], data: bytes, where: str) -> None:
        if "size" in att and att["size"] != len(data):
            raise _problem(
                f"attachment.size ({att['size']}) diffère de la taille du contenu ({len(data)})",
                f"attachment.size ({att['size']}) differs from the content's size ({len(data)})",
                f"{where}.size",
                "value",
            )
        if "hash" in att:
            given = att["hash"]
            sha1 = hashlib.sha1(data, usedforsecurity=False).digest()
            try:
                decoded = base64.b64decode(given, validate=True) if isinstance(given, str) else b""
            except (binascii.Error, ValueError):
                decoded = b""
            # IHE's own examples carry the hex digest base64-encoded; accept both readings.
            if decoded not in (sha1, sha1.hex().encode()):
                raise _problem(
                    "attachment.hash ne correspond pas au SHA-1 du contenu",
                    "attachment.hash does not match the content's SHA-1",
                    f"{where}.hash",
                    "value",
                )

    @staticmethod
    def _cda_header(att: dict[str, Any], data: bytes, where: str) -> Any:
        media = str(att.get("contentType", "")).split(";")[0].strip().lower()
        if media not in CDA_MEDIA or b"ClinicalDocument" not in data[:8192]:
            return None
        return cda.read_header(data, expression=where)

    @staticmethod
    def _derive(dr: dict[str, Any], header: Any) -> None:
        """Fill what the producer left out from the CDA header (ITI-105 of a bare CDA)."""
        derived = cda_checks.metadata_from_header(header)
        for key, value in derived.items():
            if key == "content":
                att = dr["content"][0].setdefault("attachment", {})
                for k2, v2 in value[0].get("attachment", {}).items():
                    att.setdefault(k2, v2)
                if "format" in value[0]:
                    dr["content"][0].setdefault("format", value[0]["format"])
            elif key == "context":
                ctx = dr.setdefault("context", {})
                for k2, v2 in value.items():
                    ctx.setdefault(k2, v2)
            elif key == "subject":
                if not isinstance(dr.get("subject"), dict):
                    dr["subject"] = value
            elif key in ("author", "authenticator", "custodian"):
                continue  # references by identifier only: the producer names its resources
            else:
                dr.setdefault(key, value)

    # -- the patient --------------------------------------------------------------------------------
    def _patient_id(
        self,
        router: FhirRouter,
        repo: Repository,
        entries: list[dict[str, Any]],
        subject: Any,
        plan: Plan,
        where: str,
    ) -> str:
        from carnet.fhir.bundles import _type_and_id

        if not isinstance(subject, dict):
            raise _problem(
                "Le document doit désigner son patient (subject)",
                "The document must name its patient (subject)",
                where,
                "required",
            )
        ref = subject.get("reference")
        if not isinstance(ref, str):
            ident = subject.get("identifier")
            if not isinstance(ident, dict) or not ident.get("value"):
                raise _problem(
                    "Le document doit désigner son patient (subject)",
                    "The document must name its patient (subject)",
                    where,
                    "required",
                )
            system = str(ident.get("system", "")).strip()
            found = router.match(
                _lookup(repo),  # feeding a record does not need the right to read it
                "Patient",
                f"identifier={system}|{ident['value']}" if system else f"identifier={ident['value']}",
            )
            if len(found) != 1:
                raise _problem(
                    f"Aucun patient unique ne porte l'identifiant {ident['value']}",
                    f"No single patient holds the identifier {ident['value']}",
                    where,
                    "not-found",
                )
            subject["reference"] = f"Patient/{found[0].id}"
            return found[0].id
        for j, e in enumerate(entries):
            if e.get("fullUrl") != ref:
                continue
            res = e.get("resource")
            if not isinstance(res, dict) or res.get("resourceType") != "Patient":
                break
            method = e["request"].get("method")
            if method == "PUT":
                url = str(e["request"]["url"])
                target = (_type_and_id(url) if "://" in url else None) or url.strip("/")
                return target.split("/")[-1]
            condition = e["request"].get("ifNoneExist")
            if condition:
                found = router.match(_lookup(repo), "Patient", condition)
                if len(found) == 1:
                    return found[0].id
            return plan.preassigned.setdefault(j, new_id())
        if ref.startswith(("urn:uuid:", "urn:oid:", "#")):
            raise _problem(
                "Le patient du document doit être un Patient du serveur ou de la soumission",
                "The document's patient must be a Patient of the server or of the submission",
                f"{where}.reference",
                "not-found",
            )
        if "?" in ref:
            rtype, _, query = ref.partition("?")
            found = router.match(_lookup(repo), rtype, query) if rtype == "Patient" else []
            if len(found) != 1:
                raise _problem(
                    f"La référence {ref} ne désigne pas un patient unique",
                    f"The reference {ref} does not name a single patient",
                    f"{where}.reference",
                    "not-found",
                )
            return found[0].id
        if ref.startswith(router.base + "/"):
            ref = ref[len(router.base) + 1 :]
        elif "://" in ref:
            ref = _type_and_id(ref) or ref
        parts = ref.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "Patient":
            raise _problem(
                f"{ref} ne désigne pas un Patient",
                f"{ref} does not name a Patient",
                f"{where}.reference",
                "value",
            )
        subject["reference"] = f"Patient/{parts[1]}"  # the record's own form of the reference
        return parts[1]

    def _patient(
        self, repo: Repository, entries: list[dict[str, Any]], pid: str, plan: Plan
    ) -> dict[str, Any]:
        for j, rid in plan.preassigned.items():
            if (
                rid == pid
                and j < len(entries)
                and isinstance(entries[j].get("resource"), dict)
                and entries[j]["resource"].get("resourceType") == "Patient"
            ):
                return dict(entries[j]["resource"])
        for e in entries:  # a Patient PUT in the submission
            res = e.get("resource")
            if (
                isinstance(res, dict)
                and res.get("resourceType") == "Patient"
                and e["request"].get("method") == "PUT"
                and str(e["request"].get("url", "")).rstrip("/").endswith(f"Patient/{pid}")
            ):
                return dict(res)
        try:  # feeding a record does not need the right to read it
            return _lookup(repo).read("Patient", pid).resource()
        except CarnetError:
            raise _problem(
                f"Le patient Patient/{pid} est inconnu",
                f"The patient Patient/{pid} is not known",
                "DocumentReference.subject",
                "not-found",
            ) from None

    # -- the French rules (C3) ----------------------------------------------------------------------
    def _check_rules(self, dr: dict[str, Any], patient: dict[str, Any], where: str) -> list[Issue]:
        """Errors raise; what is tolerated outside production mode comes back as warnings."""
        warnings: list[Issue] = []
        status = dr.get("status")
        if status != "current":
            raise _problem(
                f"Un document publié a le statut current, pas « {status} »",
                f'A published document has status current, not "{status}"',
                f"{where}.status",
                "value",
            )
        ins = idfhir.ins_identifiers(patient)
        qualified = bool(ins) and idfhir.read_reliability(patient)[0] == IdentityStatus.QUAL
        generic = False
        if self.production and not qualified:
            raise _problem(
                "En production, un document ne se publie que pour une identité INS qualifiée",
                "In production, documents are published only for a qualified INS identity",
                f"{where}.subject",
                "business-rule",
            )
        if not ins:
            generic = True
            warnings.append(
                Issue(
                    "warning",
                    "business-rule",
                    _t(
                        "Patient sans INS : accepté hors production pour les tests d'interopérabilité ; "
                        "les règles françaises de métadonnées sont signalées sans bloquer",
                        "Patient without an INS: accepted outside production for interoperability tests; "
                        "the French metadata rules are reported without blocking",
                    ),
                    [f"{where}.subject"],
                )
            )
        try:
            self._check_codes(dr, where)
        except Unprocessable as exc:
            retired = any("retir" in x.diagnostics for x in exc.issues)
            if not generic or retired:
                raise
            warnings.extend(Issue("warning", x.code, x.diagnostics, x.expression) for x in exc.issues)
        return warnings

    @staticmethod
    def _check_codes(dr: dict[str, Any], where: str) -> None:
        codings = [c for c in (dr.get("type") or {}).get("coding") or [] if isinstance(c, dict)]
        if not codings:
            raise _problem(
                "Type de document absent (type)",
                "The document type is missing (type)",
                f"{where}.type",
                "required",
            )
        dtype = valuesets.check_type(
            codings[0].get("code"), codings[0].get("system") or valuesets.LOINC, expression=f"{where}.type"
        )
        category = dr.get("category")
        given = None
        if isinstance(category, list) and category:
            cc = [c for c in (category[0] or {}).get("coding") or [] if isinstance(c, dict)]
            given = cc[0] if cc else None
        cls = valuesets.check_class(
            dtype.code,
            given.get("code") if given else None,
            class_system=(given or {}).get("system") or valuesets.CLASS_SYSTEM,
            expression=f"{where}.category",
        )
        if given is None:
            dr["category"] = [{"coding": [cls.coding()]}]
        for n, label in enumerate(dr.get("securityLabel") or []):
            for coding in (label or {}).get("coding") or []:
                code, system = coding.get("code"), coding.get("system")
                if valuesets.is_visibility_code(code, system):
                    continue
                valuesets.check_code(
                    "confidentiality", code, system, expression=f"{where}.securityLabel[{n}]"
                )

    # -- transaction --------------------------------------------------------------------------------
    def process_bundle(
        self, router: FhirRouter, repo: Repository, request: FhirRequest, bundle: dict[str, Any]
    ) -> FhirResponse | None:
        from carnet.fhir.bundles import _transaction
        from carnet.fhir.router import FhirResponse

        plan: Plan | None = request.context.get("mhd")
        if plan is None:
            if is_provide_bundle(bundle) or _writes_documents(bundle):
                raise _problem(
                    "Les documents se publient par ITI-65 (transaction MHD avec SubmissionSet) ou "
                    "ITI-105 (POST DocumentReference)",
                    "Documents are published with ITI-65 (an MHD transaction with a SubmissionSet) or "
                    "ITI-105 (POST DocumentReference)",
                    "Bundle.entry",
                )
            return None
        entries: list[dict[str, Any]] = bundle["entry"]
        existing = self._claim_unique_ids(repo, entries, plan)
        if existing is not None:
            return FhirResponse(200, self._response_bundle(router, existing, plan))
        replaced = self._replaced(repo, entries, plan)
        responses = _transaction(router, repo, entries, plan.preassigned)
        for i, pid in plan.documents.items():
            subject = (entries[i]["resource"].get("subject") or {}).get("reference")
            if subject != f"Patient/{pid}":
                raise Conflict("the submission's patient changed while it was prepared; retry")
        when = now_us()
        if plan.contents:
            repo.conn.execute(
                INSERT_CONTENTS,
                [
                    {
                        "binary_id": c.binary_id,
                        "patient_id": c.patient_id,
                        "blob_key": c.ref.key,
                        "sha256": c.ref.sha256,
                        "sha1": c.ref.sha1,
                        "size": c.ref.size,
                        "content_type": c.content_type,
                        "created_at": when,
                    }
                    for c in plan.contents
                ],
            )
        for target in replaced:
            from carnet.documents.lifecycle import set_status

            set_status(repo, target, "superseded")
        for i, warnings in plan.warnings.items():
            if i < len(responses):
                responses[i]["response"]["outcome"] = {
                    "resourceType": "OperationOutcome",
                    "issue": [w.to_fhir() for w in warnings],
                }
        for r in responses:
            r.pop("resource", None)
        return FhirResponse(200, self._response_bundle(router, responses[: plan.original_count], plan))

    @staticmethod
    def _response_bundle(router: FhirRouter, responses: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "id": new_id(),
            "meta": {"profile": [RESPONSE_PROFILE]},
            "type": "transaction-response",
            "link": [{"relation": "self", "url": router.base}],
            "entry": responses,
        }

    def _claim_unique_ids(
        self, repo: Repository, entries: list[dict[str, Any]], plan: Plan
    ) -> list[dict[str, Any]] | None:
        """Claim the submission's unique ids. A resubmission (every document already stored with the
        same content, under the same SubmissionSet or a new one) answers with the stored entries."""
        wanted = {uid: i for i, (uid, _) in plan.unique_ids.items()}
        rows = {
            r.unique_id: r
            for r in repo.conn.execute(
                SELECT_UNIQUE_IDS, {"ids": list(wanted)}
            )
        }
        if not rows:
            self._insert_unique_ids(repo, entries, plan)
            return None
        known = 0
        for uid, i in wanted.items():
            row = rows.get(uid)
            if i == plan.submission:
                if row is not None and row.kind != "submission":
                    raise Conflict(f"the SubmissionSet's uniqueId {uid} is already a document's")
                continue
            if row is None:
                continue
            known += 1
            if (
                row.kind != "document"
                or row.sha256 != plan.unique_ids[i][1]
                or row.patient_id != plan.documents[i]
            ):
                raise Conflict(
                    _t(
                        f"L'identifiant unique {uid} désigne déjà un autre contenu",
                        f"The unique id {uid} already names other content",
                    )
                )
        ss_uid = plan.unique_ids[plan.submission][0]
        if known == len(plan.documents):  # a resubmission: answer with what is stored
            return self._existing_responses(repo, entries, plan, rows)
        if ss_uid in rows:
            raise Conflict(f"the SubmissionSet uniqueId {ss_uid} is already used")
        raise Conflict(
            _t(
                "Une partie des documents de la soumission est déjà publiée ; resoumettez-les seuls "
                "ou avec leurs contenus identiques",
                "Part of the submission's documents are already published; resubmit only the new ones",
            )
        )

    def _insert_unique_ids(self, repo: Repository, entries: list[dict[str, Any]], plan: Plan) -> None:
        rows = []
        for i, (uid, sha) in plan.unique_ids.items():
            rid = plan.preassigned.get(i) or plan.preassigned.setdefault(i, new_id())
            pid = plan.documents.get(i) or next(iter(plan.documents.values()))
            rows.append(
                {
                    "unique_id": uid,
                    "kind": "submission" if i == plan.submission else "document",
                    "res_id": rid,
                    "patient_id": pid,
                    "sha256": sha or None,
                }
            )
        try:  # no savepoint: a collision fails the whole submission (its transaction is rolled back)
            repo.conn.execute(INSERT_UNIQUE_IDS, rows)
        except IntegrityError:
            raise Conflict("a concurrent submission claimed one of these unique ids; retry") from None

    def _existing_responses(
        self, repo: Repository, entries: list[dict[str, Any]], plan: Plan, rows: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out = []
        for i in range(plan.original_count):
            uid = plan.unique_ids.get(i, ("", ""))[0]
            row = rows.get(uid)
            if row is not None:
                rtype = "List" if row.kind == "submission" else "DocumentReference"
                cur = repo._current(rtype, row.res_id)
                if cur is None or cur.deleted:  # a uniqueId stays taken after its entry's deletion
                    raise Conflict(_t(f"L'identifiant unique {uid} désigne une entrée supprimée",
                                      f"The unique id {uid} names a deleted entry"))
                location = f"{rtype}/{row.res_id}/_history/{cur.version}"
                out.append(
                    {
                        "response": {
                            "status": "200 OK",
                            "location": location,
                            "outcome": {
                                "resourceType": "OperationOutcome",
                                "issue": [
                                    Issue(
                                        "information",
                                        "duplicate",
                                        _t(
                                            "Déjà publié avec ce contenu : entrée existante",
                                            "Already published with this content: the existing entry",
                                        ),
                                    ).to_fhir()
                                ],
                            },
                        }
                    }
                )
            else:
                out.append({"response": {"status": "200 OK"}})
        return out

    def _replaced(self, repo: Repository, entries: list[dict[str, Any]], plan: Plan) -> list[str]:
        """Documents the submission replaces: known, of the same patient, current."""
        targets = []
        for i, pid in plan.documents.items():
            for n, rel in enumerate(entries[i]["resource"].get("relatesTo") or []):
                if not isinstance(rel, dict) or rel.get("code") != "replaces":
                    continue
                ref = str((rel.get("target") or {}).get("reference", ""))
                rid = ref.rstrip("/").split("/")[-1]
                where = f"Bundle.entry[{i}].resource.relatesTo[{n}]"
                try:
                    old = repo.read("DocumentReference", rid).resource()
                except CarnetError:
                    raise _problem(
                        f"Le document remplacé {ref} est inconnu",
                        f"The replaced document {ref} is not known",
                        where,
                        "not-found",
                    ) from None
                if (old.get("subject") or {}).get("reference") != f"Patient/{pid}":
                    raise NotFound(f"the replaced document {ref} is not known")  # another patient's: hidden
                if old.get("status") != "current":
                    raise Conflict(
                        _t(
                            f"Le document remplacé {ref} n'est plus courant ({old.get('status')})",
                            f"The replaced document {ref} is no longer current ({old.get('status')})",
                        )
                    )
                targets.append(rid)
        return targets

    # -- ITI-105 in the transaction -------------------------------------------------------------------
    def simplified_publish(
        self, router: FhirRouter, repo: Repository, request: FhirRequest, rid: str | None
    ) -> FhirResponse:

        if "mhd" not in request.context or not request.context.get("iti105"):
            raise _problem(
                "Un document se publie avec son contenu (ITI-105) : attachment.data",
                "A document is published with its content (ITI-105): attachment.data",
                "DocumentReference.content.attachment.data",
                "required",
            )
        bundle = request.body
        answered = self.process_bundle(router, repo, request, bundle)
        assert answered is not None
        assert isinstance(answered.body, dict)
        entry = answered.body["entry"][1]
        location = entry["response"].get("location", "")
        parts = location.split("/")
        # the publisher gets back what it published, whether or not it may read the record
        cur = _lookup(repo)._current("DocumentReference", parts[1]) if len(parts) >= 2 else None
        if cur is None:
            raise NotFound("the published document cannot be read back")
        resp = router.resource_response(
            cur,
            201 if entry["response"]["status"].startswith("201") else 200,
            router._prefer(request),
            location=True,
        )
        warnings = entry["response"].get("outcome")
        if warnings and router._prefer(request) == "OperationOutcome":
            resp.body = warnings
        elif warnings:
            resp.headers["Warning"] = (
                '199 carnet "'
                + "; ".join(str(x.get("diagnostics", "")).replace('"', "'") for x in warnings["issue"])
                + '"'
            )
        return resp
