"""Batch and transaction Bundles posted to the FHIR base.

A transaction runs in the caller's single database transaction: every entry succeeds or nothing
is stored. Entries run in the spec's order (DELETE, POST, PUT/PATCH, GET/HEAD); ``urn:uuid:``
full URLs of created resources get server ids first, conditional references (``Patient?…``) are
resolved, and every reference in the Bundle is rewritten before anything is written. A batch runs
each entry in its own savepoint, so one failure does not undo the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from carnet.errors import CarnetError, Invalid, Issue, NotFound, PreconditionFailed, TooLarge, bilingual
from carnet.fhir import jsonio
from carnet.fhir.store import Repository, new_id
from carnet.fhir.values import instant_text

if TYPE_CHECKING:
    from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def process_bundle(router: FhirRouter, repo: Repository, request: FhirRequest) -> FhirResponse:
    from carnet.fhir.router import FhirResponse

    bundle = router._body(request)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise Invalid("only a Bundle may be posted to the FHIR base", expression=["resourceType"])
    btype = bundle.get("type")
    if btype not in ("batch", "transaction"):
        raise Invalid(f"a posted Bundle must be a batch or a transaction, not '{btype}'",
                      expression=["Bundle.type"])
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise Invalid("Bundle.entry must be an array", expression=["Bundle.entry"])
    if len(entries) > router.settings.max_bundle_entries:
        most = router.settings.max_bundle_entries
        raise TooLarge(bilingual(f"le Bundle compte {len(entries)} entrées ; au plus {most} sont acceptées",
                                 f"the Bundle has {len(entries)} entries; at most {most} are accepted"),
                       expression=["Bundle.entry"])
    for i, entry in enumerate(entries):
        _check_entry(entry, i)
    if btype == "transaction":
        for processor in router.bundle_processors:
            answered = processor(router, repo, request, bundle)
            if answered is not None:
                return answered
        responses = _transaction(router, repo, entries)
    else:
        responses = _batch(router, repo, entries)
    return FhirResponse(200, {"resourceType": "Bundle", "id": new_id(), "type": f"{btype}-response",
                              "entry": responses})


def _check_entry(entry: Any, i: int) -> None:
    where = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict):
        raise Invalid(f"{where} must be an object", expression=[where])
    req = entry.get("request")
    if (not isinstance(req, dict) or not isinstance(req.get("method"), str) or req["method"] not in ORDER
            or not isinstance(req.get("url"), str)):
        raise Invalid(f"{where}.request needs a method (GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
                      expression=[f"{where}.request"])
    if req["method"] in ("POST", "PUT") and not isinstance(entry.get("resource"), dict):
        raise Invalid(f"{where} needs a resource for {req['method']}", expression=[f"{where}.resource"])


def _entry_request(router: FhirRouter, entry: dict[str, Any]) -> FhirRequest:
    from carnet.fhir.router import FhirRequest

    req = entry["request"]
    url = req["url"]
    if url.startswith(router.base + "/"):
        url = url[len(router.base) + 1:]
    elif "://" in url:  # another server's URL for the same resource: keep its Type/id
        url = _type_and_id(url) or url
    parts = urlsplit(url)
    headers = {}
    for key, name in (("ifNoneExist", "if-none-exist"), ("ifMatch", "if-match"),
                      ("ifNoneMatch", "if-none-match"), ("ifModifiedSince", "if-modified-since")):
        if req.get(key):
            headers[name] = req[key]
    body = entry.get("resource")
    if req["method"] == "PATCH" and isinstance(body, dict) and body.get("resourceType") == "Binary":
        import base64

        body = jsonio.loads(base64.b64decode(body.get("data", "")))
        headers["content-type"] = "application/json-patch+json"
    return FhirRequest(req["method"], parts.path.strip("/"), parse_qsl(parts.query, keep_blank_values=True),
                       headers, body)


def _type_and_id(url: str) -> str | None:
    from carnet.fhir.searchparams import resource_types

    segments = urlsplit(url).path.rstrip("/").split("/")
    if len(segments) >= 2 and segments[-2] in resource_types():
        return f"{segments[-2]}/{segments[-1]}"
    return None


def _response_entry(resp: FhirResponse, router: FhirRouter) -> dict[str, Any]:
    status = str(resp.status) + {200: " OK", 201: " Created", 204: " No Content"}.get(resp.status, "")
    out: dict[str, Any] = {"response": {"status": status}}
    if "Location" in resp.headers:
        out["response"]["location"] = resp.headers["Location"].removeprefix(router.base + "/")
        out["fullUrl"] = router.base + "/" + "/".join(out["response"]["location"].split("/")[:2])
    if "ETag" in resp.headers:
        out["response"]["etag"] = resp.headers["ETag"]
    if resp.last_updated is not None:
        out["response"]["lastModified"] = instant_text(resp.last_updated)
    if resp.body is not None:
        body = resp.body if not isinstance(resp.body, bytes) else _fragment(resp.body)
        if resp.status >= 400:
            out["response"]["outcome"] = body
        else:
            out["resource"] = body
    return out


def _fragment(content: bytes) -> Any:
    import orjson

    return orjson.Fragment(content)


def _batch(router: FhirRouter, repo: Repository, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from carnet.fhir.router import error_response

    out = []
    for entry in entries:
        try:
            with repo.conn.begin_nested():
                resp = router.dispatch(repo, _entry_request(router, entry))
        except CarnetError as exc:
            resp = error_response(exc)
        out.append(_response_entry(resp, router))
    return out


def _transaction(router: FhirRouter, repo: Repository, entries: list[dict[str, Any]],
                 preassigned: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """The entries' responses, in order. ``preassigned`` gives the ids of some created resources
    (chosen before the transaction, e.g. to encrypt content under its patient's key)."""
    full_urls = [e.get("fullUrl") for e in entries if e.get("fullUrl")]
    if len(full_urls) != len(set(full_urls)):
        raise Invalid("two entries of the transaction share a fullUrl", expression=["Bundle.entry.fullUrl"])
    # 1. Give every created resource its id (or find it, for a conditional create), so references
    #    to it can be rewritten before anything is written.
    mapping: dict[str, str] = {}
    assigned: dict[int, str | None] = {}
    for i, entry in enumerate(entries):
        req = entry["request"]
        if req["method"] != "POST":
            continue
        rtype = entry["resource"].get("resourceType")
        rid = None
        if req.get("ifNoneExist"):
            found = router.match(repo, rtype, req["ifNoneExist"])
            if len(found) > 1:
                raise PreconditionFailed(f"entry {i}: ifNoneExist matches {len(found)} resources")
            if found:
                rid = found[0].id
                assigned[i] = None  # nothing to create
        if rid is None:
            rid = (preassigned or {}).get(i) or new_id()
            assigned[i] = rid
        if entry.get("fullUrl"):
            mapping[entry["fullUrl"]] = f"{rtype}/{rid}"
            # A relative reference resolves against the base of the entry's absolute fullUrl.
            relative = _type_and_id(entry["fullUrl"]) if "://" in entry["fullUrl"] else None
            if relative:
                mapping.setdefault(relative, f"{rtype}/{rid}")
    for entry in entries:
        req = entry["request"]
        url = entry.get("fullUrl")
        if req["method"] == "PUT" and url and "?" not in req["url"]:
            target = _type_and_id(req["url"]) if "://" in req["url"] else req["url"].strip("/")
            mapping.setdefault(url, target or req["url"])
    # 2. Rewrite references: urn:uuid and fullUrls to their ids, conditional ones by search.
    cache: dict[str, str] = {}
    for i, entry in enumerate(entries):
        resource = entry.get("resource")
        if isinstance(resource, dict):
            _rewrite(resource, lambda ref, i=i: _resolve(router, repo, ref, mapping, cache, i))
    # 3. Run in the spec's order; answer in the Bundle's order. New resources are queued and
    #    written together (a few statements per table instead of several per resource).
    repo.defer_inserts()
    order = sorted(range(len(entries)), key=lambda i: ORDER[entries[i]["request"]["method"]])
    responses: dict[int, dict[str, Any]] = {}
    for i in order:
        entry = entries[i]
        req = _entry_request(router, entry)
        try:
            if req.method == "POST" and i in assigned:
                rid = assigned[i]
                if rid is None:  # conditional create matched: answer 200 with the existing one
                    found = router.match(repo, entry["resource"]["resourceType"],
                                         entry["request"]["ifNoneExist"])
                    resp = router.resource_response(found[0], 200, location=True)
                else:
                    req.headers = {k: v for k, v in req.headers.items() if k != "if-none-exist"}
                    resp = router.create(repo, req.path.split("/")[0] or entry["resource"]["resourceType"],
                                         req, rid=rid)
            else:
                resp = router.dispatch(repo, req)
        except CarnetError as exc:
            issues = [Issue(x.severity, x.code, f"entry {i}: {x.diagnostics}", x.expression)
                      for x in exc.issues]
            exc.issues = issues
            raise
        responses[i] = _response_entry(resp, router)
    repo.flush()
    return [responses[i] for i in range(len(entries))]


def _resolve(router: FhirRouter, repo: Repository, ref: str, mapping: dict[str, str],
             cache: dict[str, str], i: int) -> str:
    if ref in mapping:
        return mapping[ref]
    if "?" in ref and not ref.startswith(("http://", "https://", "urn:")):
        if ref not in cache:
            rtype, _, query = ref.partition("?")
            found = router.match(repo, rtype, query)
            if len(found) != 1:
                raise PreconditionFailed(
                    f"entry {i}: the conditional reference '{ref}' matches {len(found)} resources, not one")
            cache[ref] = f"{rtype}/{found[0].id}"
        return cache[ref]
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        raise NotFound(f"entry {i}: the reference '{ref}' names no entry of the Bundle")
    return ref


def _rewrite(node: Any, resolve: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                node[key] = resolve(value)
            elif isinstance(value, dict | list):
                _rewrite(value, resolve)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, resolve)
