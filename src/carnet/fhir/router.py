"""Transport-agnostic FHIR REST interactions.

``FhirRouter.handle(request, principal)`` answers one FHIR REST request; Bundles call
``dispatch`` for each entry inside their own transaction. Domain errors become OperationOutcome
responses in one place (:func:`error_response`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import orjson
from sqlalchemy import Connection, Engine, func, select

from carnet.audit import AuditRecord, AuditSink
from carnet.auth.principal import Principal
from carnet.blobs.errors import BadRange, CorruptBlob
from carnet.config import Settings
from carnet.db.engine import is_timeout, run_write
from carnet.db.tables import idx_reference, resources
from carnet.errors import (
    CarnetError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    Issue,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PreconditionFailed,
    SlowClient,
    TimedOut,
    TooLarge,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    bilingual,
)
from carnet.fhir import jsonio
from carnet.fhir.search import Compiler, Include, SearchRequest, integer_param, parse, target_filter
from carnet.fhir.searchparams import resource_types
from carnet.fhir.store import Repository, Stored, Validator, WriteHook, check_type
from carnet.fhir.values import http_date, instant_text, now_us
from carnet.policy import Policy

FHIR_JSON = "application/fhir+json"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
log = logging.getLogger("carnet.fhir")


@dataclass
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, without leading slash: "Patient/1/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # bytes from HTTP, or an already parsed resource inside a Bundle
    validated: bool = False  # the parsed body already passed validation
    context: dict[str, Any] = field(default_factory=dict)  # what prework prepared for the transaction


@dataclass
class FhirResponse:
    status: int
    body: Any = None  # a dict, bytes of JSON, or None
    headers: dict[str, str] = field(default_factory=dict)
    last_updated: int | None = None  # of the resource answered, for Bundle response entries
    stream: Iterator[bytes] | None = None  # raw content (Binary retrieval) instead of a FHIR body
    media_type: str | None = None  # the stream's content type

    def json_bytes(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return jsonio.dumps(self.body)


@dataclass(frozen=True)
class Operation:
    """A FHIR operation (``$name``) on a type (``Patient/$match``) or an instance
    (``Patient/{id}/$ins-verify``). ``handler(repo, request, rid)`` runs in the request's
    transaction; rid is None at type level."""

    name: str  # with its "$"
    resource_type: str
    instance: bool
    handler: Callable[[Repository, FhirRequest, str | None], FhirResponse]
    methods: tuple[str, ...] = ("POST",)
    description: str = ""
    definition: str = ""  # canonical URL of the OperationDefinition
    read_only: bool = False  # runs on the read path (a snapshot), even when POSTed


Handler = Callable[[Repository, FhirRequest, str | None], FhirResponse]
# prework(router, request, principal) -> request: CPU and storage work of a write, before its transaction
Prework = Callable[["FhirRouter", FhirRequest, Principal], FhirRequest]
# processor(router, repo, request, bundle) -> a response when it takes the transaction Bundle
BundleProcessor = Callable[["FhirRouter", Repository, FhirRequest, dict[str, Any]], "FhirResponse | None"]

STATUS: dict[type[CarnetError], int] = {
    BadRange: 416, CorruptBlob: 500,
    Invalid: 400, NotSupported: 400, Unprocessable: 422, NotFound: 404, Gone: 410,
    Forbidden: 403, Unauthenticated: 401, Conflict: 409, PreconditionFailed: 412,
    MethodNotAllowed: 405, TooLarge: 413, Unavailable: 503, SlowClient: 408, TimedOut: 503,
}


def status_of(exc: CarnetError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def error_response(exc: CarnetError) -> FhirResponse:
    return FhirResponse(status_of(exc), outcome(exc.issues))


def _version_from_etag(value: str | None) -> int | None:
    if not value:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    try:
        return int(text)
    except ValueError:
        raise PreconditionFailed(f"'{value}' is not a version ETag") from None


class FhirRouter:
    def __init__(self, settings: Settings, engine: Engine, *, policy: Policy | None = None,
                 audit: AuditSink | None = None, validator: Validator | None = None,
                 capability: Callable[[], dict[str, Any]] | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.policy = policy
        self.audit = audit
        self.validator = validator
        self.capability = capability
        self.base = settings.public_base_url + "/fhir"
        self.compiler = Compiler(self.base)
        self.operations: dict[tuple[str, bool, str], Operation] = {}
        self.hooks: dict[str, list[WriteHook]] = {}
        self.interactions: dict[tuple[str, str, bool], Handler] = {}
        self.searchers: dict[str, Handler] = {}  # types searched by a service of their own (AuditEvent)
        self.preworks: list[Prework] = []
        self.bundle_processors: list[BundleProcessor] = []
        self.reindexers: dict[str, list[Callable[[Repository, dict[str, Any]], None]]] = {}
        self.instantiates: list[str] = []  # canonical CapabilityStatements met (IHE actors)
        self.guides: list[str] = []  # implementation guides followed

    def add_interaction(self, method: str, resource_type: str, instance: bool, handler: Handler) -> None:
        """Take over one REST interaction of a type: ``POST DocumentReference`` (instance False),
        ``GET Binary/{id}`` (instance True). ``handler(repo, request, rid)`` runs where the default
        would, in the request's (or the Bundle's) transaction."""
        self.interactions[(method, resource_type, instance)] = handler

    def default_write(self, repo: Repository, resource_type: str, rid: str, req: FhirRequest) -> FhirResponse:
        """The engine's own PUT, PATCH or DELETE of an instance: for an interaction handler that
        lets a write through."""
        if req.method == "PUT":
            return self.update(repo, resource_type, rid, req)
        if req.method == "PATCH":
            return self.patch(repo, resource_type, rid, req)
        if req.method == "DELETE":
            repo.delete(resource_type, rid, if_match=_version_from_etag(req.headers.get("if-match")))
            return FhirResponse(204)
        raise MethodNotAllowed(f"{req.method} {resource_type}/{rid} is not a write")

    def add_reindexer(self, resource_type: str,
                      reindexer: Callable[[Repository, dict[str, Any]], None]) -> None:
        """``reindexer(repo, resource)`` rebuilds a service's own index of a stored resource (the
        identity match keys...) when ``carnet reindex`` runs."""
        self.reindexers.setdefault(resource_type, []).append(reindexer)

    def reindex(self, repo: Repository, resource: dict[str, Any]) -> None:
        repo.reindex(resource)
        for reindexer in self.reindexers.get(resource["resourceType"], ()):
            reindexer(repo, resource)

    def add_prework(self, prework: Prework) -> None:
        """``prework(router, request, principal)`` runs for every write once its body is parsed, before it
        queues for the database: the place for slow work (storing document content)."""
        self.preworks.append(prework)

    def add_bundle_processor(self, processor: BundleProcessor) -> None:
        """``processor(router, repo, request, bundle)`` sees every posted transaction Bundle first
        and may answer it (an IHE MHD Provide Document Bundle) or refuse it."""
        self.bundle_processors.append(processor)

    def add_operation(self, op: Operation) -> None:
        self.operations[(op.resource_type, op.instance, op.name)] = op

    def declared_operations(self) -> tuple[tuple[str, str, str, str], ...]:
        """(type, name, definition, documentation) of each operation, for the CapabilityStatement."""
        return tuple(sorted({(o.resource_type, o.name.lstrip("$"), o.definition, o.description)
                             for o in self.operations.values()}))

    def add_hook(self, resource_type: str, hook: WriteHook) -> None:
        """``hook(repo, resource, previous)`` runs before every create or update of the type, in
        the write's transaction: it may amend the resource or raise to refuse the write."""
        self.hooks.setdefault(resource_type, []).append(hook)

    # -- entry point --------------------------------------------------------------------------
    def handle(self, request: FhirRequest, principal: Principal,
               audit_later: list[dict[str, Any]] | None = None) -> FhirResponse:
        """Answer one request. The audit rows that are not written in its transaction (a SQLite
        read's, a refusal's) are written before this returns, or handed to ``audit_later`` for a
        caller that writes them itself before the response leaves (the HTTP layer, without
        holding a thread meanwhile)."""
        trail: list[dict[str, Any]] = []  # audit rows written after the transaction (see Repository)
        try:
            if request.method == "GET" and request.path == "metadata":
                if self.capability is None:
                    raise NotFound("no capability statement")
                return FhirResponse(200, self.capability())
            reads = request.method not in MUTATING or request.path.endswith("_search")
            if request.path.startswith("AuditEvent") and self.audit is not None:
                self.audit.flush()  # the trail as it stands, spooled reads included
            if reads or self._reads_only(request):
                with self.engine.connect() as conn, conn.begin():
                    return self.dispatch(self.repository(conn, principal, trail), request)
            request = self._prework(request, principal)
            # a single resource's write, which its work may change (ids, stamps): kept as it came
            # out of the prework, so that a try rolled back in a group commit starts afresh
            pristine = self._pristine(request)
            tries = [0]

            def work(conn: Connection) -> FhirResponse:
                del trail[:]  # a job run again after a failed batch starts afresh
                repo = self.repository(conn, principal, trail)
                req = request
                if tries[0] and pristine is not None:
                    req = replace(request, body=jsonio.loads(pristine))
                tries[0] += 1
                if req.method == "POST" and req.path == "":
                    from carnet.fhir.bundles import process_bundle

                    return process_bundle(self, repo, req)
                return self.dispatch(repo, req)

            return run_write(self.engine, work, rerunnable=pristine is not None)
        except CarnetError as exc:
            self.audit_failure(request, principal, status_of(exc), exc.message, trail)
            return error_response(exc)
        except Exception as exc:
            if not is_timeout(exc):
                self.audit_failure(request, principal, 500, "internal error", trail)
                raise
            # a statement ran past CARNET_STATEMENT_TIMEOUT_SECONDS: stopped, rolled back, said so
            log.warning("a statement of %s /fhir/%s ran past %s s and was stopped", request.method,
                        request.path, self.settings.statement_timeout_seconds)
            seconds = f"{self.settings.statement_timeout_seconds:g}"
            stopped = TimedOut(bilingual(
                f"la requête a demandé plus de {seconds} s de travail à la base de données et a été "
                "interrompue ; rien n'a été modifié (une recherche plus étroite répondra plus vite)",
                f"the request needed more than {seconds} s of database work and was stopped; nothing "
                "was changed (a narrower search will answer sooner)"))
            self.audit_failure(request, principal, 503, stopped.message, trail)
            return error_response(stopped)
        finally:
            if trail and self.audit is not None:
                if audit_later is not None:
                    audit_later.extend(trail)
                else:
                    self.audit.write(trail)

    def audit_failure(self, request: FhirRequest, principal: Principal, status: int, message: str,
                      trail: list[dict[str, Any]] | None = None) -> None:
        """Record a refused or failed request (its transaction, if any, was rolled back): which
        interaction on what, the outcome (4 for a request the client can mend, 8 refused, 12 a
        server failure) and, when the target is known, the record it belongs to."""
        if self.audit is None or (trail and any(row["outcome"] for row in trail)):
            return  # no trail kept, or the service recorded this failure itself, with what it knew
        interaction, rtype, rid = interaction_of(request)
        outcome = 12 if status >= 500 else 8 if status in (401, 403) else 4
        patient = None
        if rtype == "Patient" and rid:
            patient = rid
        elif rtype and rid and "\x00" not in rtype + rid:  # (PostgreSQL refuses NUL in text)
            with self.engine.connect() as conn:
                patient = conn.execute(select(resources.c.patient_id).where(
                    resources.c.res_type == rtype, resources.c.res_id == rid)).scalar()
        query = urlencode(request.query) if request.query else None
        entry = AuditRecord(interaction, outcome, rtype, (rid,) if rid else (), query,
                            entities=((rtype, rid, patient),) if rtype and rid else (), patient=patient,
                            message=message)
        rows: list[dict[str, Any]] = []
        self.audit.record(None, principal, entry, rows)
        if trail is None:
            self.audit.write(rows)
        else:
            trail.extend(rows)

    def _reads_only(self, request: FhirRequest) -> bool:
        """A POSTed operation that only reads (``Patient/$match``): no place in the writers' queue."""
        parts = [p for p in request.path.split("/") if p]
        if len(parts) not in (2, 3) or not parts[-1].startswith("$"):
            return False
        op = self.operations.get((parts[0], len(parts) == 3, parts[-1]))
        return op is not None and op.read_only

    def _prework(self, request: FhirRequest, principal: Principal) -> FhirRequest:
        """The CPU work of a write done before it queues for the database: parse the body and, for a
        single resource, validate it, so that the write slot holds only database work."""
        if not isinstance(request.body, bytes) or not request.body or request.path.endswith("_search"):
            return request
        body = self._body(request)
        if self.preworks:
            request = replace(request, body=body)
            for prework in self.preworks:
                request = prework(self, request, principal)
            body = request.body
        validated = False
        parts = [p for p in request.path.split("/") if p]
        if (self.validator is not None and isinstance(body, dict) and parts
                and body.get("resourceType") == parts[0] and parts[0] in resource_types()
                and ((request.method == "POST" and len(parts) == 1)
                     or (request.method == "PUT" and len(parts) == 2))):
            issues = self.validator(body)
            if any(i.severity in ("error", "fatal") for i in issues):
                raise Unprocessable(f"the {parts[0]} is not valid", issues=issues)
            validated = True
        return replace(request, body=body, validated=validated)

    @staticmethod
    def _pristine(request: FhirRequest) -> bytes | None:
        """The body of a create, update or patch of one resource, serialised (a few microseconds
        for the usual sizes), when nothing else of the request holds state its work could change;
        None for the rest (Bundles, operations, what a prework prepared), which is not run twice."""
        parts = [p for p in request.path.split("/") if p]
        body = request.body
        if request.context or not isinstance(body, dict) or body.get("resourceType") == "Bundle":
            return None
        if not ((request.method == "POST" and len(parts) == 1 and not parts[0].startswith("$"))
                or (request.method in ("PUT", "PATCH") and len(parts) == 2 and not parts[1].startswith("$"))):
            return None
        return jsonio.dumps(body)

    def repository(self, conn: Connection, principal: Principal,
                   trail: list[dict[str, Any]] | None = None) -> Repository:
        return Repository(conn, principal, policy=self.policy, audit=self.audit, validator=self.validator,
                          hooks=self.hooks, trail=trail)

    def _operation(self, repo: Repository, req: FhirRequest, rtype: str, rid: str | None,
                   name: str) -> FhirResponse:
        op = self.operations.get((rtype, rid is not None, name))
        if op is None:
            raise NotSupported(f"the operation {name} is not supported on {rtype}"
                               f"{'/{id}' if rid is not None else ''}")
        if req.method not in op.methods:
            raise MethodNotAllowed(f"{name} takes {' or '.join(op.methods)}")
        return op.handler(repo, req, rid)

    def dispatch(self, repo: Repository, req: FhirRequest) -> FhirResponse:
        if "\x00" in req.path:  # no type, id or operation holds it, and PostgreSQL refuses it in text
            raise Invalid(bilingual("le chemin contient le caractère NUL",
                                    "the path holds the NUL character"))
        parts = [p for p in req.path.split("/") if p]
        m = req.method
        if not parts:
            if m == "GET" and req.query:
                raise NotSupported("searching across all resource types is not supported")
            raise MethodNotAllowed(f"{m} is not supported on the FHIR base")
        if parts == ["_history"] and m == "GET":
            return self.history(repo, None, None, req)
        rtype = parts[0]
        check_type(rtype)
        n = len(parts)
        if n <= 2 and (parts[-1] if n == 2 else "")[:1] not in ("$", "_"):
            handler = self.interactions.get((m, rtype, n == 2))
            if handler is not None and (n == 2 or not req.query or m == "POST"):
                return handler(repo, req, parts[1] if n == 2 else None)
        if n == 1:
            if m == "GET":
                return self.search(repo, rtype, req.query, req)
            if m == "POST":
                return self.create(repo, rtype, req)
            if m in ("PUT", "PATCH", "DELETE"):
                return self.conditional(repo, rtype, req)
        elif n == 2 and parts[1].startswith("$"):
            return self._operation(repo, req, rtype, None, parts[1])
        elif n == 3 and parts[2].startswith("$"):
            return self._operation(repo, req, rtype, parts[1], parts[2])
        elif n == 2 and parts[1] == "_search" and m == "POST":
            return self.search(repo, rtype, req.query + _form(req.body), req)
        elif n == 2 and parts[1] == "_history" and m == "GET":
            return self.history(repo, rtype, None, req)
        elif n == 2:
            rid = parts[1]
            if m == "GET":
                return self.resource_response(repo.read(rtype, rid), 200)
            if m == "PUT":
                return self.update(repo, rtype, rid, req)
            if m == "PATCH":
                return self.patch(repo, rtype, rid, req)
            if m == "DELETE":
                repo.delete(rtype, rid, if_match=_version_from_etag(req.headers.get("if-match")))
                return FhirResponse(204)
        elif n == 3 and parts[2] == "_history" and m == "GET":
            return self.history(repo, rtype, parts[1], req)
        elif n == 4 and parts[2] == "_history" and m == "GET":
            try:
                version = int(parts[3])
                if abs(version) >= 2**63:  # no version is that large (and the databases' integers stop there)
                    raise ValueError
            except ValueError:
                raise NotFound(f"'{parts[3]}' is not a version of {rtype}/{parts[1]}") from None
            return self.resource_response(repo.vread(rtype, parts[1], version), 200)
        raise MethodNotAllowed(f"{m} /{req.path} is not a supported interaction")

    # -- responses ----------------------------------------------------------------------------
    def resource_response(self, stored: Stored, status: int, prefer: str | None = None,
                          location: bool = False) -> FhirResponse:
        headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}
        if location:
            headers["Location"] = f"{self.base}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
        body: Any = stored.content
        if prefer == "minimal":
            body = None
        elif prefer == "OperationOutcome":
            body = outcome([Issue("information", "informational",
                                  f"{stored.resource_type}/{stored.id} stored as version {stored.version}")])
        return FhirResponse(status, body, headers, stored.last_updated)

    @staticmethod
    def _prefer(req: FhirRequest) -> str | None:
        prefer = req.headers.get("prefer", "")
        for part in prefer.split(";"):
            key, _, value = part.strip().partition("=")
            if key == "return":
                return value.strip('"')
        return None

    def _body(self, req: FhirRequest) -> Any:
        if req.body is None or req.body == b"":
            raise Invalid("the request has no body")
        if isinstance(req.body, bytes | str):
            ctype = req.headers.get("content-type", "")
            if "xml" in ctype:
                from carnet.fhir.xml import parse_xml

                return parse_xml(req.body if isinstance(req.body, bytes) else req.body.encode())
            return jsonio.loads(req.body)
        return req.body

    # -- interactions -------------------------------------------------------------------------
    def create(self, repo: Repository, rtype: str, req: FhirRequest, rid: str | None = None) -> FhirResponse:
        resource = self._body(req)
        repo.prepare(resource, rtype, validated=req.validated)
        condition = req.headers.get("if-none-exist")
        if condition:
            found = self.match(repo, rtype, condition)
            if len(found) > 1:
                raise PreconditionFailed(f"If-None-Exist '{condition}' matches {len(found)} resources")
            if found:
                return self.resource_response(found[0], 200, self._prefer(req), location=True)
        resource.pop("id", None)
        stored = repo.create(resource, rid=rid, prepared=True)
        return self.resource_response(stored, 201, self._prefer(req), location=True)

    def update(self, repo: Repository, rtype: str, rid: str, req: FhirRequest) -> FhirResponse:
        resource = self._body(req)
        if isinstance(resource, dict) and "id" not in resource:
            raise Invalid("the resource in an update must carry its id", expression=[f"{rtype}.id"])
        stored, created = repo.update(rtype, rid, resource, validated=req.validated,
                                      if_match=_version_from_etag(req.headers.get("if-match")))
        return self.resource_response(stored, 201 if created else 200, self._prefer(req), location=created)

    def patch(self, repo: Repository, rtype: str, rid: str, req: FhirRequest) -> FhirResponse:
        ctype = req.headers.get("content-type", "")
        if "json-patch" not in ctype and not isinstance(req.body, list):
            raise NotSupported("PATCH takes a JSON Patch document (application/json-patch+json)")
        # the body is parsed already (a dict or a list) unless it came as bytes
        raw = req.body is None or isinstance(req.body, bytes | str)
        ops = jsonio.loads(req.body or b"") if raw else req.body
        if not isinstance(ops, list):
            raise Invalid("a JSON Patch document is an array of operations")
        current = repo.read(rtype, rid)
        if_match = _version_from_etag(req.headers.get("if-match"))
        if if_match is not None and if_match != current.version:
            raise PreconditionFailed(f"If-Match names version {if_match}, the current version is "
                                     f"{current.version}")
        try:
            patched = jsonpatch.apply_patch(current.resource(), ops)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise Unprocessable(f"the patch cannot be applied: {exc}") from None
        if not isinstance(patched, dict) or patched.get("id") != rid or patched.get("resourceType") != rtype:
            raise Unprocessable("a patch may not change the resource's type or id")
        stored, _ = repo.update(rtype, rid, patched, if_match=current.version, method="PATCH")
        return self.resource_response(stored, 200, self._prefer(req))

    def conditional(self, repo: Repository, rtype: str, req: FhirRequest) -> FhirResponse:
        if not req.query:
            raise MethodNotAllowed(f"{req.method} on a type needs search criteria")
        condition = urlencode(req.query)
        found = self.match(repo, rtype, condition)
        if len(found) > 1:
            raise PreconditionFailed(f"the criteria '{condition}' match {len(found)} resources")
        # Once the criteria name an instance, the instance's own interaction runs: a type whose
        # writes a domain governs (documents) is governed the same way whichever the URL.
        def instance(method: str, rid: str, body: Any) -> FhirResponse:
            sub = replace(req, method=method, path=f"{rtype}/{rid}", query=[], body=body)
            handler = self.interactions.get((method, rtype, True))
            if handler is not None:
                return handler(repo, sub, rid)
            if method == "PUT":
                return self.update(repo, rtype, rid, sub)
            if method == "PATCH":
                return self.patch(repo, rtype, rid, sub)
            repo.delete(rtype, rid)
            return FhirResponse(204)

        if req.method == "PUT":
            resource = self._body(req)
            if found:
                rid = found[0].id
                if isinstance(resource, dict) and resource.get("id") not in (None, rid):
                    raise Invalid(f"the body's id differs from the matched resource {rtype}/{rid}")
                if isinstance(resource, dict):
                    resource["id"] = rid
                return instance("PUT", rid, resource)
            if isinstance(resource, dict) and resource.get("id"):
                return instance("PUT", str(resource["id"]), resource)
            create = FhirRequest("POST", rtype, [], {
                k: v for k, v in req.headers.items() if k != "if-none-exist"}, resource)
            handler = self.interactions.get(("POST", rtype, False))
            return handler(repo, create, None) if handler is not None else self.create(repo, rtype, create)
        if req.method == "DELETE":
            for stored in found:
                instance("DELETE", stored.id, None)
            return FhirResponse(204)
        if not found:
            raise NotFound(f"no {rtype} matches '{condition}'")
        return instance("PATCH", found[0].id, req.body)

    def match(self, repo: Repository, rtype: str, condition: str) -> list[Stored]:
        """Resources of a type matching search criteria (for conditional interactions)."""
        with target_filter(repo.policy.target_filter(repo.principal)):
            return self._match(repo, rtype, condition)

    def _match(self, repo: Repository, rtype: str, condition: str) -> list[Stored]:
        if "?" in condition:  # "Patient?identifier=..." as well as "identifier=..."
            condition = condition.split("?", 1)[1]
        query = parse_qsl(condition, keep_blank_values=True)
        req = parse(rtype, query, default_count=2, max_count=2, max_terms=self.settings.max_search_terms)
        req.count = 2
        req.driver = self.choose_driver(repo, req)
        rows = repo.conn.execute(self.compiler.page(req, repo.visible(rtype))).all()
        return [Stored(rtype, r.res_id, r.version, r.last_updated, False, r.content) for r in rows]

    # -- search ---------------------------------------------------------------------------------
    def search(self, repo: Repository, rtype: str, query: list[tuple[str, str]],
               req: FhirRequest) -> FhirResponse:
        searcher = self.searchers.get(rtype)
        if searcher is not None:
            return searcher(repo, replace(req, query=query), None)
        with target_filter(repo.policy.target_filter(repo.principal)):
            return self._search(repo, rtype, query, req)

    def _search(self, repo: Repository, rtype: str, query: list[tuple[str, str]],
                req: FhirRequest) -> FhirResponse:
        sreq = parse(rtype, query, default_count=self.settings.default_page_size,
                     max_count=self.settings.max_page_size, max_terms=self.settings.max_search_terms)
        if sreq.snapshot is None:
            sreq.snapshot = now_us()
        visible = repo.visible(rtype)
        sreq.driver = self.choose_driver(repo, sreq)
        bundle: dict[str, Any] = {"resourceType": "Bundle", "id": _bundle_id(), "meta": {
            "lastUpdated": instant_text(now_us())}, "type": "searchset"}
        if sreq.summary == "count":
            bundle["total"] = repo.conn.execute(self.compiler.count(sreq, visible)).scalar_one()
            repo._record("search", rtype, (), query=urlencode(query), patient=_searched_patient(query))
            return FhirResponse(200, bundle)
        rows = self.compiler.page_rows(repo.conn, sreq, visible)
        has_next = len(rows) > sreq.count
        rows = rows[: sreq.count]
        total = None
        if sreq.total in ("accurate", "estimate"):
            total = repo.conn.execute(self.compiler.count(sreq, visible)).scalar_one()
        elif not has_next and sreq.total != "none":
            total = sreq.offset + len(rows)
        if total is not None:
            bundle["total"] = total
        bundle["link"] = self._links(rtype, query, sreq, has_next)
        matches = repo.present([Stored(rtype, r.res_id, r.version, r.last_updated, False, r.content,
                                       patient_id=r.patient_id) for r in rows])
        entries = [self._entry(s, "match", sreq) for s in matches]
        included, cut = self._includes(repo, matches, sreq.includes)
        entries.extend(self._entry(s, "include", sreq) for s in included)
        if cut:  # iteration stopped at CARNET_MAX_INCLUDE_DEPTH with more to follow: said in the Bundle
            depth = self.settings.max_include_depth
            entries.append({"resource": outcome([Issue("warning", "too-costly", bilingual(
                f"les inclusions itérées sont suivies sur {depth} niveaux ; celles au-delà manquent",
                f"iterated includes are followed {depth} levels deep; those beyond are missing"),
                ["_include:iterate"])]), "search": {"mode": "outcome"}})
        bundle["entry"] = entries
        shown = [*matches, *included]
        repo._record("search", rtype, tuple(s.id for s in shown), query=urlencode(query),
                     patients=[s.patient_id for s in shown], types=[s.resource_type for s in shown],
                     patient=_searched_patient(query) if not shown else None)
        return FhirResponse(200, bundle)

    PROBE_CAPS = (33, 1024)  # first round, then (only when every candidate reached it) a second

    def choose_driver(self, repo: Repository, sreq: SearchRequest) -> int | None:
        """The clause that should drive a search with several candidates, from how many rows each
        matches: one statement of bounded probes of their value indexes, a deeper second round only
        when every candidate matches more than the first cap. A family name shared by thousands
        must not drive when the birth date is shared by three. None keeps the static ranking
        (also on ties, which keep the static order)."""
        candidates = self.compiler.probe_candidates(sreq)
        if not candidates:
            return None
        # with a pair index for the criteria, only a rare criterion (first round) can beat it
        caps = self.PROBE_CAPS[:1] if self.compiler.pair_applies(sreq) else self.PROBE_CAPS
        for cap in caps:
            counts = repo.conn.execute(self.compiler.probes(sreq, candidates, cap)).one()
            smallest = min(range(len(candidates)), key=lambda k: counts[k])
            if counts[smallest] < cap:
                sreq.driver_rows = counts[smallest]
                return candidates[smallest]
        return None

    def _entry(self, s: Stored, mode: str, sreq: SearchRequest) -> dict[str, Any]:
        resource: Any = orjson.Fragment(s.content) if s.content is not None else None
        if sreq.summary in ("text", "data") or sreq.elements:
            resource = _subset(s.resource(), sreq)
        return {"fullUrl": f"{self.base}/{s.resource_type}/{s.id}", "resource": resource,
                "search": {"mode": mode}}

    def _links(self, rtype: str, query: list[tuple[str, str]], sreq: SearchRequest,
               has_next: bool) -> list[dict[str, str]]:
        base_q = [(k, v) for k, v in query if k not in ("_offset", "_snapshot", "_count")]

        def url(offset: int) -> str:
            q = [*base_q, ("_count", str(sreq.count)), ("_offset", str(offset)),
                 ("_snapshot", str(sreq.snapshot))]
            return f"{self.base}/{rtype}?{urlencode(q)}"

        links = [{"relation": "self", "url": url(sreq.offset)}, {"relation": "first", "url": url(0)}]
        if has_next:
            links.append({"relation": "next", "url": url(sreq.offset + sreq.count)})
        if sreq.offset > 0:
            links.append({"relation": "previous", "url": url(max(sreq.offset - sreq.count, 0))})
        return links

    def _includes(self, repo: Repository, matches: list[Stored],
                  includes: list[Include]) -> tuple[list[Stored], bool]:
        """The resources the includes add, and whether iterating stopped at the depth limit with more
        to follow. Refused (422) beyond CARNET_MAX_INCLUDE_RESOURCES: every key query reads at most
        one row past what the limit allows."""
        if not includes or not matches:
            return [], False
        cap = self.settings.max_include_resources
        seen = {(s.resource_type, s.id) for s in matches}
        frontier = list(matches)
        out: list[Stored] = []
        depth = 0
        while frontier and depth < self.settings.max_include_depth:
            new_keys = self._new_keys(repo, frontier, includes, depth, seen, cap - len(out))
            found = repo.read_many(new_keys)
            seen.update(new_keys)
            out.extend(found)
            frontier = found
            depth += 1
        cut = bool(frontier) and any(inc.iterate for inc in includes) and bool(  # visible ones only
            repo.read_many(self._new_keys(repo, frontier, includes, depth, seen, 0, probe=True)))
        return repo.present(out), cut

    def _new_keys(self, repo: Repository, frontier: list[Stored], includes: list[Include], depth: int,
                  seen: set[tuple[str, str]], room: int, probe: bool = False) -> list[tuple[str, str]]:
        """The keys one more level of includes reaches that are not ``seen``; refused when more than
        ``room`` (a ``probe`` only asks whether there is any)."""
        limit = len(seen) + room + 1  # distinct keys read: past it, more than ``room`` are new
        keys: list[tuple[str, str]] = []
        for inc in includes:
            if depth > 0 and not inc.iterate:
                continue
            keys.extend(self._include_keys(repo, frontier, inc, limit))
        new_keys = [k for k in dict.fromkeys(keys) if k not in seen]
        if len(new_keys) > room and not probe:
            cap = self.settings.max_include_resources
            message = bilingual(
                f"les inclusions (_include, _revinclude) ajouteraient plus de {cap} ressources ; "
                "une recherche plus étroite, ou paginée sans inclusion, répondra",
                f"the includes (_include, _revinclude) would add more than {cap} resources; a narrower "
                "search, or a paged one without includes, will answer")
            raise Unprocessable(message, issues=[Issue("error", "too-costly", message, ["_include"])])
        return new_keys

    def _include_keys(self, repo: Repository, frontier: list[Stored], inc: Include,
                      limit: int) -> list[tuple[str, str]]:
        """The (type, id) an include reaches from ``frontier``: only resources the caller may read
        (joined to ``resources`` under the read predicates), so that neither the limit nor its
        refusal counts what is hidden."""
        t = idx_reference.c
        keys: list[tuple[str, str]] = []
        if not inc.reverse:
            ids = [s.id for s in frontier if s.resource_type == inc.source_type or inc.param == "*"]
            if not ids:
                return []
            where = [t.res_id.in_(ids), t.target_id.is_not(None),
                     t.res_type.in_({s.resource_type for s in frontier}) if inc.param == "*"
                     else t.res_type == inc.source_type]
            if inc.param != "*":
                where.append(t.param == inc.param)
            targets = [inc.target_type] if inc.target_type else list(repo.conn.execute(
                select(t.target_type).where(*where, t.target_type.is_not(None)).distinct()).scalars())
            for target in targets:
                keys += _readable_ends(repo, where, t.target_type, t.target_id, target, limit)
        else:
            by_type: dict[str, list[str]] = {}
            for s in frontier:
                by_type.setdefault(s.resource_type, []).append(s.id)
            for target_type, ids in by_type.items():
                where = [t.target_type == target_type, t.target_id.in_(ids)]
                if inc.param != "*":
                    where += [t.res_type == inc.source_type, t.param == inc.param]
                sources = [inc.source_type] if inc.param != "*" else list(repo.conn.execute(
                    select(t.res_type).where(*where).distinct()).scalars())
                for source in sources:
                    keys += _readable_ends(repo, where, t.res_type, t.res_id, source, limit)
        return keys

    # -- history ----------------------------------------------------------------------------------
    def history(self, repo: Repository, rtype: str | None, rid: str | None, req: FhirRequest) -> FhirResponse:
        q = dict(req.query)
        count = self.settings.default_page_size
        if "_count" in q:
            count = integer_param("_count", q["_count"])
        count = min(count, self.settings.max_page_size)
        offset = integer_param("_offset", q["_offset"]) if "_offset" in q else 0
        snapshot = integer_param("_snapshot", q["_snapshot"]) if "_snapshot" in q else now_us()
        since = _instant_param(q.get("_since"), "_since")
        at = _instant_param(q.get("_at"), "_at", upper=True)
        items, fetched = repo.history(rtype, rid, since=since, at=at, count=count, offset=offset,
                                      snapshot=snapshot)
        path = "/".join(p for p in (rtype, rid) if p) + ("/_history" if rtype else "_history")
        base_q = [(k, v) for k, v in req.query if k not in ("_offset", "_snapshot", "_count")]

        def url(off: int) -> str:
            return f"{self.base}/{path}?" + urlencode(
                [*base_q, ("_count", str(count)), ("_offset", str(off)), ("_snapshot", str(snapshot))])

        links = [{"relation": "self", "url": url(offset)}]
        if fetched > count:
            links.append({"relation": "next", "url": url(offset + count)})
        if offset > 0:
            links.append({"relation": "previous", "url": url(max(offset - count, 0))})
        entries = []
        for s in items:
            entry: dict[str, Any] = {"fullUrl": f"{self.base}/{s.resource_type}/{s.id}"}
            if s.content is not None:
                entry["resource"] = orjson.Fragment(s.content)
            method = s.method or "PUT"
            url_part = s.resource_type if method == "POST" else f"{s.resource_type}/{s.id}"
            entry["request"] = {"method": method, "url": url_part}
            entry["response"] = {"status": "201" if method == "POST" else "204" if s.deleted else "200",
                                 "etag": s.etag, "lastModified": instant_text(s.last_updated)}
            entries.append(entry)
        bundle: dict[str, Any] = {"resourceType": "Bundle", "id": _bundle_id(), "type": "history",
                                  "link": links, "entry": entries}
        if fetched <= count:
            bundle["total"] = offset + len(items)
        return FhirResponse(200, bundle)

    def counts(self) -> dict[str, int]:
        """Current resources per type (for operators and tests)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(resources.c.res_type, func.count())
                                .where(resources.c.deleted.is_(False)).group_by(resources.c.res_type))
            return {r[0]: r[1] for r in rows}


def _instant_param(value: str | None, name: str, upper: bool = False) -> int | None:
    if value is None:
        return None
    from carnet.fhir.values import date_range

    rng = date_range(value)
    if rng is None:
        raise Invalid(f"{name} must be a date or instant, not '{value}'", expression=[name])
    return rng[1] if upper else rng[0]


def _bundle_id() -> str:
    from carnet.fhir.store import new_id

    return new_id()


def interaction_of(request: FhirRequest) -> tuple[str, str | None, str | None]:
    """(interaction, resource type, id) that a request asks for, as the audit trail names it."""
    parts = [p for p in request.path.split("/") if p]
    m = request.method
    rtype = parts[0] if parts and not parts[0].startswith(("$", "_")) else None
    rid = parts[1] if len(parts) >= 2 and not parts[1].startswith(("$", "_")) else None
    if parts and parts[-1].startswith("$"):
        return parts[-1][1:], rtype, rid
    if not parts:
        return ("transaction" if m == "POST" else "search"), None, None
    if "_history" in parts:
        return ("vread" if len(parts) == 4 else "history"), rtype, rid
    if len(parts) == 2 and parts[1] == "_search":
        return "search", rtype, None
    if m == "GET":
        return ("read" if rid else "search"), rtype, rid
    named = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return named.get(m, m.lower()), rtype, rid


def _searched_patient(query: list[tuple[str, str]]) -> str | None:
    """The record a search that found nothing was about (``patient=<id>``, ``subject=Patient/<id>``):
    the patient sees that someone looked, even when nothing was there or shown."""
    for name, value in query:
        if name.split(":", 1)[0] in ("patient", "subject"):
            ref = value.split(",", 1)[0]
            if ref.startswith("Patient/"):
                ref = ref[8:]
            if ref and "/" not in ref and "|" not in ref:
                return ref
    return None


def _form(body: Any) -> list[tuple[str, str]]:
    if not body:
        return []
    text = body.decode() if isinstance(body, bytes) else str(body)
    return parse_qsl(text, keep_blank_values=True)


_SUMMARY_KEEP = {"resourceType", "id", "meta"}


def _subset(resource: dict[str, Any], sreq: SearchRequest) -> dict[str, Any]:
    if sreq.summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif sreq.summary == "text":
        out = {k: v for k, v in resource.items() if k in _SUMMARY_KEEP or k == "text"}
    else:
        keep = _SUMMARY_KEEP | {e.split(".")[0] for e in sreq.elements}
        out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(out.get("meta") or {})
    tags = list(meta.get("tag") or [])
    tags.append({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                 "code": "SUBSETTED", "display": "subsetted"})
    meta["tag"] = tags
    out["meta"] = meta
    return out


def _readable_ends(repo: Repository, where: list[Any], type_col: Any, id_col: Any, rtype: str,
                   limit: int) -> list[tuple[str, str]]:
    """The distinct (type, id) at one end of the reference rows matching ``where`` (the target for
    ``_include``, the source for ``_revinclude``) that name a live resource of ``rtype`` the caller
    may read, at most ``limit``."""
    r = resources.c
    stmt = (select(type_col, id_col)
            .select_from(idx_reference.join(resources, (r.res_type == type_col) & (r.res_id == id_col)))
            .where(*where, type_col == rtype, r.deleted.is_(False), *repo.visible(rtype)))
    return [(row[0], row[1]) for row in repo.conn.execute(stmt.distinct().limit(limit))]
