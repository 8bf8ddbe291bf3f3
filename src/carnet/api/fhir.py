"""HTTP adapter for the FHIR REST API: turn a Starlette request into a FhirRequest and back."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from carnet.api.auth import principal_from
from carnet.api.limits import too_large
from carnet.auth.principal import Kind, Principal
from carnet.errors import CarnetError, Issue, bilingual
from carnet.fhir.router import FHIR_JSON, FhirRequest, FhirResponse, FhirRouter, error_response, outcome

CONTENT_TYPE = FHIR_JSON + "; charset=utf-8"
ANONYMOUS = Principal(Kind.ANONYMOUS, "unauthenticated", display="unauthenticated")
log = logging.getLogger("carnet.api")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes (else TooLarge). Its time is bounded by
    :class:`carnet.api.limits.RequestLimits`, whose refusals (TooLarge, SlowClient) the stream raises."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def dispatch(router: FhirRouter, freq: FhirRequest, principal: Principal) -> FhirResponse:
    """Run one FHIR interaction as ``principal`` (off the event loop) and trace it: the answer is
    given once its audit rows are durable, and a 503 otherwise. The FHIR endpoint and the portal
    both call the engine this way, so a page shows exactly what the API would answer."""
    later: list[dict[str, Any]] = []
    spool = getattr(router.audit, "spool", None)
    untraced: list[BaseException] = []

    def handle() -> FhirResponse:
        answer = router.handle(freq, principal, later)
        if later and spool is not None:
            # appended from this thread: a write from the event loop would wait there for the
            # interpreter lock the request threads hold
            try:
                spool.append(later)
                later.clear()
            except Exception as exc:
                untraced.append(exc)
        return answer

    try:
        resp: FhirResponse = await run_in_threadpool(handle)
    except Exception:  # a bug, not the client's fault: log it, answer without internals
        log.exception("unexpected error on %s /fhir/%s", freq.method, freq.path)
        resp = FhirResponse(500, outcome([Issue("fatal", "exception",
                                                bilingual("erreur interne ; la requête n'a rien changé",
                                                          "internal error; the request changed nothing"))]))
    if later and router.audit is not None and not untraced:
        try:  # the response leaves once its audit rows are durable, and not otherwise
            await router.audit.write_async(later)
        except Exception as exc:
            untraced.append(exc)
    if untraced:
        log.error("the audit trail could not be written for %s /fhir/%s", freq.method, freq.path,
                  exc_info=untraced[0])
        resp = FhirResponse(503, outcome([Issue("fatal", "transient",
                                                bilingual("l'accès n'a pas pu être tracé ; réessayez",
                                                          "the access could not be traced; try again"))]))
    return resp


async def fhir_endpoint(request: Request) -> Response:
    router: FhirRouter = request.app.state.fhir
    settings = request.app.state.settings
    try:
        # a bearer token costs a signature check and a revocation lookup: off the event loop
        principal = (await run_in_threadpool(principal_from, request) if "authorization" in request.headers
                     else principal_from(request))
        body = await read_body(request, settings.max_body_bytes) if request.method in (
            "POST", "PUT", "PATCH") else None
    except CarnetError as exc:
        resp = error_response(exc)
        if resp.status == 401 and "authorization" in request.headers:  # a token that failed: traced
            attempt = FhirRequest(request.method, request.path_params.get("path", "").strip("/"),
                                  list(request.query_params.multi_items()))
            await run_in_threadpool(router.audit_failure, attempt, ANONYMOUS, 401, exc.message)
    else:
        path = request.path_params.get("path", "").strip("/")
        headers = {k.lower(): v for k, v in request.headers.items()}
        freq = FhirRequest(request.method, path, list(request.query_params.multi_items()), headers, body)
        resp = await dispatch(router, freq, principal)
    headers = dict(resp.headers)
    if resp.status == 401:  # RFC 6750: say how to authenticate, and why a presented token failed
        headers["www-authenticate"] = ('Bearer realm="carnet", error="invalid_token"'
                                       if "authorization" in request.headers else 'Bearer realm="carnet"')
    # document content: the exact bytes under the exact content type it was published with (set
    # as a header: Starlette would append a charset to text/* media types)
    if resp.stream is not None:
        headers["content-type"] = resp.media_type or "application/octet-stream"
        return StreamingResponse(resp.stream, status_code=resp.status, headers=headers)
    if resp.media_type is not None and isinstance(resp.body, bytes):
        headers["content-type"] = resp.media_type
        return Response(resp.body, status_code=resp.status, headers=headers)
    content = resp.json_bytes()
    if resp.status == 204 or (not content and resp.status < 300):
        return Response(status_code=resp.status, headers=headers)
    return Response(content, status_code=resp.status, headers=headers, media_type=CONTENT_TYPE)
