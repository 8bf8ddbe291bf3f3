"""Audit rows' content compressed with LZ4 on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

An AuditEvent's canonical JSON (~1.9 KB) makes its row pass PostgreSQL's 2 KB TOAST threshold, so
the content is stored compressed, by default with pglz, whose decompression cost ~8 µs a row: most
of what the sequencer and ``carnet verify`` spend reading a row. LZ4 decompresses several times
faster for about the same size. Rows written before keep their compression (PostgreSQL reads
both); a server built without LZ4 keeps pglz. SQLite stores the bytes as they are.
"""

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    supported = bind.execute(sa.text(
        "SELECT count(*) FROM pg_catalog.pg_settings WHERE name = 'default_toast_compression' "
        "AND 'lz4' = ANY(enumvals)")).scalar()
    if supported:
        op.execute("ALTER TABLE audit_events ALTER COLUMN content SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_events ALTER COLUMN content SET COMPRESSION default")
