"""The life of a published document after ITI-65: status changes, metadata updates, archiving,
logical deletion. Nothing here removes content: a clinical action never destroys a document.

- ``PATCH DocumentReference/{id}`` takes a JSON Patch or an MHD FHIRPath Patch (``Parameters``).
  Only the lifecycle metadata may change: ``status`` (current → superseded or entered-in-error),
  ``securityLabel`` (confidentiality, TRE_A07 visibility) and the archived flag. A status change is
  made in place (a new version of the resource). A change of securityLabel or of the archived flag
  is an XDS metadata update: a new entry (new id) with the same logical id (the ``official``
  identifier) and the same content, and the previous entry becomes ``superseded``; the producer's
  uniqueId then names the new entry.
- ``DELETE DocumentReference/{id}`` is a logical deletion, allowed to the document's author (and
  to the patient for a document they uploaded); the content stays in the store.
- Documents are never replaced wholesale (``PUT``), and content is immutable (``Binary`` accepts
  no write outside a publication).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import jsonpatch
from sqlalchemy import and_, select, update

from carnet.auth.principal import Kind
from carnet.db.tables import document_contents, document_unique_ids, idx_token, resources
from carnet.documents import valuesets
from carnet.errors import Conflict, Forbidden, Invalid, MethodNotAllowed, Unprocessable
from carnet.errors import bilingual as _t
from carnet.fhir import jsonio
from carnet.fhir.store import Repository, new_id

if TYPE_CHECKING:
    from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter

ARCHIVED = "urn:carnet:extension:archived"
MUTABLE = ("status", "securityLabel", "extension")
TRANSITIONS = {"current": {"superseded", "entered-in-error"}}



def set_status(repo: Repository, rid: str, status: str) -> None:
    """Change a document's status in place (a new version), e.g. superseded by a replacement."""
    current = repo.read("DocumentReference", rid)
    resource = current.resource()
    if resource.get("status") == status:
        return
    _check_transition(resource.get("status"), status)
    resource["status"] = status
    repo.update("DocumentReference", rid, resource, if_match=current.version, method="PATCH")


def _check_transition(old: Any, new: Any) -> None:
    if new not in TRANSITIONS.get(str(old), set()):
        raise Conflict(
            _t(
                f"Un document au statut « {old} » ne peut passer à « {new} »",
                f'A document with status "{old}" cannot become "{new}"',
            )
        )


def is_archived(resource: dict[str, Any]) -> bool:
    return any(
        isinstance(e, dict) and e.get("url") == ARCHIVED and e.get("valueBoolean") is True
        for e in resource.get("extension") or []
    )


def _fhirpath_patch(resource: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The subset of FHIRPath Patch that MHD's metadata updates use, on the mutable elements."""
    out = copy.deepcopy(resource)
    for n, op in enumerate(params.get("parameter") or []):
        where = f"Parameters.parameter[{n}]"
        if not isinstance(op, dict) or op.get("name") != "operation":
            raise Invalid(f"{where} is not an operation", expression=[where])
        parts = {p.get("name"): p for p in op.get("part") or [] if isinstance(p, dict)}
        kind = (parts.get("type") or {}).get("valueCode")
        path = (parts.get("path") or {}).get("valueString", "")
        value_part = parts.get("value") or {}
        value = next((v for k, v in value_part.items() if k.startswith("value")), None)
        element = path.removeprefix("DocumentReference.")
        if element not in ("status", "securityLabel") and not (
            kind == "add"
            and element == ""
            and (parts.get("name") or {}).get("valueString") == "securityLabel"
        ):
            raise Unprocessable(
                _t(
                    f"{path} n'est pas une métadonnée modifiable (status, securityLabel)",
                    f"{path} is not metadata that may change (status, securityLabel)",
                ),
                expression=[where],
            )
        if kind == "replace" and element == "status":
            out["status"] = value
        elif kind == "replace" and element == "securityLabel":
            out["securityLabel"] = [value] if isinstance(value, dict) else value
        elif kind == "add":
            out.setdefault("securityLabel", []).append(value)
        elif kind == "delete" and element == "securityLabel":
            out.pop("securityLabel", None)
        else:
            raise Unprocessable(f"FHIRPath Patch '{kind}' on {path} is not supported", expression=[where])
    return out


def _check_labels(resource: dict[str, Any]) -> None:
    for n, label in enumerate(resource.get("securityLabel") or []):
        for coding in (label or {}).get("coding") or [] if isinstance(label, dict) else []:
            code, system = coding.get("code"), coding.get("system")
            if not valuesets.is_visibility_code(code, system):
                valuesets.check_code(
                    "confidentiality", code, system, expression=f"DocumentReference.securityLabel[{n}]"
                )


class Lifecycle:
    def __init__(self, router: FhirRouter) -> None:
        self.router = router

    def patch(self, repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        assert rid is not None
        current = repo.read("DocumentReference", rid)
        resource = current.resource()
        who = repo.principal
        if who.kind == Kind.PRACTITIONER and not _may_delete(repo, resource):
            raise Forbidden(_t("Seul l'auteur d'un document en change le statut ou les métadonnées",
                               "Only a document's author changes its status or metadata"))
        body = req.body if not isinstance(req.body, bytes | str) else jsonio.loads(req.body or b"")
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            patched = _fhirpath_patch(resource, body)
        elif isinstance(body, list):
            try:
                patched = jsonpatch.apply_patch(resource, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
                raise Unprocessable(f"the patch cannot be applied: {exc}") from None
        else:
            raise Invalid("PATCH takes a JSON Patch or a FHIRPath Patch (Parameters)")
        changed = {
            k for k in set(resource) | set(patched) if k != "meta" and resource.get(k) != patched.get(k)
        }
        fixed = changed - set(MUTABLE)
        if fixed:
            raise Unprocessable(
                _t(
                    f"Seules les métadonnées de cycle de vie changent (status, securityLabel, archivage) ; "
                    f"pas {', '.join(sorted(fixed))}",
                    f"Only lifecycle metadata may change (status, securityLabel, archived flag); not "
                    f"{', '.join(sorted(fixed))}",
                ),
                expression=[f"DocumentReference.{k}" for k in sorted(fixed)],
            )
        if "extension" in changed:
            others = [
                e
                for e in patched.get("extension") or []
                if not (isinstance(e, dict) and e.get("url") == ARCHIVED)
            ]
            before = [
                e
                for e in resource.get("extension") or []
                if not (isinstance(e, dict) and e.get("url") == ARCHIVED)
            ]
            if others != before:
                raise Unprocessable(
                    "only the archived flag may change among the extensions",
                    expression=["DocumentReference.extension"],
                )
        from carnet.fhir.router import _version_from_etag

        if_match = _version_from_etag(req.headers.get("if-match"))
        if if_match is not None and if_match != current.version:
            from carnet.errors import PreconditionFailed

            raise PreconditionFailed(f"If-Match names version {if_match}, the current version is "
                                     f"{current.version}")
        prefer = self.router._prefer(req)
        if not changed:
            return self.router.resource_response(current, 200, prefer)
        if "status" in changed:
            if who.kind == Kind.PATIENT and not _may_delete(repo, resource):
                raise Forbidden(_t("Un patient masque ou démasque un document ; il n'en change pas le statut",
                                   "A patient masks or unmasks a document; they do not change its status"))
            _check_transition(resource.get("status"), patched.get("status"))
        if changed == {"status"}:
            stored, _ = repo.update(
                "DocumentReference", rid, patched, if_match=current.version, method="PATCH"
            )
            return self.router.resource_response(stored, 200, prefer)
        if resource.get("status") != "current":
            raise Conflict(
                _t(
                    "Seul un document courant change de métadonnées",
                    "Only a current document's metadata may change",
                )
            )
        _check_labels(patched)
        # An XDS metadata update: a new entry with the same logical id; the previous is superseded.
        new = dict(patched)
        new.pop("id", None)
        new.pop("meta", None)
        status = new.get("status", "current")
        new["status"] = "current"
        new_rid = new_id()
        created = repo.create(new, rid=new_rid, succeeds=repo.attributes_of("DocumentReference", rid))
        superseded = dict(resource)
        superseded["status"] = "superseded"
        repo.update("DocumentReference", rid, superseded, if_match=current.version, method="PATCH")
        # every earlier entry of the document is read under the new labels: masking a document
        # masks its history (entries share the official identifier a metadata update keeps)
        attrs = repo.attributes_of("DocumentReference", new_rid)
        if attrs is not None:
            earlier = {rid} | _entries_of(repo, new, attrs["patient_id"])
            earlier.discard(new_rid)
            repo.conn.execute(update(resources).where(
                resources.c.res_type == "DocumentReference", resources.c.res_id.in_(sorted(earlier)),
                resources.c.patient_id == attrs["patient_id"]).values(visibility=attrs["visibility"]))
        t = document_unique_ids.c
        repo.conn.execute(
            update(document_unique_ids).where(t.kind == "document", t.res_id == rid).values(res_id=new_rid)
        )
        if status != "current":
            set_status(repo, new_rid, status)
            created = repo.read("DocumentReference", new_rid)
        return self.router.resource_response(created, 200, prefer, location=True)

    def delete(self, repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        from carnet.fhir.router import FhirResponse

        assert rid is not None
        current = repo.read("DocumentReference", rid)
        resource = current.resource()
        if not _may_delete(repo, resource):
            raise Forbidden(
                _t("Seul l'auteur d'un document peut le supprimer", "Only a document's author may delete it")
            )
        repo.delete("DocumentReference", rid)
        return FhirResponse(204)

    def list_write(self, repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        """SubmissionSets are the record of a publication: created by ITI-65/105 only, never changed.
        Other Lists (Folders included) are plain resources."""
        from carnet.documents.mhd import is_submission_set

        if rid is None:  # POST List
            if is_submission_set(self.router._body(req)):
                raise Unprocessable(_t(
                    "Un SubmissionSet se crée par une publication (ITI-65 ou ITI-105)",
                    "A SubmissionSet is created by a publication (ITI-65 or ITI-105)"))
            return self.router.create(repo, "List", req)
        current = repo.conn.execute(select(resources.c.content).where(
            resources.c.res_type == "List", resources.c.res_id == rid, *repo.visible("List"))).first()
        if current is not None and current.content and is_submission_set(jsonio.loads(current.content)):
            raise MethodNotAllowed(_t("Un SubmissionSet ne se modifie pas : il atteste d'une publication",
                                      "A SubmissionSet cannot change: it records a publication"))
        return self.router.default_write(repo, "List", rid, req)

    @staticmethod
    def refuse_put(repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        raise MethodNotAllowed(
            _t(
                "Un document ne se remplace pas par PUT : publiez un remplaçant (relatesTo replaces) "
                "ou modifiez ses métadonnées par PATCH",
                "A document is not replaced by PUT: publish a replacement (relatesTo replaces) or change its "
                "metadata with PATCH",
            )
        )

    def binary_write(self, repo: Repository, req: FhirRequest, rid: str | None) -> FhirResponse:
        """Binaries that hold document content are immutable; other Binaries are plain resources."""

        assert rid is not None
        t = document_contents.c
        visible = repo._current("Binary", rid) is not None  # a hidden document's content is absent
        if not visible or repo.conn.execute(select(t.binary_id).where(t.binary_id == rid)).first() is None:
            return self.router.default_write(repo, "Binary", rid, req)
        raise MethodNotAllowed(
            _t(
                "Le contenu d'un document est immuable ; il se publie par ITI-65 ou ITI-105",
                "A document's content is immutable; it is published with ITI-65 or ITI-105",
            )
        )


def _entries_of(repo: Repository, resource: dict[str, Any], patient_id: str | None) -> set[str]:
    """Ids of the document's entries: the DocumentReferences of the record that carry its official
    identifier (one per metadata update)."""
    values = [i.get("value") for i in resource.get("identifier") or []
              if isinstance(i, dict) and i.get("use") == "official" and isinstance(i.get("value"), str)]
    if not values or patient_id is None:
        return set()
    t = idx_token.c
    r = resources.c
    rows = repo.conn.execute(select(t.res_id).select_from(idx_token.join(resources, and_(
        r.res_type == t.res_type, r.res_id == t.res_id))).where(
        t.res_type == "DocumentReference", t.param == "identifier", t.code.in_(values),
        r.patient_id == patient_id))
    return {row.res_id for row in rows}


def _may_delete(repo: Repository, resource: dict[str, Any]) -> bool:
    """The author (by national id or reference), the patient for their own uploads, or a system client."""
    who = repo.principal
    if who.kind in (Kind.SYSTEM, Kind.OPERATOR):
        return True
    authors = [a for a in resource.get("author") or [] if isinstance(a, dict)]
    if who.kind == Kind.PRACTITIONER:
        rid = resource.get("id")
        stored = repo.attributes_of("DocumentReference", str(rid)) if rid else None
        if who.fhir_user and stored is not None and stored.get("author") == who.fhir_user:
            return True  # the professional who published it
        return any(
            (a.get("identifier") or {}).get("value") == who.subject
            or (who.fhir_user is not None and str(a.get("reference", "")).endswith(who.fhir_user))
            for a in authors
        )
    if who.kind == Kind.PATIENT:
        subject = (resource.get("subject") or {}).get("reference")
        return subject is not None and any(a.get("reference") == subject for a in authors)
    return False
