"""documents: per-patient data keys, document contents, producers' unique ids

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('data_keys',
    sa.Column('patient_id', sa.String(length=64), primary_key=True),
    sa.Column('master_key_id', sa.String(length=16), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_data_keys_master', 'data_keys', ['master_key_id'])
    op.create_table('document_contents',
    sa.Column('binary_id', sa.String(length=64), primary_key=True),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('blob_key', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('sha1', sa.String(length=40), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_document_contents_blob', 'document_contents', ['blob_key'])
    op.create_index('ix_document_contents_patient', 'document_contents', ['patient_id'])
    op.create_table('document_unique_ids',
    sa.Column('unique_id', sa.String(length=255), primary_key=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table('document_unique_ids')
    op.drop_index('ix_document_contents_patient', 'document_contents')
    op.drop_index('ix_document_contents_blob', 'document_contents')
    op.drop_table('document_contents')
    op.drop_index('ix_data_keys_master', 'data_keys')
    op.drop_table('data_keys')
