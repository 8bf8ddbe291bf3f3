"""Index entries answer a search's checks: token codes in the per-resource index, res_id in the
reference value index

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

A search checks its other criteria on each candidate's own index rows. With ``code`` in
``ix_idx_token_resource`` a token check reads the table row only for candidates whose code
matches (a ``role=60`` check on 781 candidate PractitionerRoles: 109 row reads instead of 781).
With ``res_id`` at the end of ``ix_idx_reference_value``, following a reference back to the
resources that hold it (a chain, ``subject=``) reads the index alone.
"""

from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_idx_token_resource', 'idx_token')
    op.create_index('ix_idx_token_resource', 'idx_token', ['res_type', 'res_id', 'param', 'code'])
    op.drop_index('ix_idx_reference_value', 'idx_reference')
    op.create_index('ix_idx_reference_value', 'idx_reference',
                    ['res_type', 'param', 'target_id', 'target_type', 'res_id'])


def downgrade() -> None:
    op.drop_index('ix_idx_reference_value', 'idx_reference')
    op.create_index('ix_idx_reference_value', 'idx_reference', ['res_type', 'param', 'target_id', 'target_type'])
    op.drop_index('ix_idx_token_resource', 'idx_token')
    op.create_index('ix_idx_token_resource', 'idx_token', ['res_type', 'res_id', 'param'])
