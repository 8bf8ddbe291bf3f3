"""The resource store: versioned FHIR resources and their search index, over one connection.

A :class:`Repository` is bound to a connection (the unit of work of one request or one Bundle)
and to the caller's :class:`Principal`. Every read goes through :meth:`Repository._visible`, where
the policy's predicates attach; every change is checked by the policy and recorded by the audit
sink in the same transaction.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, delete, insert, select, update

from carnet.audit import AuditRecord, AuditSink, NoAudit
from carnet.auth.principal import Principal
from carnet.db.driver import DriverStatement
from carnet.db.tables import INDEX_TABLES, resource_versions, resources
from carnet.errors import Conflict, Gone, Invalid, NotFound, PreconditionFailed, Unprocessable
from carnet.fhir import jsonio
from carnet.fhir.indexer import index_rows, patient_of
from carnet.fhir.searchparams import params_for, resource_types
from carnet.fhir.values import instant_text, now_us
from carnet.policy import OpenPolicy, Policy
from carnet.policy.attributes import NO_ATTRIBUTES, binary_ids, document_attributes, security_context

Validator = Callable[[dict[str, Any]], list[Any]]
# hook(repo, resource, previous): before a create (previous None) or an update of the resource's type
WriteHook = Callable[["Repository", dict[str, Any], dict[str, Any] | None], None]

# Statements built once: SQLAlchemy then only binds parameters on the hot write path.
# (the hottest run on the driver's cursor: carnet.db.driver)
INSERT_RESOURCE = DriverStatement(insert(resources), [c.name for c in resources.columns])
INSERT_VERSION = DriverStatement(insert(resource_versions),
                                 [c.name for c in resource_versions.columns if c.name != "seq"])
INSERT_INDEX = {kind: DriverStatement(insert(table), [c.name for c in table.columns])
                for kind, table in INDEX_TABLES.items()}
INSERTS = {"resources": INSERT_RESOURCE, "versions": INSERT_VERSION, **INSERT_INDEX}
SELECT_CURRENT = select(resources.c.version, resources.c.last_updated, resources.c.deleted,
                        resources.c.content, resources.c.patient_id).where(
    resources.c.res_type == bindparam("rt"), resources.c.res_id == bindparam("rid"))
# (id of a policy predicate, dialect) -> (the predicate, its compiled read by id, the SQL text)
_FILTERED_READS: dict[tuple[int, str], tuple[Any, Any, str]] = {}
_KEY_COLUMNS = ("res_type", "res_id", "param")  # never null: plain equality, which an index serves
DELETE_INDEX_ROW = {
    kind: DriverStatement(delete(table).where(
        *(table.c[name] == bindparam(name) for name in _KEY_COLUMNS),
        *(c.is_not_distinct_from(bindparam(c.name)) for c in table.columns if c.name not in _KEY_COLUMNS)))
    for kind, table in INDEX_TABLES.items()}
SELECT_INDEX_ROWS = {
    kind: DriverStatement(select(*table.c).where(table.c.res_type == bindparam("rt"),
                                                 table.c.res_id == bindparam("rid")))
    for kind, table in INDEX_TABLES.items()}
_INDEX_KINDS: dict[str, frozenset[str]] = {}  # resource type -> the index tables its parameters use
_UPDATE_COLUMNS = (resources.c.version, resources.c.deleted, resources.c.created_at, resources.c.patient_id,
                   resources.c.doc_type, resources.c.visibility, resources.c.author)
# the current row an update replaces, when no read predicate applies (with its content, for hooks)
SELECT_FOR_UPDATE = {
    with_content: select(*_UPDATE_COLUMNS, *((resources.c.content,) if with_content else ())).where(
        resources.c.res_type == bindparam("rt"), resources.c.res_id == bindparam("rid"))
    for with_content in (False, True)}
UPDATE_CURRENT = DriverStatement(update(resources).where(
    resources.c.res_type == bindparam("rt"), resources.c.res_id == bindparam("rid"),
    resources.c.version == bindparam("expected")).values(
    version=bindparam("v"), last_updated=bindparam("when"), deleted=False, patient_id=bindparam("pid"),
    content=bindparam("body"), doc_type=bindparam("dt"), visibility=bindparam("vis"), author=bindparam("au")))


def index_kinds(rtype: str) -> frozenset[str]:
    kinds = _INDEX_KINDS.get(rtype)
    if kinds is None:
        kinds = _INDEX_KINDS[rtype] = frozenset(p.type for p in params_for(rtype).values())
    return kinds


@dataclass(frozen=True)
class Stored:
    resource_type: str
    id: str
    version: int
    last_updated: int
    deleted: bool
    content: bytes | None
    method: str | None = None
    patient_id: str | None = None  # the record it belongs to (the audit trail names it)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def resource(self) -> dict[str, Any]:
        assert self.content is not None
        parsed: dict[str, Any] = jsonio.loads(self.content)
        return parsed


def new_id() -> str:
    """A server id: a UUID in the version 7 layout (RFC 9562) — 48 bits of milliseconds, then 74
    random bits. As unguessable as a random UUID for anyone who does not hold it, and ids made one
    after another sort together, so every index keyed by id grows at its end instead of touching a
    random page per write."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = ((ms & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
             | 0b10 << 62 | rand & (1 << 62) - 1)
    return str(uuid.UUID(int=value))


def check_type(resource_type: str) -> None:
    if resource_type not in resource_types():
        raise NotFound(f"unknown resource type '{resource_type}'")


class Repository:
    def __init__(self, conn: Connection, principal: Principal, *, policy: Policy | None = None,
                 audit: AuditSink | None = None, validator: Validator | None = None,
                 hooks: Mapping[str, list[WriteHook]] | None = None,
                 trail: list[dict[str, Any]] | None = None) -> None:
        self.conn = conn
        self.principal = principal
        self.policy = policy or OpenPolicy()
        self.audit = audit or NoAudit()
        self.validator = validator
        self.hooks = hooks or {}
        self.deferred: dict[str, list[dict[str, Any]]] | None = None
        # audit rows to write once the transaction is over (denials; reads on SQLite, whose read
        # transactions hold no write lock): the router writes them before the response leaves
        self.trail: list[dict[str, Any]] | None = trail

    def acting_on_whole_records(self) -> Repository:
        """The same transaction and hooks for an operator action that must reach every resource of
        a record (an identity merge moves each reference): reads and writes unfiltered, under a
        system principal named after the operator. Only for actions the caller was allowed to start."""
        self.flush()
        who = Principal.system(f"operator:{self.principal.subject}")
        return Repository(self.conn, who, policy=self.policy, audit=self.audit, validator=self.validator,
                          hooks=self.hooks, trail=self.trail)

    def as_system(self) -> Repository:
        """A view of the same transaction that the read policy does not filter, for the lookups a
        write needs whatever the caller may read (the record a professional feeds without reading
        it). Reads only: it records nothing and writes nothing."""
        self.flush()
        return Repository(self.conn, Principal.system("carnet-internal"), policy=self.policy,
                          validator=self.validator, hooks=self.hooks)

    # -- batched inserts: a transaction Bundle writes its new resources in a few statements --------
    def defer_inserts(self) -> None:
        """From now on, rows of created resources are queued and written by :meth:`flush`, which
        every read runs first, so the transaction still reads its own writes."""
        if self.deferred is None:
            self.deferred = {}

    def flush(self) -> None:
        if not self.deferred:
            return
        pending, self.deferred = self.deferred, {}
        for key, rows in pending.items():
            if rows:
                INSERTS[key].executemany(self.conn, rows)

    def _insert(self, key: str, rows: list[dict[str, Any]]) -> None:
        if self.deferred is not None:
            self.deferred.setdefault(key, []).extend(rows)
        elif rows:
            INSERTS[key].executemany(self.conn, rows)

    # -- the one place where read predicates attach --------------------------------------------
    def visible(self, resource_type: str | None, table: Any = resources) -> list[ColumnElement[bool]]:
        self.flush()  # every read asks for its predicates first: it must see queued writes
        extra = self.policy.read_filter(self.principal, resource_type, table)
        return [extra] if extra is not None else []

    def present(self, found: list[Stored]) -> list[Stored]:
        """What the caller is shown of resources it may read: a List (a SubmissionSet, a Folder)
        loses the entries that point at what the caller may not read, so that a masked
        document's id does not show through the list that published it."""
        if not any(s.resource_type == "List" and s.content for s in found):
            return found
        if self.policy.read_filter(self.principal, "DocumentReference", resources) is None:
            return found
        out = []
        for s in found:
            if s.resource_type != "List" or not s.content:
                out.append(s)
                continue
            resource = s.resource()
            entries = [e for e in resource.get("entry") or [] if isinstance(e, dict)]
            targets = [ref.split("/")[-2:] for e in entries
                       if isinstance(ref := (e.get("item") or {}).get("reference"), str) and "/" in ref]
            keys = [(t[0], t[1]) for t in targets if len(t) == 2]
            seen = {(x.resource_type, x.id) for x in self.read_many(keys)}
            wanted = set(keys)
            kept = [e for e in entries if not (isinstance(ref := (e.get("item") or {}).get("reference"), str)
                                                and tuple(ref.split("/")[-2:]) in wanted
                                                and tuple(ref.split("/")[-2:]) not in seen)]
            if len(kept) == len(entries):
                out.append(s)
                continue
            if kept:
                resource["entry"] = kept
            else:  # no "withheld" reason: that would say something is there
                resource.pop("entry", None)
            out.append(replace(s, content=jsonio.dumps(resource)))
        return out

    def _record(self, interaction: str, resource_type: str | None, ids: tuple[str, ...] = (),
                outcome: int = 0, query: str | None = None, *,
                patients: Sequence[str | None] | None = None, patient: str | None = None,
                message: str | None = None, types: Sequence[str] | None = None) -> None:
        """Write the AuditEvent(s) of what this transaction did: ``patients`` (aligned with
        ``ids``) says whose record each resource is in; a Patient is its own record. ``types``,
        aligned with ids too, when they are not all ``resource_type``."""
        if patients is None:
            patients = ids if resource_type == "Patient" and types is None else (None,) * len(ids)
        kinds = types or (resource_type or "",) * len(ids)
        entities = tuple(zip(kinds, ids, patients, strict=True))
        self.audit.record(self.conn, self.principal,
                          AuditRecord(interaction, outcome, resource_type, ids, query, entities=entities,
                                      patient=patient, message=message), self.trail)

    # -- reads --------------------------------------------------------------------------------
    def _current(self, resource_type: str, rid: str) -> Stored | None:
        visible = self.visible(resource_type)
        if visible:
            row = self._current_filtered(visible[0], resource_type, rid)
        else:  # no policy predicate: the statement built once
            row = self.conn.execute(SELECT_CURRENT, {"rt": resource_type, "rid": rid}).first()
        if row is None:
            return None
        return Stored(resource_type, rid, row.version, row.last_updated, bool(row.deleted), row.content,
                      patient_id=row.patient_id)

    def _current_filtered(self, predicate: ColumnElement[bool], resource_type: str, rid: str) -> Any:
        """The read by id under a policy predicate, on the hot path of every professional's read:
        the policy hands out the same predicate object for the same caller, so the statement is
        compiled once per predicate and run as its SQL text (SQLAlchemy would otherwise rebuild
        and re-key it on each read)."""
        dialect = self.conn.dialect
        key = (id(predicate), dialect.name)
        entry = _FILTERED_READS.get(key)
        if entry is None or entry[0] is not predicate:
            t = resources.c
            stmt = select(t.version, t.last_updated, t.deleted, t.content, t.patient_id).where(
                t.res_type == bindparam("rt"), t.res_id == bindparam("rid"), predicate)
            compiled = stmt.compile(dialect=dialect)
            if len(_FILTERED_READS) > 4096:
                _FILTERED_READS.clear()
            entry = (predicate, compiled, str(compiled))
            _FILTERED_READS[key] = entry
        _, compiled, sql = entry
        params = compiled.construct_params({"rt": resource_type, "rid": rid})
        if compiled.positional:
            return self.conn.exec_driver_sql(sql, tuple(params[name] for name in compiled.positiontup or ())
                                             ).first()
        return self.conn.exec_driver_sql(sql, params).first()

    def read(self, resource_type: str, rid: str) -> Stored:
        check_type(resource_type)
        cur = self._current(resource_type, rid)
        if cur is None:
            raise NotFound(f"{resource_type}/{rid} is not known")
        if cur.deleted:
            raise Gone(f"{resource_type}/{rid} was deleted")
        self._record("read", resource_type, (rid,), patients=(cur.patient_id,))
        return self.present([cur])[0]

    def vread(self, resource_type: str, rid: str, version: int) -> Stored:
        check_type(resource_type)
        t = resource_versions.c
        row = self.conn.execute(
            select(t.version, t.last_updated, t.content, t.patient_id)
            .where(t.res_type == resource_type, t.res_id == rid, t.version == version,
                   *self.visible(resource_type, resource_versions))
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{rid}/_history/{version} is not known")
        if row.content is None:
            raise Gone(f"{resource_type}/{rid} version {version} is a deletion")
        self._record("vread", resource_type, (rid,), patients=(row.patient_id,))
        found = Stored(resource_type, rid, row.version, row.last_updated, False, row.content,
                       patient_id=row.patient_id)
        return self.present([found])[0]

    def read_many(self, keys: list[tuple[str, str]]) -> list[Stored]:
        """Current, non-deleted, visible resources for (type, id) pairs, in the order given."""
        if not keys:
            return []
        t = resources.c
        found: dict[tuple[str, str], Stored] = {}
        by_type: dict[str, list[str]] = {}
        for rtype, rid in keys:
            by_type.setdefault(rtype, []).append(rid)
        for rtype, ids in by_type.items():
            for chunk in range(0, len(ids), 500):
                rows = self.conn.execute(
                    select(t.res_id, t.version, t.last_updated, t.content, t.patient_id)
                    .where(t.res_type == rtype, t.res_id.in_(ids[chunk:chunk + 500]),
                           t.deleted.is_(False), *self.visible(rtype))
                )
                for r in rows:
                    found[(rtype, r.res_id)] = Stored(rtype, r.res_id, r.version, r.last_updated,
                                                      False, r.content, patient_id=r.patient_id)
        return [found[k] for k in dict.fromkeys(keys) if k in found]

    # -- writes -------------------------------------------------------------------------------
    def prepare(self, resource: Any, resource_type: str | None = None, *,
                validated: bool = False) -> dict[str, Any]:
        """Check a resource body: a JSON object of a known type that passes validation (already
        done by the caller when ``validated``)."""
        if not isinstance(resource, dict):
            raise Invalid("the body must be a JSON object holding a FHIR resource")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            raise Invalid("the resource has no resourceType", expression=["resourceType"])
        if resource_type is not None and rtype != resource_type:
            raise Invalid(f"the body is a {rtype}, the URL names {resource_type}",
                          expression=["resourceType"])
        if rtype not in resource_types():
            raise Unprocessable(f"'{rtype}' is not a FHIR R4 resource type", expression=["resourceType"])
        if self.validator is not None and not validated:
            issues = self.validator(resource)
            if any(i.severity in ("error", "fatal") for i in issues):
                raise Unprocessable(f"the {rtype} is not valid", issues=issues)
        return resource

    def _stamp(self, resource: dict[str, Any], rid: str, version: int, when: int) -> bytes:
        resource["id"] = rid
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant_text(when)
        resource["meta"] = meta
        return jsonio.dumps(resource)

    def _write_index(self, resource: dict[str, Any], replace: bool) -> str | None:
        rtype, rid = resource["resourceType"], resource["id"]
        rows = index_rows(resource)
        if replace:
            self.flush()
            self._reindex(rtype, rid, rows)
        else:
            for kind, batch in rows.items():
                self._insert(kind, batch)
        return patient_of(resource, rows)

    def _reindex(self, rtype: str, rid: str, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Bring a resource's index rows to ``rows`` touching only those that changed: an update
        usually changes a few values, and every row rewritten costs pages in each index."""
        for kind in sorted(index_kinds(rtype) | rows.keys()):
            names = [c.name for c in INDEX_TABLES[kind].columns]
            stored = Counter(tuple(r) for r in SELECT_INDEX_ROWS[kind].execute(
                self.conn, {"rt": rtype, "rid": rid}).fetchall())
            wanted = Counter(tuple(row.get(n) for n in names) for row in rows.get(kind, ()))
            gone = [dict(zip(names, row, strict=True)) for row in (stored - wanted).elements()]
            if gone:
                DELETE_INDEX_ROW[kind].executemany(self.conn, gone)
            added = [dict(zip(names, row, strict=True)) for row in (wanted - stored).elements()]
            if added:
                INSERT_INDEX[kind].executemany(self.conn, added)

    def reindex(self, resource: dict[str, Any]) -> None:
        """Bring a stored resource's search index (and compartment) up to date with the current
        definitions, without a new version: after a change of search parameters or indexing."""
        rtype, rid = resource["resourceType"], resource["id"]
        rows = index_rows(resource)
        self.flush()
        self._reindex(rtype, rid, rows)
        t = resources.c
        self.conn.execute(update(resources).where(t.res_type == rtype, t.res_id == rid)
                          .values(patient_id=patient_of(resource, rows)))

    def _clear_index(self, rtype: str, rid: str) -> None:
        for kind in index_kinds(rtype):
            table = INDEX_TABLES[kind]
            self.conn.execute(delete(table).where(table.c.res_type == rtype, table.c.res_id == rid))

    def attributes_of(self, resource_type: str, rid: str) -> dict[str, Any] | None:
        """A stored row's access attributes and patient (unfiltered: for the write path)."""
        self.flush()
        t = resources.c
        row = self.conn.execute(select(t.patient_id, t.doc_type, t.visibility, t.author).where(
            t.res_type == resource_type, t.res_id == rid)).first()
        return None if row is None else {"patient_id": row.patient_id, "doc_type": row.doc_type,
                                         "visibility": row.visibility, "author": row.author}

    def create(self, resource: dict[str, Any], *, rid: str | None = None, prepared: bool = False,
               succeeds: dict[str, Any] | None = None) -> Stored:
        """``succeeds``: the access attributes of the entry this one replaces (a metadata update
        makes a new entry): visibility rules then judge the change against it."""
        if not prepared:
            resource = self.prepare(resource)
        rtype = resource["resourceType"]
        self.policy.check_write(self.principal, "create", rtype)
        rid = rid or new_id()
        resource["id"] = rid
        for hook in self.hooks.get(rtype, ()):
            hook(self, resource, None)
        when = now_us()
        content = self._stamp(resource, rid, 1, when)
        patient = self._write_index(resource, replace=False)
        attrs, patient = self._attributes(resource, succeeds, patient)
        self._insert("resources", [{
            "res_type": rtype, "res_id": rid, "version": 1, "last_updated": when, "created_at": when,
            "deleted": False, "patient_id": patient, "content": content, **attrs}])
        self._insert("versions", [{
            "res_type": rtype, "res_id": rid, "version": 1, "last_updated": when, "method": "POST",
            "patient_id": patient, "content": content}])
        self._after_write(rtype, resource, patient, succeeds, attrs)
        self._record("create", rtype, (rid,), patients=(patient,))
        return Stored(rtype, rid, 1, when, False, content)

    # -- access attributes (carnet.policy.attributes) -----------------------------------------
    def _attributes(self, resource: dict[str, Any], previous: dict[str, Any] | None,
                    patient: str | None) -> tuple[dict[str, Any], str | None]:
        """The row's access attributes, and its patient (a Binary belongs to its document's)."""
        rtype = resource["resourceType"]
        if rtype == "DocumentReference":
            return document_attributes(resource, self.principal, previous), patient
        if rtype in ("Bundle", "Group") and patient is None:  # of no record: its creator's (policy)
            return {**NO_ATTRIBUTES, "author": self.principal.fhir_user}, patient
        if rtype != "Binary":
            return NO_ATTRIBUTES, patient
        target = security_context(resource)
        if target is None or target[0] != "DocumentReference":  # content of no document: its creator's
            return {**NO_ATTRIBUTES, "author": self.principal.fhir_user}, patient
        self.flush()
        t = resources.c
        row = self.conn.execute(select(t.patient_id, t.doc_type, t.visibility, t.author).where(
            t.res_type == "DocumentReference", t.res_id == target[1])).first()
        if row is None:  # the document comes later in the same transaction: it brings them
            return NO_ATTRIBUTES, patient
        return {"doc_type": row.doc_type, "visibility": row.visibility, "author": row.author}, row.patient_id

    def _sync_binaries(self, document: dict[str, Any], patient: str | None, attrs: dict[str, Any]) -> None:
        """Give the Binaries a DocumentReference points at the document's patient and access
        attributes: those of no record yet, or of the same record (a metadata update makes a new
        entry for the same content, whose labels its content must follow)."""
        ids = binary_ids(document)
        if not ids:
            return
        self.flush()
        t = resources.c
        rows = self.conn.execute(select(t.res_id, t.patient_id, t.content).where(
            t.res_type == "Binary", t.res_id.in_(ids), t.deleted.is_(False)))
        mine = []
        for r in rows:  # a Binary of this record (or of none yet) that is a document's content
            context = security_context(jsonio.loads(r.content)) if r.content is not None else None
            if r.patient_id in (None, patient) and (context is None or context[0] == "DocumentReference"):
                mine.append(r.res_id)
        if mine:
            self.conn.execute(update(resources).where(t.res_type == "Binary", t.res_id.in_(mine))
                              .values(patient_id=patient, **attrs))

    def _after_write(self, rtype: str, resource: dict[str, Any] | None, patient: str | None,
                     previous: dict[str, Any] | None, attrs: dict[str, Any]) -> None:
        current = resource is not None and resource.get("status") in (None, "current")
        if rtype == "DocumentReference" and resource is not None and current:
            # (a superseded entry's content follows its successor, not the other way round)
            self._sync_binaries(resource, patient, attrs)
        self.policy.after_write(self, rtype, resource, patient, previous, attrs)

    def update(self, resource_type: str, rid: str, resource: Any, *, if_match: int | None = None,
               method: str = "PUT", validated: bool = False) -> tuple[Stored, bool]:
        """Replace a resource (or create it with the client's id). Returns (stored, created)."""
        check_type(resource_type)
        resource = self.prepare(resource, resource_type, validated=validated)
        body_id = resource.get("id")
        if body_id is None:
            raise Invalid("the resource in an update must carry its id", expression=[f"{resource_type}.id"])
        if body_id != rid:
            raise Invalid(f"the body's id '{body_id}' differs from the id '{rid}' in the URL",
                          expression=[f"{resource_type}.id"])
        visible = self.visible(resource_type)
        with_content = resource_type in self.hooks
        if visible:
            cur = self.conn.execute(SELECT_FOR_UPDATE[with_content].where(*visible),
                                    {"rt": resource_type, "rid": rid}).first()
        else:  # no policy predicate: the statement built once
            cur = self.conn.execute(SELECT_FOR_UPDATE[with_content],
                                    {"rt": resource_type, "rid": rid}).first()
        if if_match is not None and (cur is None or cur.version != if_match):
            raise PreconditionFailed(
                f"If-Match names version {if_match}, the current version is "
                f"{cur.version if cur else 'none'}")
        interaction = "create" if cur is None else "update"
        self.policy.check_write(self.principal, "create-with-id" if cur is None else "update", resource_type)
        stored_before: dict[str, Any] | None = None
        if with_content:
            stored_before = jsonio.loads(cur.content) if cur is not None and cur.content else None
            for hook in self.hooks[resource_type]:
                hook(self, resource, stored_before)
        when = now_us()
        version = 1 if cur is None else cur.version + 1
        content = self._stamp(resource, rid, version, when)
        patient = self._write_index(resource, replace=cur is not None)
        previous = None if cur is None else {
            "patient_id": cur.patient_id, "doc_type": cur.doc_type, "visibility": cur.visibility,
            "author": cur.author, "resource": stored_before}
        attrs, patient = self._attributes(resource, previous, patient)
        if cur is None:
            self._insert_new(resource_type, rid, when, patient, content, attrs, unfiltered=not visible)
        else:
            changed = UPDATE_CURRENT.execute(self.conn, {
                "rt": resource_type, "rid": rid, "expected": cur.version, "v": version, "when": when,
                "pid": patient, "body": content, "dt": attrs["doc_type"], "vis": attrs["visibility"],
                "au": attrs["author"]}).rowcount
            if changed != 1:
                raise Conflict(f"{resource_type}/{rid} was changed concurrently; retry")
        INSERT_VERSION.execute(self.conn, {
            "res_type": resource_type, "res_id": rid, "version": version, "last_updated": when,
            "method": method, "patient_id": patient, "content": content})
        if previous is not None and patient != previous["patient_id"] and previous["patient_id"] is not None:
            # moved out of a record: that record's rights may derive from it
            self.policy.after_write(self, resource_type, None, previous["patient_id"], previous,
                                    NO_ATTRIBUTES)
        self._after_write(resource_type, resource, patient, previous, attrs)
        self._record(interaction, resource_type, (rid,), patients=(patient,))
        return Stored(resource_type, rid, version, when, False, content), cur is None

    def _insert_new(self, rtype: str, rid: str, when: int, patient: str | None, content: bytes,
                    attrs: dict[str, Any], *, unfiltered: bool = False) -> None:
        """Insert a resource the caller's read found absent; ``unfiltered``: that read had no
        predicate, so it is absent for everyone (else it may be there and hidden: looked up again)."""
        if not unfiltered:
            exists = self.conn.execute(
                select(resources.c.version).where(resources.c.res_type == rtype, resources.c.res_id == rid)
            ).first()
            if exists is not None:  # present but hidden from this caller: refuse without saying more
                raise Conflict(f"{rtype}/{rid} cannot be written by this caller")
        INSERT_RESOURCE.execute(self.conn, {
            "res_type": rtype, "res_id": rid, "version": 1, "last_updated": when, "created_at": when,
            "deleted": False, "patient_id": patient, "content": content, **attrs})

    def delete(self, resource_type: str, rid: str, *, if_match: int | None = None) -> Stored | None:
        """Logical delete: a new version marks the resource deleted; history keeps the rest.
        Deleting an absent or already-deleted resource succeeds and changes nothing."""
        check_type(resource_type)
        t = resources.c
        cur = self.conn.execute(
            select(t.version, t.deleted, t.patient_id, t.doc_type, t.visibility, t.author)
            .where(t.res_type == resource_type, t.res_id == rid, *self.visible(resource_type))
        ).first()
        if if_match is not None and (cur is None or cur.version != if_match):
            raise PreconditionFailed(f"If-Match names version {if_match}, which is not current")
        if cur is None or cur.deleted:
            return None
        self.policy.check_write(self.principal, "delete", resource_type)
        when = now_us()
        version = cur.version + 1
        self._clear_index(resource_type, rid)
        self.conn.execute(
            update(resources).where(t.res_type == resource_type, t.res_id == rid)
            .values(version=version, last_updated=when, deleted=True, content=None))
        self.conn.execute(insert(resource_versions).values(
            res_type=resource_type, res_id=rid, version=version, last_updated=when, method="DELETE",
            patient_id=cur.patient_id, content=None))
        self.policy.after_write(self, resource_type, None, cur.patient_id, {
            "patient_id": cur.patient_id, "doc_type": cur.doc_type, "visibility": cur.visibility,
            "author": cur.author}, NO_ATTRIBUTES)
        self._record("delete", resource_type, (rid,), patients=(cur.patient_id,))
        return Stored(resource_type, rid, version, when, True, None)

    # -- history ------------------------------------------------------------------------------
    def history(self, resource_type: str | None, rid: str | None, *, since: int | None = None,
                at: int | None = None, count: int = 20, offset: int = 0,
                snapshot: int | None = None) -> tuple[list[Stored], int]:
        if resource_type is not None:
            check_type(resource_type)
        t = resource_versions.c
        where: list[ColumnElement[bool]] = [*self.visible(resource_type, resource_versions)]
        if resource_type is not None:
            where.append(t.res_type == resource_type)
        if rid is not None:
            where.append(t.res_id == rid)
        if since is not None:
            where.append(t.last_updated >= since)
        if at is not None:
            where.append(t.last_updated <= at)
        if snapshot is not None:
            where.append(t.last_updated <= snapshot)
        cond = and_(*where) if where else None
        stmt = select(t.res_type, t.res_id, t.version, t.last_updated, t.method, t.content, t.patient_id)
        if cond is not None:
            stmt = stmt.where(cond)
        rows = self.conn.execute(
            stmt.order_by(t.last_updated.desc(), t.seq.desc()).limit(count + 1).offset(offset)).all()
        if rid is not None and not rows and offset == 0:
            exists = self.conn.execute(
                select(resources.c.version).where(resources.c.res_type == resource_type,
                                                  resources.c.res_id == rid,
                                                  *self.visible(resource_type))).first()
            if exists is None:
                raise NotFound(f"{resource_type}/{rid} is not known")
        out = [Stored(r.res_type, r.res_id, r.version, r.last_updated, r.method == "DELETE", r.content,
                      r.method, r.patient_id) for r in rows[:count]]
        shown = list({(s.resource_type, s.id): s for s in out}.values())
        self._record("history", resource_type, tuple(s.id for s in shown),
                     patients=[s.patient_id for s in shown], types=[s.resource_type for s in shown])
        return self.present(out), len(rows)
