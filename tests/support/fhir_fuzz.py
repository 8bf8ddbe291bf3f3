"""Hostile but FHIR-shaped requests for ``/fhir``, as Hypothesis strategies, and the property every
answer must keep: never a 5xx, every 4xx an OperationOutcome with ``issue[].severity`` and
``issue[].code``, and an answer within the client's timeout (a hang fails as a timeout).

Used by ``tests/functional/test_fhir_fuzz.py`` (a few examples per database, in the suite) and by
``bench/fuzz_http.py`` (thousands). The requests mix what a real client sends (resources of real
types, searches with real parameters, batches and transactions) with what a hostile one does: unknown
types, wrong JSON types, deep nesting, huge and odd Unicode strings, impossible dates, references
that point nowhere or outside, Bundles with bad ``fullUrl``\\ s, circular references and wrong
methods, search strings with every modifier, prefix, chain, ``_include``, ``_sort`` and ``_count``
spelling, broken percent-encoding, repeated parameters, and odd methods and headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import strategies as st

# -- vocabulary ------------------------------------------------------------------------------------

REAL_TYPES = ["Patient", "Observation", "Encounter", "Condition", "DocumentReference", "Practitioner",
              "PractitionerRole", "Organization", "AuditEvent", "Binary", "Consent", "MedicationRequest",
              "AllergyIntolerance", "Immunization", "Composition", "List", "Provenance", "Group",
              "Questionnaire", "QuestionnaireResponse", "DiagnosticReport", "CarePlan", "Device"]
ODD_TYPES = ["Bundle", "Parameters", "OperationOutcome", "CapabilityStatement", "SearchParameter",
             "StructureDefinition", "Subscription"]
UNKNOWN_TYPES = ["Foo", "patient", "PATIENT", "Patient ", "Pat\u0131ent", "Patient\x00", "<Patient/>",
                 "Patient/../Observation", "$match", "_history", "metadata", "𝔓atient", "", "DomainResource",
                 "Resource", "Element", "BackboneElement", "ValueSet" * 20]
SEEDED = ["fz-pat", "fz-pat-2", "fz-obs", "fz-prac", "fz-org"]  # ids created before the examples
IDS = [*SEEDED, "does-not-exist", "", "a" * 64, "a" * 65, "x/y", "..", "%2e%2e", "é", "1" * 300,
       "fz pat", "fz-pat/_history/1", "-", ".", "_search"]

DATES = ["2024-01-01", "2024", "2024-02", "2024-02-30", "2024-13-01", "0000-00-00", "2024-01-01T25:00:00Z",
         "2024-01-01T10:00:00", "2024-01-01T10:00:00+99:00", "9999-12-31T23:59:59.999999999Z",
         "-0001-01-01", "10000-01-01", "2024-01-01T10:00:60Z", "yesterday", "2024-01-01 10:00",
         "1e10", "", "２０２４-01-01", "2024-01-01T10:00:00.1234567890123Z"]
REFERENCES = ["Patient/fz-pat", "Patient/does-not-exist", "Patient/", "Patient", "/Patient/fz-pat",
              "Patient/fz-pat/_history/1", "Patient/fz-pat/_history/x", "http://127.0.0.1:1/fhir/Patient/1",
              "https://example.org/Patient/1", "#", "#missing", "urn:uuid:not-a-uuid",
              "urn:uuid:9b0b3a5c-4a5e-4d4b-9a9e-000000000001", "urn:oid:1.2.3", "Foo/1", "Patient/../../etc",
              "Patient?identifier=x", "Patient?", "Observation/fz-obs", "Patient/é", "../Patient/fz-pat", ""]
PARAMS = ["_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text", "_content", "_list",
          "_has", "_type", "_query", "_filter", "identifier", "name", "family", "given", "birthdate",
          "gender", "address", "address-city", "telecom", "email", "phone", "active", "general-practitioner",
          "organization", "subject", "patient", "code", "date", "status", "category", "value-quantity",
          "value-string", "value-concept", "combo-code", "component-code", "code-value-quantity",
          "encounter", "performer", "based-on", "type", "author", "period", "relatesto", "setting",
          "related", "entity", "agent", "action", "outcome", "deceased", "link", "foo", "", "subject.name",
          "subject:Patient.birthdate", "patient.organization.name", "subject.foo",
          "_has:Observation:subject:code", "_has:Observation:patient:_has:AuditEvent:entity:agent",
          "_has:Foo:bar:baz", "_has:"]
MODIFIERS = ["", ":exact", ":contains", ":missing", ":not", ":above", ":below", ":in", ":not-in", ":text",
             ":identifier", ":of-type", ":Patient", ":Foo", ":iterate", ":", "::", ":exact:contains"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "EQ"]
VALUES = ["1", "0", "-1", "1.5", "1e999", "NaN", "99999999999999999999999", "abc", "", ",", "|", "||",
          "http://loinc.org|", "|8480-6", "http://loinc.org|8480-6", "5.4|http://unitsofmeasure.org|mg",
          "5.4||mg", "a\\,b", "a\\|b", "a\\$b", "a$b", "true", "false", "null", "Patient/fz-pat",
          "fz-pat", "*", "%", "'", '"', ";--", "é", "\u202e", "\ud7ff", "x" * 2000, *DATES]
SPECIAL = {
    "_include": ["Observation:subject", "Observation:subject:Patient", "*", "Patient:*", "Foo:bar", "Observation",
                 ":", "Observation:foo", "Patient:general-practitioner", "DocumentReference:subject:Patient"],
    "_revinclude": ["Observation:subject", "Provenance:target", "*", "Foo:bar", "AuditEvent:entity",
                    "Observation:subject:Foo"],
    "_include:iterate": ["Observation:subject", "*", "Patient:organization"],
    "_revinclude:iterate": ["Observation:subject", "*"],
    "_sort": ["date", "-date", "_id", "-_lastUpdated", "foo", ",", "-", "_id,-date,name", "--date", "name,name"],
    "_count": ["0", "1", "-1", "10", "1000", "100000", "99999999999999999999", "1e3", "1.5", "abc", "", "²",
               "١٠"],
    "_offset": ["0", "5", "-1", "99999999999999999999", "9223372036854775808", "abc", "²"],
    "_summary": ["true", "false", "count", "text", "data", "foo"],
    "_elements": ["id", "name,birthDate", "", ",", "foo", "meta.tag"],
    "_total": ["none", "estimate", "accurate", "foo"],
    "_format": ["json", "xml", "application/fhir+xml", "text/html", "foo"],
    "_contained": ["true", "false", "both", "foo"],
    "_containedType": ["container", "contained", "foo"],
    "_pretty": ["true", "foo"],
    "_page": ["1", "x", "-1"],
    "_since": DATES[:6],
    "_at": DATES[:6],
}
# methods uvicorn's HTTP parser knows (it answers an unknown token itself, before the application)
METHODS = ["GET"] * 6 + ["POST"] * 5 + ["PUT"] * 2 + ["PATCH"] * 2 + ["DELETE", "HEAD", "OPTIONS", "PROPFIND"]
CONTENT_TYPES = ["application/fhir+json", "application/fhir+json", "application/json",
                 "application/fhir+json; charset=utf-8", "application/fhir+json; charset=latin-1",
                 "application/fhir+json; fhirVersion=3.0", "application/json-patch+json", "application/fhir+xml",
                 "application/xml", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "", "garbage", "application/fhir+json;;;"]
HEADER_VALUES = {
    "if-match": ['W/"1"', '"1"', "*", "garbage", 'W/"99999999999999999999"', 'W/""', "W/", 'W/"-1"'],
    "if-none-match": ['W/"1"', "*", "garbage"],
    "if-none-exist": ["identifier=x", "identifier=http://x|1", "_id=fz-pat", "foo=bar", "", "&&", "%zz"],
    "if-modified-since": ["Mon, 01 Jan 2024 00:00:00 GMT", "garbage", "2024-01-01"],
    "prefer": ["return=representation", "return=minimal", "return=OperationOutcome", "handling=strict",
               "handling=lenient", "respond-async", "garbage", "return="],
    "accept": ["application/fhir+json", "application/fhir+xml", "*/*", "text/html", "application/xml",
               "garbage"],
    "authorization": ["Bearer x.y.z", "Bearer", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer " + "a" * 5000,
                      "bearer eyJhbGciOiJub25lIn0.e30.", "Bearer\tx y"],
    "x-request-id": ["fuzz", "", "é" * 10],
}

# -- values ----------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_ODD = ["", " ", "\x00", "\u0000\u0001", "\ud7ff", "\U0001f600", "é" * 3, "\u202e", "<script>alert(1)</script>",
        "' OR 1=1 --", "${jndi:x}", "\\", "%00", "x" * 4000]
_query_strings = st.one_of(_text, st.sampled_from(_ODD))  # within a URL's length
_strings = st.one_of(_text, st.sampled_from([*_ODD, "x" * 70_000]))
_numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False,
                                                                                  allow_infinity=False))
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _strings, st.sampled_from(DATES),
                     st.sampled_from(REFERENCES))
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)


def _nested(depth: int) -> Any:
    """An extension nested ``depth`` deep (a parser's or a validator's recursion)."""
    node: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(depth):
        node = {"url": "http://example.org/nest", "extension": [node]}
    return node


_references = st.one_of(st.sampled_from(REFERENCES).map(lambda r: {"reference": r}),
                        st.builds(lambda r, d: {"reference": r, "display": d}, st.sampled_from(REFERENCES), _text),
                        json_values)
_codings = st.one_of(
    st.builds(lambda s, c: {"coding": [{"system": s, "code": c}]},
              st.sampled_from(["http://loinc.org", "", "urn:oid:1.2.250.1.213.1.1.4.2", "x"]), _strings),
    json_values)
_extension = st.one_of(
    st.builds(lambda u, k, v: {"url": u, k: v}, st.sampled_from(["http://example.org/x", "", "x", "#"]),
              st.sampled_from(["valueString", "valueInteger", "valueBoolean", "valueDateTime", "valueReference",
                               "valueFoo", "value"]), json_values),
    st.sampled_from([10, 60, 200]).map(_nested),
    json_values)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.sampled_from(IDS), json_values),
    "meta": st.one_of(st.builds(lambda v, lu, tag: {"versionId": v, "lastUpdated": lu, "tag": tag},
                                st.one_of(st.just("1"), json_values), st.sampled_from(DATES),
                                st.lists(st.builds(lambda s, c: {"system": s, "code": c}, _strings, _strings),
                                         max_size=2)),
                      json_values),
    "text": st.one_of(st.builds(lambda d: {"status": "generated", "div": d},
                                st.sampled_from(["<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>",
                                                 "<div>", "<script>x</script>", ""])), json_values),
    "extension": st.one_of(st.lists(_extension, max_size=3), json_values),
    "modifierExtension": st.lists(_extension, max_size=2),
    "contained": st.one_of(st.lists(st.deferred(lambda: resources(max_fields=3)), max_size=2), json_values),
    "identifier": st.one_of(st.lists(st.builds(lambda s, v: {"system": s, "value": v},
                                               st.sampled_from(["urn:oid:1.2.250.1.213.1.4.8", "", "x"]),
                                               _strings), max_size=3), json_values),
    "name": st.one_of(st.lists(st.builds(lambda f, g: {"family": f, "given": g}, _strings,
                                         st.lists(_strings, max_size=2)), max_size=2), json_values),
    "birthDate": st.one_of(st.sampled_from(DATES), json_values),
    "gender": st.one_of(st.sampled_from(["male", "female", "other", "unknown", "Male", ""]), json_values),
    "active": st.one_of(st.booleans(), json_values),
    "status": st.one_of(st.sampled_from(["final", "current", "active", "entered-in-error", "foo", ""]),
                        json_values),
    "code": _codings,
    "category": st.one_of(st.lists(_codings, max_size=2), json_values),
    "subject": _references,
    "patient": _references,
    "encounter": _references,
    "performer": st.one_of(st.lists(_references, max_size=2), json_values),
    "author": st.one_of(st.lists(_references, max_size=2), json_values),
    "generalPractitioner": st.lists(_references, max_size=2),
    "managingOrganization": _references,
    "effectiveDateTime": st.one_of(st.sampled_from(DATES), json_values),
    "effectivePeriod": st.builds(lambda s, e: {"start": s, "end": e}, st.sampled_from(DATES),
                                 st.sampled_from(DATES)),
    "issued": st.sampled_from(DATES),
    "date": st.sampled_from(DATES),
    "valueQuantity": st.one_of(st.builds(lambda v, u: {"value": v, "unit": u, "system": "http://unitsofmeasure.org",
                                                       "code": u}, _numbers, _strings), json_values),
    "valueString": _strings,
    "valueBoolean": json_values,
    "component": st.lists(st.builds(lambda c, v: {"code": c, "valueQuantity": v}, _codings, json_values),
                          max_size=3),
    "telecom": st.lists(st.builds(lambda s, v: {"system": s, "value": v},
                                  st.sampled_from(["phone", "email", "fax", "foo"]), _strings), max_size=2),
    "address": st.lists(st.builds(lambda c, p: {"city": c, "postalCode": p}, _strings, _strings), max_size=2),
    "content": st.lists(st.builds(lambda ct, d, u: {"attachment": {"contentType": ct, "data": d, "url": u}},
                                  st.sampled_from(["application/pdf", "text/plain", "", "x/y"]),
                                  st.sampled_from(["JVBERi0=", "not base64", "", "===="]),
                                  st.sampled_from(REFERENCES)), max_size=2),
    "data": st.sampled_from(["aGVsbG8=", "not base64!", "", "=" * 10]),
    "contentType": st.sampled_from(["text/plain", "application/pdf", "", "x"]),
    "agent": st.lists(st.builds(lambda w: {"who": w, "requestor": True}, _references), max_size=2),
    "entity": st.lists(st.builds(lambda w: {"what": w}, _references), max_size=2),
    "recorded": st.sampled_from(DATES),
    "type": st.one_of(_codings, st.sampled_from(["batch", "transaction", "searchset"]), json_values),
    "link": json_values,
    "parameter": st.lists(st.builds(lambda n, v: {"name": n, "valueString": v}, _strings, _strings), max_size=3),
    "unknownField": json_values,
    "_birthDate": st.builds(lambda e: {"extension": e}, st.lists(_extension, max_size=2)),
    "resourceType ": _strings,
}
FIELD_NAMES = sorted(FIELDS)


@st.composite
def resources(draw: st.DrawFn, max_fields: int = 8) -> Any:
    """A resource: a real, odd or unknown type (or a wrong JSON type), some fields right, some hostile."""
    kind = draw(st.sampled_from(["real"] * 6 + ["odd", "unknown", "missing", "notstring"]))
    rtype: Any = {"real": st.sampled_from(REAL_TYPES), "odd": st.sampled_from(ODD_TYPES),
                  "unknown": st.sampled_from(UNKNOWN_TYPES), "missing": st.none(),
                  "notstring": json_values}[kind]
    resource: dict[str, Any] = {}
    value = draw(rtype)
    if kind != "missing":
        resource["resourceType"] = value
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=max_fields, unique=True)):
        resource[name] = draw(FIELDS[name])
    if draw(st.integers(0, 9)) == 0:  # now and then, not an object at all
        return draw(st.one_of(json_values, st.lists(st.just(resource), max_size=2)))
    return resource


_uuid = st.uuids().map(lambda u: f"urn:uuid:{u}")
_full_urls = st.one_of(_uuid, st.sampled_from(["urn:uuid:1", "urn:uuid:", "urn:oid:1.2", "http://127.0.0.1:1/fhir/Patient/1",
                                               "Patient/fz-pat", "", "not a url", "urn:uuid:9b0b3a5c-4a5e-4d4b-"
                                               "9a9e-000000000001"]), json_values)
_entry_urls = st.one_of(
    st.sampled_from(REAL_TYPES + UNKNOWN_TYPES[:6]),
    st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(REAL_TYPES[:6]), st.sampled_from(IDS)),
    st.builds(lambda t, p, v: f"{t}?{p}={v}", st.sampled_from(REAL_TYPES[:6]), st.sampled_from(PARAMS),
              st.sampled_from(VALUES[:20])),
    st.sampled_from(["", "/", "metadata", "_history", "Patient/$match", "Patient/fz-pat/$everything",
                     "http://127.0.0.1:1/fhir/Patient/1", "Patient/fz-pat/_history/1", "Patient/fz-pat/_history/x",
                     "../Patient", "Patient?", "?", "#"]),
    json_values)
_entry_methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "FOO", "get", ""]),
                           json_values)


@st.composite
def bundles(draw: st.DrawFn) -> Any:
    """A batch or transaction (or a Bundle of another, or no, type) with random entries; sometimes two
    entries that reference each other by their fullUrl."""
    btype = draw(st.one_of(st.sampled_from(["batch", "transaction", "transaction", "batch", "document",
                                            "collection", "searchset", "history", "foo", ""]), json_values))
    entries: list[Any] = []
    for _ in range(draw(st.integers(0, 6))):
        entry: dict[str, Any] = {}
        if draw(st.booleans()):
            entry["fullUrl"] = draw(_full_urls)
        if draw(st.integers(0, 4)):
            entry["resource"] = draw(resources(max_fields=5))
        if draw(st.integers(0, 4)):
            request: dict[str, Any] = {"method": draw(_entry_methods), "url": draw(_entry_urls)}
            extra = draw(st.sampled_from(["", "ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"]))
            if extra:
                request[extra] = draw(st.one_of(st.sampled_from(HEADER_VALUES["if-match"] + ["identifier=x"]),
                                                json_values))
            entry["request"] = request
        if draw(st.integers(0, 9)) == 0:
            entry = draw(json_values)
        entries.append(entry)
    if draw(st.integers(0, 3)) == 0:  # a cycle: a -> b -> a, by urn:uuid
        a, b = draw(_uuid), draw(_uuid)
        entries += [
            {"fullUrl": a, "resource": {"resourceType": "Patient", "link": [{"other": {"reference": b},
                                                                           "type": "seealso"}],
                                        "managingOrganization": {"reference": b}},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": b, "resource": {"resourceType": "Patient", "link": [{"other": {"reference": a},
                                                                           "type": "seealso"}]},
             "request": {"method": draw(st.sampled_from(["POST", "PUT"])), "url": "Patient"}},
        ]
    if draw(st.integers(0, 3)) == 0:  # the same fullUrl twice
        same = draw(_uuid)
        entries += [{"fullUrl": same, "resource": {"resourceType": "Patient"},
                     "request": {"method": "POST", "url": "Patient"}}] * 2
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": btype, "entry": entries}
    if draw(st.integers(0, 9)) == 0:
        bundle["entry"] = draw(json_values)
    return bundle


# -- search strings --------------------------------------------------------------------------------

def _encode(text: str, how: str) -> str:
    if how == "quoted":
        return quote(text, safe="")
    if how == "raw":
        return text
    if how == "partial":
        return quote(text, safe=":|,$*.-_")
    if how == "broken":
        return text + "%"
    return quote(text, safe="").replace("%", "%25")  # double-encoded


@st.composite
def search_strings(draw: st.DrawFn) -> str:
    """A query string: real and unknown parameters with modifiers, prefixes and chains, the result
    parameters with right and wrong values, repeated parameters, odd percent-encoding."""
    pairs: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(sorted(SPECIAL)))
            value = draw(st.one_of(st.sampled_from(SPECIAL[name]), _query_strings))
        else:
            name = draw(st.sampled_from(PARAMS)) + draw(st.sampled_from(MODIFIERS))
            value = draw(st.sampled_from(PREFIXES)) + draw(st.one_of(st.sampled_from(VALUES), _text))
            if draw(st.integers(0, 4)) == 0:
                value = ",".join([value, draw(st.sampled_from(VALUES))])
        pairs.append((name, value))
    if pairs and draw(st.integers(0, 3)) == 0:  # a parameter repeated
        pairs += [pairs[0]] * draw(st.integers(1, 3))
    how = draw(st.sampled_from(["quoted", "quoted", "partial", "raw", "broken", "double"]))
    query = "&".join(f"{_encode(n, how)}={_encode(v, how)}" for n, v in pairs)
    if draw(st.integers(0, 9)) == 0:
        query += draw(st.sampled_from(["&", "&&", "=", "==", "&=x", "%zz=1", "%C3=1", "a=%ZZ", ";", "a[]=1"]))
    return query


@st.composite
def paths(draw: st.DrawFn) -> str:
    rtype = draw(st.sampled_from(REAL_TYPES + ODD_TYPES + UNKNOWN_TYPES))
    rid = draw(st.sampled_from(IDS))
    shape = draw(st.sampled_from(["type", "type", "instance", "instance", "history", "vread", "op", "root",
                                  "search", "odd"]))
    if shape == "type":
        return rtype
    if shape == "instance":
        return f"{rtype}/{rid}"
    if shape == "history":
        return draw(st.sampled_from([f"{rtype}/{rid}/_history", f"{rtype}/_history", "_history"]))
    if shape == "vread":
        return f"{rtype}/{rid}/_history/" + draw(st.sampled_from(["1", "2", "0", "-1", "x", "99999999999999999999",
                                                                  "²", ""]))
    if shape == "op":
        return draw(st.sampled_from([
            "Patient/$match", "Patient/fz-pat/$everything", "AuditEvent/x/$inclusion-proof", "$export",
            "Patient/$validate", "Patient/fz-pat/$access", "Patient/fz-pat/$break-glass",
            "Patient/fz-pat/$identity-check", "Patient/fz-pat/$identity-flag", "Patient/fz-pat/$identity-history",
            "Patient/$ins-verify", "Patient/$merge", "Patient/fz-pat/$regulation-access", "$foo",
            "Patient/$foo", "DocumentReference/$docref", "Patient/fz-pat/$", "$", f"{rtype}/$meta"]))
    if shape == "root":
        return draw(st.sampled_from(["", "metadata", "/", "//", "_search", "Patient/_search"]))
    if shape == "search":
        return f"{rtype}/_search"
    return draw(st.sampled_from(["Patient//fz-pat", "Patient/fz-pat/", "Patient/fz-pat/foo",
                                 "Patient/fz-pat/_history/1/extra", "%2e%2e/healthz", ".well-known/foo",
                                 "Patient%2Ffz-pat", "Patient/fz-pat/*", "Patient/" + "x" * 5000]))


# -- a request -------------------------------------------------------------------------------------

@dataclass
class FuzzRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def url(self, base: str) -> str:
        # the path percent-encoded but for its slashes, '$' and the '%' already there
        url = base.rstrip("/") + "/fhir/" + quote(self.path, safe="/$%:*")
        # what goes on the wire: printable ASCII as it is (broken '%' sequences included), the rest in UTF-8
        query = "".join(c if " " < c < "\x7f" else quote(c, safe="") for c in self.query)
        return url + ("?" + query if query else "")

    def __repr__(self) -> str:  # what a failure report shows: enough to replay it with curl
        body = None if self.body is None else self.body[:3000]
        return (f"FuzzRequest(method={self.method!r}, path={self.path[:300]!r}, query={self.query[:1000]!r}, "
                f"headers={self.headers!r}, body={body!r})")


def _dumps(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except ValueError:
        text = json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


def _patch_ops() -> st.SearchStrategy[Any]:
    op = st.builds(lambda o, p, v: {"op": o, "path": p, "value": v},
                   st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "foo", ""]),
                   st.sampled_from(["/name", "/id", "/resourceType", "/meta/versionId", "/", "", "name",
                                    "/name/0/given/-", "/name/99", "/~2", "/birthDate"]),
                   json_values)
    return st.one_of(st.lists(op, max_size=4), json_values)


_raw_bodies = st.sampled_from([
    b"", b"{", b"null", b"[]", b"1e999", b'{"resourceType":"Patient",}', b"\xff\xfe\x00", b"\xc3",
    b'{"resourceType":"Patient","name":[{"family":"\xff"}]}', b'{"resourceType":"Patient"}' * 2,
    b"<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"x\"/></Patient>", b"<?xml version=\"1.0\"?><!DOCTYPE x "
    b"[<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Patient xmlns=\"http://hl7.org/fhir\">&e;</Patient>",
    b'{"resourceType":"Patient","id":"' + b"a" * 100_000 + b'"}', b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000, b'{"resourceType":"Patient","birthDate":NaN}',
    b'{"resourceType":"Patient","active":true,"active":false}', b"\xef\xbb\xbf{\"resourceType\":\"Patient\"}",
    b'{"resourceType":"Patient","\\u0000":1}', b'{"resourceType":"Patient","id":"\\ud800"}',
])


@st.composite
def bodies(draw: st.DrawFn, method: str) -> bytes | None:
    if method not in ("POST", "PUT", "PATCH") and draw(st.integers(0, 5)):
        return None
    kind = draw(st.sampled_from(["resource", "resource", "bundle", "bundle", "patch", "raw", "deep"]))
    if kind == "resource":
        return _dumps(draw(resources()))
    if kind == "bundle":
        return _dumps(draw(bundles()))
    if kind == "patch":
        return _dumps(draw(_patch_ops()))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 400, 900, 3000, 20_000]))  # written out: json.dumps would recurse
        nest = '{"url":"http://example.org/nest","extension":['
        return (b'{"resourceType":"Patient","extension":[' + nest.encode() * depth
                + b'{"url":"http://example.org/leaf","valueString":"x"}' + b"]}" * depth + b"]}")
    return draw(_raw_bodies)


@st.composite
def fhir_requests(draw: st.DrawFn) -> FuzzRequest:
    method = draw(st.sampled_from(METHODS))
    path = draw(paths())
    if method == "POST" and draw(st.integers(0, 2)) == 0:
        path = ""  # a batch or a transaction
    query = draw(search_strings()) if method in ("GET", "HEAD", "DELETE") or draw(st.integers(0, 3)) == 0 else ""
    headers: dict[str, str] = {}
    body = draw(bodies(method))
    if body is not None or draw(st.integers(0, 4)) == 0:
        headers["content-type"] = draw(st.sampled_from(CONTENT_TYPES))
    for name in draw(st.lists(st.sampled_from(sorted(HEADER_VALUES)), max_size=3, unique=True)):
        if name == "authorization" and draw(st.integers(0, 2)):
            continue  # a bad token stops most requests at the door: now and then only
        headers[name] = draw(st.sampled_from(HEADER_VALUES[name]))
    return FuzzRequest(method, path, query, headers, body)


# -- sending, and the property ---------------------------------------------------------------------

def seed(client: httpx.Client, base: str) -> None:
    """The records the examples name (fz-pat, fz-obs, ...), so that reads, searches, includes and
    updates reach stored data."""
    fhir = base.rstrip("/") + "/fhir/"
    records = [
        {"resourceType": "Organization", "id": "fz-org", "name": "Cabinet"},
        {"resourceType": "Practitioner", "id": "fz-prac", "name": [{"family": "Martin"}]},
        {"resourceType": "Patient", "id": "fz-pat", "name": [{"family": "Durand", "given": ["Lucie"]}],
         "birthDate": "1980-05-04", "gender": "female", "managingOrganization": {"reference": "Organization/fz-org"},
         "generalPractitioner": [{"reference": "Practitioner/fz-prac"}]},
        {"resourceType": "Patient", "id": "fz-pat-2", "name": [{"family": "Bernard"}], "birthDate": "1990"},
        {"resourceType": "Observation", "id": "fz-obs", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "subject": {"reference": "Patient/fz-pat"}, "effectiveDateTime": "2024-01-01T10:00:00Z",
         "valueQuantity": {"value": 120, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
    ]
    for resource in records:
        r = client.put(f"{fhir}{resource['resourceType']}/{resource['id']}", content=_dumps(resource),
                       headers={"content-type": "application/fhir+json"})
        assert r.status_code in (200, 201), r.text


def send(client: httpx.Client, base: str, request: FuzzRequest) -> httpx.Response:
    headers = [(k.encode(), v.encode()) for k, v in request.headers.items()]  # UTF-8 bytes, as sent raw
    return client.request(request.method, request.url(base), headers=headers, content=request.body)


def problems(request: FuzzRequest, response: httpx.Response) -> list[str]:
    """What is wrong with the answer (nothing, for a good one)."""
    status = response.status_code
    if status >= 500:
        return [f"status {status}: {response.text[:500]}"]
    if status < 400 or request.method == "HEAD":
        return []
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("application/fhir+json"):
        return [f"status {status} with content type {ctype!r}, not an OperationOutcome: {response.text[:300]!r}"]
    try:
        body = response.json()
    except ValueError:
        return [f"status {status}: the body is not JSON: {response.text[:300]!r}"]
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return [f"status {status}: not an OperationOutcome: {str(body)[:300]}"]
    issues = body.get("issue")
    if not isinstance(issues, list) or not issues:
        return [f"status {status}: an OperationOutcome without issue: {body}"]
    bad = [i for i in issues if not isinstance(i, dict)
           or i.get("severity") not in ("fatal", "error", "warning", "information")
           or not isinstance(i.get("code"), str) or not i["code"]]
    return [f"status {status}: issues without severity/code: {bad}"] if bad else []

