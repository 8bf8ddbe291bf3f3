"""Blocking keys for identity matching: each Patient gets a few normalised combinations of its
strict traits, kept in ``patient_match_keys`` by a write hook, so that ``$match`` finds its
candidates with index lookups bounded by the size of a block, not of the population.

Keys (names normalised: no accents, upper case, punctuation as spaces; see matching.normalise_name):

- ``Y|<family part>|<first given>|<birth year>``: the same names in the same year (a slip in the
  day or the month);
- ``D|<family part>|<first given>|<MM-DD>``: the same names on the same day of another year (a slip
  in the year);
- ``G|<first given>|<birth date>``: the same first name and birth date (a changed or misspelt family
  name).

``<family part>`` is the whole family name without spaces and each of its parts, so that
"MARTIN-DUPONT" and "MARTIN" meet. Same-day candidates come from the birth-date index itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from carnet.db.driver import DriverStatement
from carnet.db.tables import patient_match_keys
from carnet.fhir.store import Repository
from carnet.identity.matching import normalise_name
from carnet.identity.status import Traits


def match_keys(traits: Traits) -> list[str]:
    words = normalise_name(traits.birth_family_name).split()
    given = normalise_name(traits.birth_given_names[0]).split() if traits.birth_given_names else []
    if not words or not given:
        return []
    first = given[0]
    born = traits.birth_date
    parts = dict.fromkeys(["".join(words), *(w for w in words if len(w) > 1)])
    keys = [f"G|{first}|{born.isoformat()}"]
    for part in parts:
        keys.append(f"Y|{part}|{first}|{born.year:04d}")
        keys.append(f"D|{part}|{first}|{born.month:02d}-{born.day:02d}")
    return [k[:255] for k in keys]


def candidates(conn: Connection, traits: Traits, limit: int) -> list[str]:
    """Patients sharing a key with ``traits`` (at most ``limit``)."""
    keys = match_keys(traits)
    if not keys:
        return []
    t = patient_match_keys.c
    # no DISTINCT: the planner would rather walk the patient index in order to get it for free
    rows = conn.execute(select(t.patient_id).where(t.key.in_(keys)).limit(limit))
    return list(dict.fromkeys(r.patient_id for r in rows))


DELETE_KEYS = DriverStatement(delete(patient_match_keys).where(
    patient_match_keys.c.patient_id == bindparam("pid")))
INSERT_KEYS = DriverStatement(insert(patient_match_keys), ["key", "patient_id"])


def _store_keys(conn: Connection, patient_id: str, keys: list[str], *, replace: bool) -> None:
    if replace:
        DELETE_KEYS.execute(conn, {"pid": patient_id})
    INSERT_KEYS.executemany(conn, [{"key": k, "patient_id": patient_id} for k in dict.fromkeys(keys)])


def keys_hook(traits_of: Callable[[dict[str, Any]], Traits | None]) -> Callable[..., None]:
    """The Patient write hook keeping a patient's keys in step with its traits."""

    def hook(repo: Repository, resource: dict[str, Any], previous: dict[str, Any] | None) -> None:
        traits = traits_of(resource)
        new = match_keys(traits) if traits is not None else []
        if previous is not None:
            old_traits = traits_of(previous)
            if old_traits is not None and match_keys(old_traits) == new:
                return
        _store_keys(repo.conn, resource["id"], new, replace=previous is not None)

    return hook


def rewrite_keys(
        traits_of: Callable[[dict[str, Any]], Traits | None]) -> Callable[[Repository, dict[str, Any]], None]:
    """The reindexer: a stored patient's keys rebuilt from its traits (``carnet reindex``)."""

    def reindex(repo: Repository, resource: dict[str, Any]) -> None:
        traits = traits_of(resource)
        _store_keys(repo.conn, resource["id"], match_keys(traits) if traits is not None else [], replace=True)

    return reindex
