"""The server's statement time limit stops a long read with an error :func:`is_timeout` recognises,
and spares the connections marked ``UNTIMED``: the server's start-up work (writing the access
matrix) must not fail because a busy machine made it slower than a request may be."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from carnet.db.engine import UNTIMED, is_timeout, make_engine
from carnet.db.tables import habilitation_types
from carnet.policy.dicah import DicahPolicy
from tests.conftest import Backend

LIMIT = 0.05  # seconds; the slow query below takes several times that


def _slow_count(conn: Connection) -> int:
    if conn.dialect.name == "postgresql":
        sql = "SELECT count(*) FROM generate_series(1, 8000000)"
    else:
        sql = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000000) "
               "SELECT count(*) FROM n")
    return int(conn.execute(text(sql)).scalar_one())


def test_a_long_read_is_stopped_and_an_untimed_connection_is_not(backend: Backend) -> None:
    engine = make_engine(backend.settings, statement_seconds=LIMIT)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as stopped:
            _slow_count(conn)
        assert is_timeout(stopped.value)
        with engine.connect().execution_options(**{UNTIMED: True}) as conn, conn.begin():
            assert _slow_count(conn) in (4_000_000, 8_000_000)
        with engine.connect() as conn, pytest.raises(DBAPIError):  # the mark does not outlive its connection
            _slow_count(conn)
    finally:
        engine.dispose()


def test_the_access_matrix_is_written_under_the_servers_time_limit(backend: Backend) -> None:
    with backend.engine.connect().execution_options(carnet_write=True) as conn, conn.begin():
        conn.execute(habilitation_types.delete())
    engine = make_engine(backend.settings, statement_seconds=LIMIT)
    try:
        DicahPolicy().attach(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM habilitation_types")).scalar_one() > 0
    finally:
        engine.dispose()
