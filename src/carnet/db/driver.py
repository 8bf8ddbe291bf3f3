"""Statements of the hot write path, compiled once per dialect and run on the driver's cursor.

SQLAlchemy's ``Connection.execute`` of a statement built once still costs ~12 us in Python per
call, plus the processing of each row's parameters for an ``executemany``: on a write of a Patient
(25 statements) that was a third of the time the write held SQLite's single write slot, several
times what SQLite itself spent (bench/write_local.py). A :class:`DriverStatement` is compiled once
per dialect; its parameters are bound by name, as for ``Connection.execute``, and handed to the
DBAPI cursor of the connection's current transaction as they are (only for columns whose types
need no conversion by SQLAlchemy: strings, integers, floats, bytes, booleans). Driver errors are
raised as SQLAlchemy's (``IntegrityError``...), as ``Connection.execute`` raises them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from carnet.db.engine import clear_deadline


class DriverStatement:
    """``stmt`` with its bind names; for an INSERT of a whole table, ``columns`` names the columns
    given (the others take their defaults; in an ``executemany``, a row without one of them
    gives it NULL)."""

    __slots__ = ("_compiled", "columns", "stmt")

    def __init__(self, stmt: Executable, columns: Sequence[str] | None = None) -> None:
        self.stmt = stmt
        self.columns = list(columns) if columns is not None else None
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _sql(self, conn: Connection) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        dialect = conn.dialect
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.stmt.compile(dialect=dialect, column_keys=self.columns)  # type: ignore[attr-defined]
            if "POSTCOMPILE" in str(compiled):
                raise ValueError("an expanding IN cannot run on the driver's cursor: give one bind per value")
            order = tuple(compiled.positiontup) if compiled.positional else None
            # values written into the statement (``.values(deleted=False)``) are binds too
            fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
            found = self._compiled[dialect.name] = (str(compiled), order, fixed)
        return found

    def _args(self, params: Mapping[str, Any], order: tuple[str, ...] | None) -> Any:
        if self.columns is not None:  # an INSERT: a column not given is NULL
            return (tuple(params.get(name) for name in order) if order is not None
                    else {name: params.get(name) for name in self.columns})
        return tuple(params[name] for name in order) if order is not None else params

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run once; returns the driver's cursor (``rowcount``, ``fetchall()`` of plain tuples)."""
        sql, order, fixed = self._sql(conn)
        args = self._args({**fixed, **params} if fixed else params, order)
        raw = conn.connection.driver_connection
        clear_deadline(conn)
        try:
            cursor = raw.cursor()  # type: ignore[union-attr]
            cursor.execute(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, args, exc, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect) from exc
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        sql, order, fixed = self._sql(conn)
        args = [self._args({**fixed, **row} if fixed else row, order) for row in rows]
        raw = conn.connection.driver_connection
        clear_deadline(conn)
        try:
            cursor = raw.cursor()  # type: ignore[union-attr]
            cursor.executemany(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, args, exc, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect) from exc
