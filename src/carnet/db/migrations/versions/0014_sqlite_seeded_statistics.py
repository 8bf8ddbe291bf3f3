"""SQLite: the planner statistics seeded for indexes outside the search index, corrected

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

Earlier versions seeded ``sqlite_stat1`` as if any patient id, match key or agent selected 100,000
rows, so SQLite deleted one patient's match keys by a skip-scan of every key (0.5 ms on an empty
database, growing with the number of keys). The seeds still equal to those figures are dropped here;
measured statistics (from ``ANALYZE``) are left alone, and the upgrade seeds the new shapes.
"""

from alembic import op

from carnet.db.migrate import earlier_seeds

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if not bind.exec_driver_sql("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'").first():
        return
    for index, stat in earlier_seeds().items():
        bind.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE idx = ? AND stat = ?", (index, stat))


def downgrade() -> None:
    pass
