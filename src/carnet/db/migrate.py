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
HEAD = "0014"


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


# Indexes outside the search index, by how many rows a value of each prefix of their columns selects
# (``sqlite_stat1`` layout: the rows, then one figure per column prefix).
_SHAPES = {
    "ix_resources_type_updated": "10000000 1000000 1",
    "ix_resources_type_created": "10000000 1000000 1 1",
    "ix_resources_patient": "10000000 20",  # a record holds tens of resources
    "ix_versions_updated": "10000000 1",
    "ix_versions_type_updated": "10000000 1000000 1",
    "ix_patient_match_keys_key": "1000000 5 1",  # a key is shared by a few patients
    "ix_patient_match_keys_patient": "1000000 4",  # a patient has a few keys
    "ix_access_rights_patient": "1000000 5",
    "ix_document_contents_patient": "1000000 20",
    "ix_document_contents_blob": "1000000 1",
    "ix_audit_patient_recorded": "10000000 1000 1",
    "ix_audit_agent_recorded": "10000000 1000 1",
    "ix_audit_recorded": "10000000 1",
    "ix_data_keys_master": "1000000 1000000",
}


def _shape(table: str, index: str, columns: int) -> str:
    """A typical shape for an index: ~10M rows, and how many rows each prefix of its columns
    selects. Per-resource indexes select a handful of rows; value indexes many more."""
    if index in _SHAPES:
        return _SHAPES[index]
    if index.endswith("_resource"):
        return " ".join(["10000000", "1000000", "8", "2", "1"][: columns + 1])
    if index == "ix_idx_reference_target":
        return "10000000 1000000 20 5"
    if index.startswith("ix_idx_"):
        return " ".join(["10000000", "1000000", "100000", "100", "50", "20"][: columns + 1])
    return " ".join(["1000000", "10"] + ["1"] * (columns - 1))


def earlier_seeds() -> dict[str, str]:
    """What versions before ``_SHAPES`` seeded for those indexes: 100,000 rows for any value of the
    first column, which made the planner walk a whole index (a skip-scan of every match key to
    find one patient's). Migration 0014 drops these seeds, and the upgrade seeds them again."""
    columns = {str(i.name): len(i.columns) for t in metadata.sorted_tables for i in t.indexes if i.name}
    return {name: " ".join(["1000000", "100000"] + ["1"] * (columns[name] - 1)) for name in _SHAPES}


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
