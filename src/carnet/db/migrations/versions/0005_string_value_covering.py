"""idx_string value index covers res_id (index-only candidate scans, pair rows)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_idx_string_value', 'idx_string')
    op.create_index('ix_idx_string_value', 'idx_string', ['res_type', 'param', 'value', 'res_id'])


def downgrade() -> None:
    op.drop_index('ix_idx_string_value', 'idx_string')
    op.create_index('ix_idx_string_value', 'idx_string', ['res_type', 'param', 'value'])
