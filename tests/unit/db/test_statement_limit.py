"""The server's statement time limit stops a long read with an error :func:`is_timeout` recognises,
and spares the connections marked ``UNTIMED``: the server's start-up work (writing the access
matrix) must not fail because a busy machine made it slower than a request may be."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from carnet.db.engine import UNTIMED, is_timeout, make_engine
from carnet.policy.dicah import DicahPolicy
from tests.conftest import Backend

LIMIT = 0.05  # seconds; the slow query below takes several times that


def _slow_count(conn: Connection) -> tuple[int, int]:
    """A read that runs several times LIMIT: (its count, the count it must give)."""
    if conn.dialect.name == "postgresql":
        sql, rows = "SELECT count(*) FROM generate_series(1, 8000000)", 8_000_000
    else:
        sql, rows = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000000) "
                     "SELECT count(*) FROM n"), 4_000_000
    return int(conn.execute(text(sql)).scalar_one()), rows


def test_a_long_read_is_stopped_and_an_untimed_connection_is_not(backend: Backend) -> None:
    engine = make_engine(backend.settings, statement_seconds=LIMIT)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as stopped:
            _slow_count(conn)
        assert is_timeout(stopped.value)
        with engine.connect().execution_options(**{UNTIMED: True}) as conn, conn.begin():
            got, wanted = _slow_count(conn)
            assert got == wanted
        with engine.connect() as conn, pytest.raises(DBAPIError):  # the mark does not outlive its connection
            _slow_count(conn)
    finally:
        engine.dispose()


def test_the_access_matrix_is_written_under_the_servers_time_limit(backend: Backend) -> None:
    """What made a server fail to start: on SQLite the read of the stored matrix outlasting the
    limit (a limit of a microsecond stands for a busy machine); on PostgreSQL another node's lock on
    the table while it rewrites it (a 0.3 s wait, under a 50 ms limit)."""
    DicahPolicy().attach(backend.engine)  # the matrix is stored: the next start reads it whole
    holder = None
    if backend.name == "postgresql":
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            with backend.engine.connect() as conn, conn.begin():
                conn.execute(text("LOCK TABLE habilitation_types IN EXCLUSIVE MODE"))
                locked.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert locked.wait(10)
        threading.Timer(0.3, release.set).start()
    engine = make_engine(backend.settings, statement_seconds=LIMIT if holder else 1e-6)
    try:
        DicahPolicy().attach(engine)
        with backend.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM habilitation_types")).scalar_one() > 500
    finally:
        engine.dispose()
        if holder is not None:
            holder.join(10)
