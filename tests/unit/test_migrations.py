"""The revision the commands trust without loading alembic is the newest of the migration scripts."""

from __future__ import annotations

from pathlib import Path

from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import HEAD, current_revision, head_revision, stored_revision, upgrade


def test_head_is_the_newest_migration_script() -> None:
    assert head_revision() == HEAD


def test_a_new_database_is_migrated_once_then_read_as_up_to_date(tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    assert stored_revision(engine) is None
    upgrade(engine)
    assert stored_revision(engine) == current_revision(engine) == HEAD
    upgrade(engine)  # the quick path: nothing to do, nothing changed
    assert stored_revision(engine) == HEAD
    engine.dispose()
