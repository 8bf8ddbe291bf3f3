"""patient match keys (blocking keys for Patient/$match)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patient_match_keys',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False)
    )
    with op.batch_alter_table('patient_match_keys', schema=None) as batch_op:
        batch_op.create_index('ix_patient_match_keys_key', ['key', 'patient_id'], unique=False)
        batch_op.create_index('ix_patient_match_keys_patient', ['patient_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('patient_match_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_patient_match_keys_patient')
        batch_op.drop_index('ix_patient_match_keys_key')
    op.drop_table('patient_match_keys')
