"""The audit spool's consumed lengths (carnet.audit.spool)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

On SQLite a read's audit rows are appended to a file of the server process that answered it and
moved into ``audit_events`` by the sequencer; ``audit_spool_files`` records, in the transaction
that moved them, how far each file has been consumed.
"""

import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_spool_files',
        sa.Column('file', sa.String(200), primary_key=True),
        sa.Column('consumed', sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('audit_spool_files')
