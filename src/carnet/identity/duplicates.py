"""Probable duplicate patients, found by set-based SQL on the search index (never by loading every
patient): the two cases the national identity-vigilance rules name.

* **same traits, different matricule**: the patients grouped by normalised family name (hyphens and
  apostrophes read as spaces), given name, birth date and sex, where the members do not share an INS;
* **same matricule, different traits**: the patients grouped by INS identifier (system and value);
  only the members of such groups are read, to say which traits differ. Two records with the same
  matricule and the same traits are reported too, as plain double entries.

Inactive patients (``active = false``, as a merged record is) are left out. Both queries are
``GROUP BY … HAVING count(DISTINCT id) > 1`` over the (type, parameter, value) indexes, limited to the
first ``limit`` groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations
from typing import Any

from sqlalchemy import Connection, and_, exists, func, literal, select

from carnet.db.tables import idx_date, idx_string, idx_token, resources
from carnet.fhir import jsonio
from carnet.identity import nir
from carnet.identity.matching import MatchGrade, normalise_name, score_match
from carnet.identity.matchops import patient_traits
from carnet.identity.status import Traits

INS_SYSTEMS = tuple(f"urn:oid:{oid}" for oid in nir.INS_OIDS)


class DuplicateKind(StrEnum):
    SAME_TRAITS = "same-traits"
    SAME_MATRICULE = "same-matricule"
    IDENTICAL = "identical"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    DuplicateKind.SAME_TRAITS: "mêmes traits, matricules différents / same traits, different matricule",
    DuplicateKind.SAME_MATRICULE: "même matricule, traits différents / same matricule, different traits",
    DuplicateKind.IDENTICAL: "même matricule et mêmes traits / same matricule and same traits",
}


@dataclass(frozen=True)
class DuplicatePair:
    first: str  # Patient ids, first < second
    second: str
    kind: DuplicateKind
    reason: str  # what is shared and what differs
    matricules: tuple[str, ...] = ()  # the INS values involved
    grade: MatchGrade | None = None  # of the strict traits, when both could be read
    score: float | None = None

    def describe(self) -> str:
        grade = ""
        if self.grade is not None and self.score is not None:
            grade = f" [{self.grade.value} {self.score:.2f}]"
        return f"Patient/{self.first}  Patient/{self.second}  {self.kind.label}: {self.reason}{grade}"


def _spaced(col: Any) -> Any:
    return func.replace(func.replace(col, "-", " "), "'", " ")


def _active(res_id: Any) -> Any:
    t = idx_token.alias("inactive")
    return ~exists(select(1).select_from(t).where(t.c.res_type == "Patient", t.c.res_id == res_id,
                                                  t.c.param == "active", t.c.code == "false"))


def _traits_groups(conn: Connection, limit: int) -> list[list[str]]:
    f, g, d, x = (idx_string.alias("f"), idx_string.alias("g"), idx_date.alias("d"), idx_token.alias("x"))

    def own(t: Any, param: str) -> Any:
        return and_(t.c.res_type == "Patient", t.c.res_id == f.c.res_id, t.c.param == param)

    keyed = (select(f.c.res_id.label("pid"), _spaced(f.c.value).label("family"),
                    func.coalesce(_spaced(g.c.value), literal("")).label("given"), d.c.low.label("low"),
                    d.c.high.label("high"), func.coalesce(x.c.code, literal("unknown")).label("sex"))
             .select_from(f.join(d, own(d, "birthdate")).outerjoin(g, own(g, "given"))
                          .outerjoin(x, own(x, "gender")))
             .where(f.c.res_type == "Patient", f.c.param == "family", _active(f.c.res_id))
             .cte("keyed"))
    k = keyed.c
    key = (k.family, k.given, k.low, k.high, k.sex)
    groups = (select(*key).group_by(*key).having(func.count(k.pid.distinct()) > 1)
              .order_by(k.low, k.family, k.given, k.sex).limit(limit).subquery("groups"))
    rows = conn.execute(
        select(k.pid, *(groups.c[c.name] for c in key))
        .join(groups, and_(*(c == groups.c[c.name] for c in key)))
        .order_by(*(groups.c[c.name] for c in key), k.pid).distinct())
    found: dict[tuple[Any, ...], list[str]] = {}
    for r in rows:
        found.setdefault(tuple(r[1:]), []).append(r.pid)
    return [sorted(set(ids)) for ids in found.values()]


def _matricule_groups(conn: Connection, limit: int) -> list[tuple[str, str, list[str]]]:
    t = idx_token.c
    base = (t.res_type == "Patient", t.param == "identifier", t.system.in_(INS_SYSTEMS), t.code.is_not(None))
    groups = (select(t.system, t.code).where(*base, _active(t.res_id)).group_by(t.system, t.code)
              .having(func.count(t.res_id.distinct()) > 1).order_by(t.system, t.code).limit(limit)
              .subquery("groups"))
    rows = conn.execute(select(t.system, t.code, t.res_id)
                        .join(groups, and_(t.system == groups.c.system, t.code == groups.c.code))
                        .where(*base, _active(t.res_id)).distinct().order_by(t.system, t.code, t.res_id))
    found: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        found.setdefault((r.system, r.code), []).append(r.res_id)
    return [(system, code, ids) for (system, code), ids in found.items()]


def _matricules(conn: Connection, ids: Iterable[str]) -> dict[str, set[str]]:
    t = idx_token.c
    out: dict[str, set[str]] = {}
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), 500):
        rows = conn.execute(select(t.res_id, t.system, t.code).where(
            t.res_type == "Patient", t.param == "identifier", t.system.in_(INS_SYSTEMS),
            t.res_id.in_(wanted[i:i + 500])))
        for r in rows:
            if r.code:
                out.setdefault(r.res_id, set()).add(f"{r.system.removeprefix('urn:oid:')}|{r.code}")
    return out


def _traits(conn: Connection, ids: Iterable[str]) -> dict[str, Traits | None]:
    r = resources.c
    out: dict[str, Traits | None] = {}
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), 500):
        for row in conn.execute(select(r.res_id, r.content).where(
                r.res_type == "Patient", r.res_id.in_(wanted[i:i + 500]), r.deleted.is_(False))):
            out[row.res_id] = patient_traits(jsonio.loads(row.content)) if row.content else None
    return out


_TRAIT_NAMES = {"birth_family_name": "nom de naissance / birth name",
                "birth_given_names": "prénoms / first names", "birth_date": "date de naissance / birth date",
                "sex": "sexe / sex", "birthplace_code": "lieu de naissance / birthplace"}


def _differences(a: Traits, b: Traits) -> list[str]:
    out = []
    if normalise_name(a.birth_family_name) != normalise_name(b.birth_family_name):
        out.append("birth_family_name")
    if [normalise_name(n) for n in a.birth_given_names] != [normalise_name(n) for n in b.birth_given_names]:
        out.append("birth_given_names")
    out.extend(n for n in ("birth_date", "sex", "birthplace_code") if getattr(a, n) != getattr(b, n))
    return out


def _describe(t: Traits) -> str:
    given = " ".join(t.birth_given_names)
    return f"{normalise_name(t.birth_family_name)} {normalise_name(given)} {t.birth_date.isoformat()} {t.sex}"


def find_duplicates(conn: Connection, limit: int = 100) -> list[DuplicatePair]:
    """Probable duplicate pairs, at most ``limit``: first the same-traits pairs (by birth date and
    name), then the same-matricule ones (by matricule)."""
    trait_groups = _traits_groups(conn, limit)
    matricule_groups = _matricule_groups(conn, limit)
    every = {i for ids in trait_groups for i in ids} | {i for _, _, ids in matricule_groups for i in ids}
    mats, traits = _matricules(conn, every), _traits(conn, every)
    pairs: dict[tuple[str, str], DuplicatePair] = {}

    def graded(a: str, b: str) -> tuple[MatchGrade | None, float | None]:
        ta, tb = traits.get(a), traits.get(b)
        if ta is None or tb is None:
            return None, None
        result = score_match(ta, tb)
        return result.grade, result.score

    for ids in trait_groups:
        for a, b in combinations(ids, 2):
            ma, mb = mats.get(a, set()), mats.get(b, set())
            if (a, b) in pairs or ma & mb:
                continue  # a shared matricule: reported below, with what differs
            known = traits.get(a) or traits.get(b)
            shared = _describe(known) if known else "?"
            if ma and mb:
                detail = f"{' '.join(sorted(ma))} ≠ {' '.join(sorted(mb))}"
            else:
                detail = "matricule sur un seul dossier / matricule on one record only" if ma or mb else (
                    "aucun matricule / no matricule")
            pairs[(a, b)] = DuplicatePair(a, b, DuplicateKind.SAME_TRAITS, f"{shared}; {detail}",
                                          tuple(sorted(ma | mb)), *graded(a, b))
    for system, code, ids in matricule_groups:
        matricule = f"{system.removeprefix('urn:oid:')}|{code}"
        for a, b in combinations(ids, 2):
            if (a, b) in pairs:
                continue
            ta, tb = traits.get(a), traits.get(b)
            differing = _differences(ta, tb) if ta is not None and tb is not None else ["?"]
            kind = DuplicateKind.SAME_MATRICULE if differing else DuplicateKind.IDENTICAL
            detail = ", ".join(_TRAIT_NAMES.get(d, d) for d in differing) if differing else (
                _describe(ta) if ta else "")
            pairs[(a, b)] = DuplicatePair(a, b, kind, f"{matricule}; {detail}", (matricule,), *graded(a, b))
    return list(pairs.values())[:limit]
