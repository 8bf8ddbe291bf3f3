"""The transparency log over HTTP (``/ledger``), in the shapes Certificate Transparency-style
verifiers expect.

Public, without an account: the latest signed checkpoint, the verifier key, the list of past
checkpoints, inclusion and consistency proofs (hashes only: they say nothing about anyone). The
entries themselves are AuditEvents that name patients and professionals: they are served to
operators and auditors (operator or system tokens; in development mode, the open principal) — a
patient reads their own through ``/fhir/AuditEvent`` and its ``$inclusion-proof``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from carnet.api.auth import principal_from
from carnet.auth.principal import Kind
from carnet.errors import CarnetError, Forbidden, Invalid, NotFound
from carnet.fhir.router import status_of
from carnet.ledger.merkle import consistency_proof, inclusion_proof
from carnet.ledger.store import (
    DbNodes,
    checkpoints,
    index_of_hash,
    is_signed_size,
    latest_checkpoint,
    leaves,
    tree_size,
)

MAX_ENTRIES = 1000  # per call of /ledger/entries
MAX_WHOLE = 2**63 - 1  # the largest size, index or count a query takes (BIGINT)
NOTE_TYPE = "text/plain; charset=utf-8"


def _error(exc: CarnetError, status: int) -> Response:
    return JSONResponse({"error": exc.message}, status_code=status)


def _int(request: Request, name: str) -> int:
    value = request.query_params.get(name)
    # ASCII digits only (str.isdigit also takes "²", which int() refuses), within the databases' BIGINT
    if (value is None or not (value.isascii() and value.isdigit()) or len(value) > 19
            or int(value) > MAX_WHOLE):
        raise Invalid(f"'{name}' must be a whole number below 2^63 / "
                      f"« {name} » doit être un entier positif inférieur à 2^63")
    return int(value)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _checkpoint(request: Request) -> Response:
    with _engine(request).connect() as conn:
        found = latest_checkpoint(conn)
    if found is None:
        raise NotFound("the log has no checkpoint yet / le journal n'a pas encore de point de contrôle")
    return PlainTextResponse(found.note, media_type=NOTE_TYPE, headers={"cache-control": "no-cache"})


def _checkpoints(request: Request) -> Response:
    after = _int(request, "after") if "after" in request.query_params else -1
    with _engine(request).connect() as conn:
        found = checkpoints(conn, after, 1000)
    return JSONResponse({"checkpoints": [{"size": c.size, "note": c.note} for c in found]})


def _size_for(conn: Any, size: int) -> None:
    if not is_signed_size(conn, size):
        raise NotFound(f"no checkpoint covers size {size} / "
                       f"aucun point de contrôle ne couvre la taille {size}")


def _inclusion(request: Request) -> Response:
    size = _int(request, "size")
    with _engine(request).connect() as conn:
        _size_for(conn, size)
        if "hash" in request.query_params:
            try:
                digest = base64.b64decode(request.query_params["hash"], validate=True)
            except (binascii.Error, ValueError):
                raise Invalid("'hash' must be base64 / « hash » doit être en base64") from None
            found = index_of_hash(conn, digest)
            if found is None:
                raise NotFound("no leaf has this hash / aucune feuille n'a cette empreinte")
            index = int(found)
        else:
            index = _int(request, "index")
        if index >= size:
            raise Invalid(f"index {index} is not below size {size} / l'index doit être inférieur à la taille")
        hashes = inclusion_proof(DbNodes(conn), index, size)
    return JSONResponse({"index": index, "size": size,
                         "hashes": [base64.b64encode(h).decode() for h in hashes]})


def _consistency(request: Request) -> Response:
    old, new = _int(request, "old"), _int(request, "new")
    if old > new:
        raise Invalid("'old' must not exceed 'new' / « old » ne doit pas dépasser « new »")
    with _engine(request).connect() as conn:
        _size_for(conn, new)
        hashes = consistency_proof(DbNodes(conn), old, new) if old else []
    return JSONResponse({"old": old, "new": new, "hashes": [base64.b64encode(h).decode() for h in hashes]})


def _entries(request: Request) -> Response:
    who = principal_from(request)
    if who.kind not in (Kind.SYSTEM, Kind.OPERATOR) and "auditor" not in who.roles:
        raise Forbidden("the entries are for operators and auditors / les entrées sont réservées aux "
                        "opérateurs et auditeurs")
    start, end = _int(request, "start"), _int(request, "end")
    if end <= start:
        raise Invalid("'end' must be greater than 'start' / « end » doit dépasser « start »")
    end = min(end, start + MAX_ENTRIES)
    with _engine(request).connect() as conn:
        end = min(end, tree_size(conn))
        rows = conn.execute(leaves(start, end)).all()
    b64 = base64.b64encode
    return JSONResponse({"entries": [{"index": r.leaf_index, "data": b64(bytes(r.content)).decode()}
                                     for r in rows if r.content is not None]})


def _key(request: Request) -> Response:
    return PlainTextResponse(request.app.state.fhir.ledger_key + "\n", media_type=NOTE_TYPE)


def _endpoint(view: Any, *, inline: bool = False) -> Any:
    """``view`` as an endpoint, in the thread pool; ``inline`` ones run on the event loop: a proof
    or a checkpoint is one or two primary-key reads (~0.5 ms, most of it in Python, which holds the
    interpreter lock in a thread too), and handing it to a thread and back cost more than that
    (p50 2.2 → 2.9 ms, p99 4.5 → 6.5 ms for an inclusion proof at 10 million leaves, one client)."""
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = view(request) if inline else await run_in_threadpool(view, request)
            return response
        except CarnetError as exc:
            return _error(exc, status_of(exc))
    return endpoint


def routes() -> list[Route]:
    return [Route("/ledger/checkpoint", _endpoint(_checkpoint, inline=True)),
            Route("/ledger/checkpoints", _endpoint(_checkpoints)),
            Route("/ledger/key", _endpoint(_key, inline=True)),
            Route("/ledger/proof/inclusion", _endpoint(_inclusion, inline=True)),
            Route("/ledger/proof/consistency", _endpoint(_consistency, inline=True)),
            Route("/ledger/entries", _endpoint(_entries))]
