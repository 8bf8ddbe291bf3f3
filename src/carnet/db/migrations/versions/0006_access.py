"""access control: access attributes on resources, access_rights, habilitation_types, record_access

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('resources') as batch:
        batch.add_column(sa.Column('doc_type', sa.String(64), nullable=True))
        batch.add_column(sa.Column('visibility', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('author', sa.String(80), nullable=True))
    op.create_table(
        'access_rights',
        sa.Column('actor', sa.String(80), primary_key=True),
        sa.Column('patient_id', sa.String(64), primary_key=True),
        sa.Column('level', sa.Integer(), nullable=False),
    )
    op.create_index('ix_access_rights_patient', 'access_rights', ['patient_id'])
    op.create_table(
        'habilitation_types',
        sa.Column('profession', sa.String(16), primary_key=True),
        sa.Column('doc_type', sa.String(64), primary_key=True),
    )
    op.create_table(
        'record_access',
        sa.Column('patient_id', sa.String(64), primary_key=True),
        sa.Column('open', sa.Boolean(), nullable=False),
        sa.Column('qualified', sa.Boolean(), nullable=False),
        sa.Column('emergency_opposed', sa.Boolean(), nullable=False),
        sa.Column('minor', sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('record_access')
    op.drop_table('habilitation_types')
    op.drop_index('ix_access_rights_patient', 'access_rights')
    op.drop_table('access_rights')
    with op.batch_alter_table('resources') as batch:
        batch.drop_column('author')
        batch.drop_column('visibility')
        batch.drop_column('doc_type')
