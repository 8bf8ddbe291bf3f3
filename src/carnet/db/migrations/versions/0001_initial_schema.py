"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idx_date',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('low', sa.BigInteger(), nullable=False),
    sa.Column('high', sa.BigInteger(), nullable=False)
    )
    with op.batch_alter_table('idx_date', schema=None) as batch_op:
        batch_op.create_index('ix_idx_date_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_date_value', ['res_type', 'param', 'low', 'high'], unique=False)

    op.create_table('idx_number',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False)
    )
    with op.batch_alter_table('idx_number', schema=None) as batch_op:
        batch_op.create_index('ix_idx_number_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_number_value', ['res_type', 'param', 'value'], unique=False)

    op.create_table('idx_quantity',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('unit', sa.String(length=64), nullable=True)
    )
    with op.batch_alter_table('idx_quantity', schema=None) as batch_op:
        batch_op.create_index('ix_idx_quantity_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_quantity_value', ['res_type', 'param', 'code', 'value'], unique=False)

    op.create_table('idx_reference',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('url', sa.String(length=1024), nullable=True),
    sa.Column('id_system', sa.String(length=255), nullable=True),
    sa.Column('id_value', sa.String(length=255), nullable=True)
    )
    with op.batch_alter_table('idx_reference', schema=None) as batch_op:
        batch_op.create_index('ix_idx_reference_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_reference_target', ['target_type', 'target_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_reference_value', ['res_type', 'param', 'target_id', 'target_type'], unique=False)

    op.create_table('idx_string',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=False),
    sa.Column('exact', sa.String(length=1024), nullable=False)
    )
    with op.batch_alter_table('idx_string', schema=None) as batch_op:
        batch_op.create_index('ix_idx_string_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_string_value', ['res_type', 'param', 'value'], unique=False)

    op.create_table('idx_token',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=255), nullable=True),
    sa.Column('text', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('type_system', sa.String(length=255), nullable=True),
    sa.Column('type_code', sa.String(length=64), nullable=True)
    )
    with op.batch_alter_table('idx_token', schema=None) as batch_op:
        batch_op.create_index('ix_idx_token_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_token_value', ['res_type', 'param', 'code', 'system'], unique=False)

    op.create_table('idx_uri',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=1024), nullable=False)
    )
    with op.batch_alter_table('idx_uri', schema=None) as batch_op:
        batch_op.create_index('ix_idx_uri_resource', ['res_type', 'res_id', 'param'], unique=False)
        batch_op.create_index('ix_idx_uri_value', ['res_type', 'param', 'value'], unique=False)

    op.create_table('resource_versions',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('content', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('resource_versions', schema=None) as batch_op:
        batch_op.create_index('ix_versions_type_updated', ['res_type', 'last_updated'], unique=False)
        batch_op.create_index('ix_versions_updated', ['last_updated'], unique=False)
        batch_op.create_index('ux_versions_resource', ['res_type', 'res_id', 'version'], unique=True)

    op.create_table('resources',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('content', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('res_type', 'res_id')
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index('ix_resources_patient', ['patient_id'], unique=False)
        batch_op.create_index('ix_resources_type_updated', ['res_type', 'last_updated'], unique=False)
        batch_op.create_index('ix_resources_type_created', ['res_type', 'created_at', 'res_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_index('ix_resources_type_updated')
        batch_op.drop_index('ix_resources_patient')

    op.drop_table('resources')
    with op.batch_alter_table('resource_versions', schema=None) as batch_op:
        batch_op.drop_index('ux_versions_resource')
        batch_op.drop_index('ix_versions_updated')
        batch_op.drop_index('ix_versions_type_updated')

    op.drop_table('resource_versions')
    with op.batch_alter_table('idx_uri', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_uri_value')
        batch_op.drop_index('ix_idx_uri_resource')

    op.drop_table('idx_uri')
    with op.batch_alter_table('idx_token', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_token_value')
        batch_op.drop_index('ix_idx_token_resource')

    op.drop_table('idx_token')
    with op.batch_alter_table('idx_string', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_string_value')
        batch_op.drop_index('ix_idx_string_resource')

    op.drop_table('idx_string')
    with op.batch_alter_table('idx_reference', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_reference_value')
        batch_op.drop_index('ix_idx_reference_target')
        batch_op.drop_index('ix_idx_reference_resource')

    op.drop_table('idx_reference')
    with op.batch_alter_table('idx_quantity', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_quantity_value')
        batch_op.drop_index('ix_idx_quantity_resource')

    op.drop_table('idx_quantity')
    with op.batch_alter_table('idx_number', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_number_value')
        batch_op.drop_index('ix_idx_number_resource')

    op.drop_table('idx_number')
    with op.batch_alter_table('idx_date', schema=None) as batch_op:
        batch_op.drop_index('ix_idx_date_value')
        batch_op.drop_index('ix_idx_date_resource')

    op.drop_table('idx_date')
