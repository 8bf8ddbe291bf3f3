"""Rights that end: the day from which a record's derived rights may no longer hold

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Care-team, participant, consent and representative periods, and a minor's coming of age, change
who may read a record on a given day with no write to say so. ``access_rights.until_day`` is that
day for each row (read predicates ignore the row from then on) and ``record_access.recheck_day``
tells the server's rights worker which records to derive again. Every record stored before this
revision is due at once: the worker derives each again, in the background, and gives it its day.
"""

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_rights') as batch:
        batch.add_column(sa.Column('until_day', sa.Integer(), nullable=True))
    with op.batch_alter_table('record_access') as batch:
        batch.add_column(sa.Column('recheck_day', sa.Integer(), nullable=True))
    op.create_index('ix_record_access_recheck', 'record_access', ['recheck_day'])
    op.execute("UPDATE record_access SET recheck_day = 0")


def downgrade() -> None:
    op.drop_index('ix_record_access_recheck', 'record_access')
    with op.batch_alter_table('record_access') as batch:
        batch.drop_column('recheck_day')
    with op.batch_alter_table('access_rights') as batch:
        batch.drop_column('until_day')
