"""Rights that begin or end on a given day with no write to say so (SPEC C4): a patient's
authorisation for a period, a care-team membership that starts later, a minor who comes of age.

Each record's derived rights carry the day from which they may no longer hold; from that day the
read predicates ignore them (access is refused, never widened) until the rights worker derives
the record again. The tests move the stored days back by one, as the calendar would, then run the
worker's pass for that next day. Both databases, over real HTTP.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from carnet.policy.rights import RightsWorker, day_number, recheck_due, rights_of
from tests.conftest import Fhir
from tests.functional.dicah_world import Actor, World


@pytest.fixture
def world(fhir: Fhir) -> World:
    return World(fhir)


def _today() -> date:
    return datetime.now(UTC).date()


def _engine(world: World) -> Any:
    return world.fhir.backend.engine


def _next_day_comes(world: World, patient: Actor, days: int = 1) -> None:
    """What the calendar does to the stored rows overnight: their day comes ``days`` days closer."""
    with _engine(world).connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(text("UPDATE access_rights SET until_day = until_day - :d WHERE patient_id = :p"),
                     {"p": patient.id, "d": days})
        conn.execute(text("UPDATE record_access SET recheck_day = recheck_day - :d WHERE patient_id = :p"),
                     {"p": patient.id, "d": days})


def _stored_days(world: World, patient: Actor) -> tuple[set[int | None], int | None]:
    with _engine(world).connect() as conn:
        until = {r[0] for r in conn.execute(
            text("SELECT until_day FROM access_rights WHERE patient_id = :p"), {"p": patient.id})}
        recheck = conn.execute(text("SELECT recheck_day FROM record_access WHERE patient_id = :p"),
                               {"p": patient.id}).scalar_one()
    return until, recheck


def _authorise_until(world: World, patient: Actor, pro: Actor, last_day: date) -> None:
    r = world.consent(patient, pro, "permit")
    assert r.status_code == 201, r.text
    consent = r.json()
    consent["provision"]["period"] = {"start": (last_day - timedelta(days=30)).isoformat(),
                                      "end": last_day.isoformat()}
    assert world.fhir.put(f"Consent/{consent['id']}", json=consent).status_code == 200


def test_an_authorisation_ends_after_its_last_day_without_any_write(world: World) -> None:
    alice = world.patient("alice")
    doctor = world.professional("doctor", "10")
    doc = world.document(alice)
    _authorise_until(world, alice, doctor, _today())
    assert world.sees(doctor, f"DocumentReference/{doc}")
    tomorrow = day_number(_today() + timedelta(days=1))
    assert _stored_days(world, alice) == ({tomorrow}, tomorrow)

    _next_day_comes(world, alice)
    # the day has come, the worker has not run yet: the authorisation is no longer honoured
    assert not world.sees(doctor, f"DocumentReference/{doc}")
    assert world.search(doctor, f"DocumentReference?patient={alice.id}") == []

    assert recheck_due(_engine(world), today=_today() + timedelta(days=1)) == 1
    assert not world.sees(doctor, f"DocumentReference/{doc}")
    with _engine(world).connect() as conn:
        assert rights_of(conn, alice.id, _today() + timedelta(days=1)).level(doctor.ref) is None
    assert _stored_days(world, alice) == (set(), None)  # nothing left to wait for


def test_a_care_team_membership_that_starts_tomorrow_opens_the_record_on_its_day(world: World) -> None:
    alice = world.patient("alice")
    nurse = world.professional("nurse", "60")
    doc = world.document(alice)
    team = world.fhir.get(f"CareTeam/{world.care_team(alice, nurse)}").json()
    start = _today() + timedelta(days=1)
    team["participant"][0]["period"] = {"start": start.isoformat()}
    assert world.fhir.put(f"CareTeam/{team['id']}", json=team).status_code == 200
    assert not world.sees(nurse, f"DocumentReference/{doc}")
    assert _stored_days(world, alice)[1] == day_number(start)

    _next_day_comes(world, alice)
    assert recheck_due(_engine(world), today=start) == 1
    assert world.sees(nurse, f"DocumentReference/{doc}")
    assert world.search(nurse, f"DocumentReference?patient={alice.id}") == [doc]


def test_a_representative_stops_acting_for_a_minor_who_comes_of_age(world: World) -> None:
    parent = world.patient("parent")
    eighteen = _today() + timedelta(days=1)
    if (eighteen.month, eighteen.day) == (2, 29):  # 18 years before, no 29 February: the day after
        eighteen += timedelta(days=1)
    child = world.minor("child", parent, born=eighteen.replace(year=eighteen.year - 18))
    doc = world.document(child)
    assert world.sees(parent, f"DocumentReference/{doc}")
    assert _stored_days(world, child)[1] == day_number(eighteen)

    _next_day_comes(world, child, (eighteen - _today()).days)
    assert not world.sees(parent, f"DocumentReference/{doc}")
    assert recheck_due(_engine(world), today=eighteen) == 1
    assert not world.sees(parent, f"DocumentReference/{doc}")  # an adult now: no representative
    assert world.sees(child, f"DocumentReference/{doc}")


def test_the_rights_worker_derives_due_records_again_by_itself(world: World) -> None:
    alice = world.patient("alice")
    doctor = world.professional("doctor", "10")
    doc = world.document(alice)
    _authorise_until(world, alice, doctor, _today() + timedelta(days=1))  # still valid tomorrow
    _next_day_comes(world, alice, 2)  # stored as if derived two days ago: due today, refused meanwhile
    assert not world.sees(doctor, f"DocumentReference/{doc}")
    worker = RightsWorker(_engine(world), interval=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while _stored_days(world, alice)[1] != day_number(_today() + timedelta(days=2)):
            assert time.monotonic() < deadline, _stored_days(world, alice)
            time.sleep(0.05)
    finally:
        worker.stop()
    assert world.sees(doctor, f"DocumentReference/{doc}")
