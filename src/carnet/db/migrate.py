"""Schema migrations: ``upgrade(engine)`` brings a database to the newest revision."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from carnet.db.tables import metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks it against alembic's reading of them):
# a command on a database already there starts without loading alembic and its scripts.
HEAD = "0013"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def stored_revision(engine: Engine) -> str | None:
    """The revision recorded in the database, read without alembic (None before the first migration)."""
    exists = ("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
              if engine.dialect.name == "sqlite" else "SELECT count(*) FROM pg_catalog.pg_tables "
              "WHERE tablename = 'alembic_version' AND schemaname = current_schema()")
    with engine.connect() as conn:
        if not conn.execute(text(exists)).scalar():
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and stored_revision(engine) == HEAD:
        return  # nothing to do: every command starts here
    from alembic import command

    cfg = _config()
    before = current_revision(engine)
    with engine.connect().execution_options(carnet_write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
    if engine.dialect.name == "sqlite":
        seed_sqlite_statistics(engine)
    elif current_revision(engine) != before:
        # A new or changed schema; an unchanged one keeps its statistics (autovacuum refreshes
        # them), so that starting a node does not sample every table of a large database.
        analyze(engine)


def analyze(engine: Engine) -> None:
    """Refresh the planner's statistics (PostgreSQL). Autovacuum does this within a minute or so
    of large changes; a bulk load should run it before serving searches, or plans made on the
    empty tables' statistics can cost seconds."""
    if engine.dialect.name == "sqlite":
        with engine.connect().execution_options(carnet_write=True) as conn:
            conn.exec_driver_sql("PRAGMA optimize")
            conn.commit()
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")


def _shape(table: str, index: str, columns: int) -> str:
    """A typical shape for an index: ~10M rows, and how many rows each prefix of its columns
    selects. Per-resource indexes select a handful of rows; value indexes many more."""
    if index.endswith("_resource"):
        return " ".join(["10000000", "1000000", "8", "2", "1"][: columns + 1])
    if index == "ix_idx_reference_target":
        return "10000000 1000000 20 5"
    if index.startswith("ix_idx_"):
        return " ".join(["10000000", "1000000", "100000", "100", "50", "20"][: columns + 1])
    return " ".join(["1000000", "100000"] + ["1"] * (columns - 1))


def seed_sqlite_statistics(engine: Engine) -> None:
    """Give SQLite's planner the shape of the data before there is any.

    Without statistics, SQLite prefers the index with the most equality columns, so a check on
    one resource's own index rows would scan every row holding the searched value instead.
    Indexes that already have measured statistics (from ANALYZE / PRAGMA optimize) are left alone.
    """
    with engine.connect().execution_options(carnet_write=True) as conn:
        conn.exec_driver_sql("ANALYZE sqlite_schema")
        known = {row[0] for row in conn.exec_driver_sql("SELECT idx FROM sqlite_stat1 WHERE idx IS NOT NULL")}
        for table in metadata.sorted_tables:
            for index in table.indexes:
                if index.name and index.name not in known:
                    conn.exec_driver_sql(
                        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)",
                        (table.name, index.name, _shape(table.name, index.name, len(index.columns))))
        conn.exec_driver_sql("ANALYZE sqlite_schema")  # reload the statistics
        conn.commit()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()
