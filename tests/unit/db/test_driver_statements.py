"""Statements run on the driver's cursor (carnet.db.driver) behave as ``Connection.execute``
would, on SQLite and PostgreSQL: rows written with NULL for columns not given, fixed values of
the statement applied, row counts, plain tuples back, and driver errors raised as SQLAlchemy's
(so that a duplicate still answers as a conflict where the callers expect one)."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from carnet.db.driver import DriverStatement
from carnet.db.tables import access_rights, record_access
from tests.conftest import Backend

INSERT = DriverStatement(insert(access_rights), [c.name for c in access_rights.columns])
RAISE = DriverStatement(update(access_rights).where(access_rights.c.patient_id == bindparam("pid"))
                        .values(level=bindparam("lv"), until_day=None))
ROWS = DriverStatement(select(access_rights.c.actor, access_rights.c.level, access_rights.c.until_day)
                       .where(access_rights.c.patient_id == bindparam("pid")).order_by(access_rights.c.actor))
DROP = DriverStatement(delete(access_rights).where(access_rights.c.patient_id == bindparam("pid")))
RECORD = DriverStatement(insert(record_access), [c.name for c in record_access.columns])


def test_driver_statements_write_and_read_as_sqlalchemy_would(backend: Backend) -> None:
    backend.clean()
    with backend.engine.connect() as conn, conn.begin():
        INSERT.executemany(conn, [{"actor": "Practitioner/a", "patient_id": "p1", "level": 2, "until_day": 9},
                                  {"actor": "Practitioner/b", "patient_id": "p1", "level": 1}])
        INSERT.execute(conn, {"actor": "Practitioner/a", "patient_id": "p2", "level": 3, "until_day": None})
        RECORD.execute(conn, {"patient_id": "p1", "open": True, "qualified": False, "emergency_opposed": False,
                              "minor": True})
        assert ROWS.execute(conn, {"pid": "p1"}).fetchall() == [("Practitioner/a", 2, 9), ("Practitioner/b", 1, None)]
        assert RAISE.execute(conn, {"pid": "p1", "lv": 4}).rowcount == 2  # until_day: the statement's NULL
        assert ROWS.execute(conn, {"pid": "p1"}).fetchall() == [("Practitioner/a", 4, None), ("Practitioner/b", 4, None)]
        assert DROP.execute(conn, {"pid": "p1"}).rowcount == 2
        assert DROP.execute(conn, {"pid": "nobody"}).rowcount == 0
    with backend.engine.connect() as conn:  # what was committed, read back through SQLAlchemy
        t = access_rights.c
        assert conn.execute(select(t.patient_id, t.level)).all() == [("p2", 3)]
        r = conn.execute(select(record_access)).one()
        assert (r.open, r.qualified, r.minor, r.recheck_day) == (True, False, True, None)


def test_a_duplicate_row_raises_sqlalchemys_integrity_error_and_changes_nothing(backend: Backend) -> None:
    backend.clean()
    row = {"actor": "Practitioner/a", "patient_id": "p1", "level": 2}
    with backend.engine.connect() as conn, conn.begin():
        INSERT.execute(conn, row)
    with pytest.raises(IntegrityError), backend.engine.connect() as conn, conn.begin():
        INSERT.executemany(conn, [{**row, "patient_id": "p9"}, row])
    with backend.engine.connect() as conn:
        assert conn.execute(select(access_rights.c.patient_id, access_rights.c.level)).all() == [("p1", 2)]
