"""Identity matching on the FHIR engine: ``Patient/$match``, ``Patient/$merge`` and duplicate detection.

``Patient/$match`` (http://hl7.org/fhir/OperationDefinition/Patient-match) compares the strict traits
of the Patient given with those of candidates taken from indexes, never from a scan: the patients
born on the same day, and those sharing a blocking key (:mod:`carnet.identity.matchkeys`: same names
in the same year or on the same day of another year, same first name and birth date), so that a
slip in the birth date or in the name still finds the record. Each candidate is scored by
:func:`carnet.identity.matching.score_match`; the answer is a ``searchset`` Bundle ordered by
score, each entry carrying ``search.score`` and the ``match-grade`` extension; ``certainly-not``
candidates are left out. Records merged into another (``link`` of type ``replaced-by``) and the
input resource itself (same id) are never proposed.

``Patient/$merge`` (named as in FHIR R5: ``source-patient``, ``target-patient``, their
``-identifier`` forms and ``preview``) is an operator action: every resource referencing the source
(found through the reference index) is rewritten to reference the target, through the ordinary update
path (validation, history and index follow), the source becomes inactive with a ``replaced-by`` link
and the target gets a ``replaces`` link. Everything happens in the request's transaction.

Duplicate detection (:func:`find_duplicates`) lives in :mod:`carnet.identity.duplicates`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import select

from carnet.auth.principal import Kind
from carnet.db.tables import idx_date, idx_reference
from carnet.errors import Forbidden, Invalid, Issue, NotSupported, Unprocessable
from carnet.fhir.parameters import Params, one, parameters, request_body
from carnet.fhir.router import FhirRequest, FhirResponse, FhirRouter, Operation, outcome
from carnet.fhir.store import Repository, Stored, new_id
from carnet.fhir.values import date_range, instant_text, now_us
from carnet.identity import matchkeys
from carnet.identity.fhir import birth_given_names, birthplace_code, read_traits
from carnet.identity.matching import (
    MATCH_GRADE_EXTENSION,
    MatchGrade,
    MatchResult,
    score_match,
)
from carnet.identity.status import GENDERS, Traits

MATCH_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-match"
MERGE_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-merge"
DEFAULT_MATCH_COUNT = 10
MAX_MATCH_COUNT = 100
CANDIDATE_LIMIT = 500  # per way in (birth date, name): bounds the work whatever the data size
MERGE_CHUNK = 200
_GRADE_RANK = {MatchGrade.CERTAIN: 0, MatchGrade.PROBABLE: 1, MatchGrade.POSSIBLE: 2,
               MatchGrade.CERTAINLY_NOT: 3}
MERGE_KINDS = frozenset({Kind.SYSTEM, Kind.OPERATOR})


def _both(fr: str, en: str) -> str:
    return f"{fr} / {en}"




# -- Traits of any Patient ---------------------------------------------------------------------------

def _name(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    names = [n for n in resource.get("name") or [] if isinstance(n, dict) and isinstance(n.get("family"), str)
             and n["family"].strip()]
    for use in ("official", "usual", None):
        for n in names:
            if use is None or n.get("use") == use:
                return n
    return None


def patient_traits(resource: Mapping[str, Any]) -> Traits | None:
    """The strict traits of a Patient: FR Core Patient INS when it has that shape, else what a generic
    Patient offers (a family name, given names, a full birth date, the gender if any, the birthplace
    INSEE code if any). None when there is no family name or no full birth date."""
    try:
        return read_traits(resource)
    except Unprocessable:
        pass
    name = _name(resource)
    born = resource.get("birthDate")
    if name is None or not isinstance(born, str) or len(born) != 10:
        return None
    try:
        birth_date = date.fromisoformat(born)
    except ValueError:
        return None
    gender = resource.get("gender")
    return Traits(birth_family_name=name["family"], birth_given_names=birth_given_names(name),
                  birth_date=birth_date, sex=gender if gender in GENDERS else "unknown",
                  birthplace_code=birthplace_code(resource))


def _links(resource: Mapping[str, Any], link_type: str) -> list[str]:
    out = []
    for link in resource.get("link") or []:
        if isinstance(link, dict) and link.get("type") == link_type:
            ref = (link.get("other") or {}).get("reference")
            if isinstance(ref, str):
                out.append(ref)
    return out


def replaced_by(resource: Mapping[str, Any]) -> str | None:
    """The reference of the record this one was merged into, if any."""
    found = _links(resource, "replaced-by")
    return found[0] if found else None


# -- $match -----------------------------------------------------------------------------------------

def candidate_ids(repo: Repository, traits: Traits, limit: int = CANDIDATE_LIMIT) -> list[str]:
    """Patients born on the same day (the birth-date index), and patients sharing a blocking key
    (same names in the same year or on the same day of another year, same first name and date:
    :mod:`carnet.identity.matchkeys`): each an index lookup, bounded."""
    d = idx_date.c
    low, high = date_range(traits.birth_date.isoformat()) or (0, 0)
    ids = [r.res_id for r in repo.conn.execute(
        select(d.res_id).where(d.res_type == "Patient", d.param == "birthdate", d.low >= low, d.low <= high,
                             d.high <= high)
        .limit(limit))]
    ids.extend(matchkeys.candidates(repo.conn, traits, limit))
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Match:
    stored: Stored
    result: MatchResult


def find_matches(repo: Repository, resource: Mapping[str, Any]) -> list[Match]:
    """Every candidate not graded certainly-not, best first (score, then grade, then id)."""
    traits = patient_traits(resource)
    if traits is None:
        raise Invalid(_both("Le patient à rapprocher doit porter un nom de famille et une date de "
                            "naissance complète",
                            "The Patient to match must carry a family name and a full birth date"),
                      expression=["Patient.name", "Patient.birthDate"])
    own_id = resource.get("id")
    found = []
    for stored in repo.read_many([("Patient", i) for i in candidate_ids(repo, traits) if i != own_id]):
        candidate = stored.resource()
        other = patient_traits(candidate)
        if other is None or replaced_by(candidate) is not None:
            continue
        result = score_match(traits, other)
        if result.grade is not MatchGrade.CERTAINLY_NOT:
            found.append(Match(stored, result))
    found.sort(key=lambda m: (-m.result.score, _GRADE_RANK[m.result.grade], m.stored.id))
    return found


def _match_entry(base: str, m: Match) -> dict[str, Any]:
    return {"fullUrl": f"{base}/Patient/{m.stored.id}",
            "resource": orjson.Fragment(m.stored.content or b"{}"),
            "search": {"extension": [{"url": MATCH_GRADE_EXTENSION, "valueCode": m.result.grade.value}],
                       "mode": "match", "score": m.result.score}}


def match_operation(router: FhirRouter, repo: Repository, req: FhirRequest) -> FhirResponse:
    body = request_body(req)
    if isinstance(body, dict) and body.get("resourceType") == "Patient":
        params: dict[str, list[dict[str, Any]]] = {"resource": [{"name": "resource", "resource": body}]}
    else:
        params = parameters(body, "Patient/$match")
    resource = one(params, "resource", "resource", dict)
    if resource is None:
        raise Invalid(_both("Paramètre « resource » absent : le patient à rapprocher",
                            'Parameter "resource" missing: the Patient to match'), expression=["resource"])
    if resource.get("resourceType") != "Patient":
        raise Invalid(_both(f"« resource » doit être un Patient, pas {resource.get('resourceType')}",
                            f'"resource" must be a Patient, not {resource.get("resourceType")}'),
                      expression=["resource"])
    only_certain = one(params, "onlyCertainMatches", "valueBoolean", bool) or False
    count = one(params, "count", "valueInteger", int)
    if count is not None and count < 1:
        raise Invalid(_both("« count » doit être un entier positif", '"count" must be a positive integer'),
                      expression=["count"])
    count = min(count or DEFAULT_MATCH_COUNT, MAX_MATCH_COUNT)
    matches = find_matches(repo, resource)
    entries = []
    if only_certain:
        certain = [m for m in matches if m.result.grade is MatchGrade.CERTAIN]
        if len(certain) == 1:
            entries.append(_match_entry(router.base, certain[0]))
        elif certain:  # the operation's definition: several possible matches, none is certain
            entries.append({"resource": outcome([Issue(
                "information", "multiple-matches", _both(
                    f"{len(certain)} patients correspondent avec certitude : aucun n'est retenu",
                    f"{len(certain)} patients match with certainty: none is returned"))]),
                "search": {"mode": "outcome"}})
    else:
        entries.extend(_match_entry(router.base, m) for m in matches[:count])
    returned = [e["fullUrl"].rsplit("/", 1)[1] for e in entries if "fullUrl" in e]
    repo._record("match", "Patient", tuple(returned))
    bundle = {"resourceType": "Bundle", "id": new_id(), "meta": {"lastUpdated": instant_text(now_us())},
              "type": "searchset", "total": len(returned), "entry": entries}
    return FhirResponse(200, bundle)


# -- $merge -----------------------------------------------------------------------------------------

def _patient_id(router: FhirRouter, value: str, name: str) -> str:
    ref = value[len(router.base) + 1:] if value.startswith(router.base + "/") else value
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) != 2 or parts[0] != "Patient" or not parts[1]:
        raise Invalid(_both(f"« {name} » doit référencer un Patient de ce serveur, pas « {value} »",
                            f'"{name}" must reference a Patient on this server, not "{value}"'),
                      expression=[name])
    return parts[1]


def _resolve(router: FhirRouter, repo: Repository, params: Params, role: str) -> str:
    name = f"{role}-patient"
    reference = one(params, name, "valueReference", dict)
    identifier = one(params, f"{name}-identifier", "valueIdentifier", dict)
    if reference is None and identifier is None:
        raise Invalid(_both(f"Paramètre « {name} » absent", f'Parameter "{name}" missing'), expression=[name])
    rid = None
    if reference is not None:
        if not isinstance(reference.get("reference"), str):
            raise Invalid(_both(f"« {name} » sans référence", f'"{name}" has no reference'),
                          expression=[name])
        rid = _patient_id(router, reference["reference"], name)
    if identifier is not None:
        system, value = identifier.get("system"), identifier.get("value")
        if not isinstance(system, str) or not isinstance(value, str):
            raise Invalid(_both(f"« {name}-identifier » doit porter system et value",
                                f'"{name}-identifier" must carry a system and a value'),
                          expression=[f"{name}-identifier"])
        token = f"{system}|{value}".replace(",", "\\,")
        found = router.match(repo, "Patient", urlencode([("identifier", token)]))
        if len(found) != 1:
            fr = "aucun patient ne porte" if not found else "plusieurs patients portent"
            en = "no Patient carries" if not found else "several Patients carry"
            raise Unprocessable(_both(f"{fr} l'identifiant {system}|{value}",
                                      f"{en} identifier {system}|{value}"), expression=[f"{name}-identifier"])
        if rid is not None and rid != found[0].id:
            raise Unprocessable(_both(f"« {name} » et « {name}-identifier » désignent deux patients "
                                      "différents", f'"{name}" and "{name}-identifier" name two different '
                                      "Patients"),
                                expression=[name])
        rid = found[0].id
    assert rid is not None
    return rid


def _refers_to(ref: str, base: str, rid: str) -> bool:
    if ref.startswith(base + "/"):
        ref = ref[len(base) + 1:]
    parts = ref.split("/")
    return parts[:2] == ["Patient", rid] and (len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history"))


def retarget(node: Any, base: str, source: str, target: str) -> int:
    """Rewrite, in place, every reference to ``Patient/source`` (relative, absolute on this server, or
    version-specific) into ``Patient/target``; the number rewritten."""
    changed = 0
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and _refers_to(ref, base, source):
            absolute = ref.startswith(base + "/")
            node["reference"] = f"{base}/Patient/{target}" if absolute else f"Patient/{target}"
            changed += 1
        for key, value in node.items():
            if key != "reference":
                changed += retarget(value, base, source, target)
    elif isinstance(node, list):
        for item in node:
            changed += retarget(item, base, source, target)
    return changed


def referencing(repo: Repository, patient_id: str) -> list[tuple[str, str]]:
    """(type, id) of every resource whose indexed references name the patient."""
    t = idx_reference.c
    rows = repo.conn.execute(
        select(t.res_type, t.res_id).where(t.target_type == "Patient", t.target_id == patient_id)
        .distinct().order_by(t.res_type, t.res_id))
    return [(r.res_type, r.res_id) for r in rows]


def _chunks(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _relink(resource: dict[str, Any], base: str, other: str, link_type: str) -> None:
    links = [link for link in resource.get("link") or [] if not (
        isinstance(link, dict) and isinstance((link.get("other") or {}).get("reference"), str)
        and _refers_to(link["other"]["reference"], base, other))]
    links.append({"other": {"reference": f"Patient/{other}"}, "type": link_type})
    resource["link"] = links


def merge_operation(router: FhirRouter, repo: Repository, req: FhirRequest) -> FhirResponse:
    if repo.principal.kind not in MERGE_KINDS:
        raise Forbidden(_both("Seul un opérateur peut fusionner des patients", "Only an operator may merge "
                              "patients"))
    params = parameters(request_body(req), "Patient/$merge")
    if params.get("result-patient"):
        raise NotSupported(_both("« result-patient » n'est pas pris en charge : la cible est gardée telle "
                                 "quelle", '"result-patient" is not supported: the target is kept as it is'),
                           expression=["result-patient"])
    preview = one(params, "preview", "valueBoolean", bool) or False
    source, target = _resolve(router, repo, params, "source"), _resolve(router, repo, params, "target")
    if source == target:
        raise Unprocessable(_both("Un patient ne peut être fusionné avec lui-même",
                                  "A patient cannot be merged into itself"), expression=["target-patient"])
    src, tgt = repo.read("Patient", source), repo.read("Patient", target)
    src_res, tgt_res = src.resource(), tgt.resource()
    if replaced_by(src_res) is not None:
        raise Unprocessable(_both(f"Patient/{source} a déjà été fusionné dans {replaced_by(src_res)}",
                                  f"Patient/{source} was already merged into {replaced_by(src_res)}"),
                            expression=["source-patient"])
    if tgt_res.get("active") is False or replaced_by(tgt_res) is not None:
        raise Unprocessable(_both(f"Patient/{target} est inactif ou fusionné : il ne peut recevoir la "
                                  "fusion", f"Patient/{target} is inactive or merged: it cannot be the "
                                  "surviving record"),
                            expression=["target-patient"])
    operator = repo
    repo = repo.acting_on_whole_records()  # the merge moves references in clinical resources too
    keys = [k for k in referencing(repo, source) if k not in (("Patient", source), ("Patient", target))]
    moved: dict[str, int] = {}
    for chunk in _chunks(keys, MERGE_CHUNK):
        found = repo.read_many(chunk)
        if len(found) != len(chunk):
            hidden = len(chunk) - len(found)
            raise Forbidden(_both(f"{hidden} ressources liées à Patient/{source} ne sont pas accessibles : "
                                  "fusion impossible", f"{hidden} resources referencing Patient/{source} are "
                                  "not accessible: cannot merge"))
        for stored in found:
            resource = stored.resource()
            if not retarget(resource, router.base, source, target):
                continue  # indexed as the patient's, but through another server's URL
            if not preview:
                repo.update(stored.resource_type, stored.id, resource, if_match=stored.version)
            moved[stored.resource_type] = moved.get(stored.resource_type, 0) + 1
    total = sum(moved.values())
    detail = ", ".join(f"{n} {t}" for t, n in sorted(moved.items())) or "0"
    if preview:
        message = _both(f"Aperçu : {total} ressources passeraient de Patient/{source} à Patient/{target} "
                        f"({detail})", f"Preview: {total} resources would move from Patient/{source} to "
                        f"Patient/{target} ({detail})")
        result = tgt
    else:
        src_res["active"] = False
        _relink(src_res, router.base, target, "replaced-by")
        repo.update("Patient", source, src_res, if_match=src.version)
        _relink(tgt_res, router.base, source, "replaces")
        result, _ = repo.update("Patient", target, tgt_res, if_match=tgt.version)
        operator._record("merge", "Patient", (source, target))
        message = _both(f"Patient/{source} fusionné dans Patient/{target} : {total} ressources déplacées "
                        f"({detail})", f"Patient/{source} merged into Patient/{target}: {total} resources "
                        f"moved ({detail})")
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "outcome", "resource": outcome([Issue("information", "informational", message)])},
        {"name": "result", "resource": orjson.Fragment(result.content or b"{}")},
        {"name": "moved", "valueInteger": total},
        *({"name": "moved-type", "part": [{"name": "type", "valueCode": t},
                                          {"name": "count", "valueInteger": n}]}
          for t, n in sorted(moved.items()))]}
    return FhirResponse(200, body)


def register_match_operations(router: FhirRouter) -> None:
    """Declare ``Patient/$match`` and ``Patient/$merge`` on the router, and keep the blocking keys
    ``$match`` looks candidates up by."""
    router.add_hook("Patient", matchkeys.keys_hook(patient_traits))
    router.add_reindexer("Patient", matchkeys.rewrite_keys(patient_traits))
    router.add_operation(Operation(
        "$match", "Patient", False, lambda repo, req, rid: match_operation(router, repo, req),
        description="Scored matches of a Patient on the strict identity traits (accents, case, hyphens and "
        "compound names tolerated); onlyCertainMatches and count honoured", definition=MATCH_DEFINITION,
        read_only=True))
    router.add_operation(Operation(
        "$merge", "Patient", False, lambda repo, req, rid: merge_operation(router, repo, req),
        description="Operator merge of a duplicate: references move to the target, the source is kept "
        "inactive with a replaced-by link; the merge is recorded", definition=MERGE_DEFINITION))
