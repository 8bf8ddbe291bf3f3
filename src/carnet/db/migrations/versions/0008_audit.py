"""Traceability: audit events, the Merkle log's nodes and checkpoints, sealed daily journals

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'audit_events',
        sa.Column('seq', SEQ, primary_key=True, autoincrement=True),
        sa.Column('id', sa.String(64), nullable=False, unique=True),
        sa.Column('recorded', sa.BigInteger(), nullable=False),
        sa.Column('patient_id', sa.String(64), nullable=True),
        sa.Column('agent', sa.String(128), nullable=False),
        sa.Column('action', sa.String(1), nullable=False),
        sa.Column('subtype', sa.String(32), nullable=False),
        sa.Column('outcome', sa.Integer(), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
    )
    op.create_index('ix_audit_patient_recorded', 'audit_events', ['patient_id', 'recorded'])
    op.create_index('ix_audit_agent_recorded', 'audit_events', ['agent', 'recorded'])
    op.create_index('ix_audit_recorded', 'audit_events', ['recorded'])
    op.create_table('audit_pending', sa.Column('seq', SEQ, primary_key=True, autoincrement=False))
    op.create_table(
        'ledger_nodes',
        sa.Column('height', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('idx', sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column('hash', sa.LargeBinary(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=True),
    )
    op.create_index('ix_ledger_leaf_hash', 'ledger_nodes', ['hash'], sqlite_where=sa.text('height = 0'),
                    postgresql_where=sa.text('height = 0'))
    op.create_table(
        'ledger_checkpoints',
        sa.Column('size', sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column('root', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
    )
    op.create_index('ix_ledger_checkpoints_created', 'ledger_checkpoints', ['created_at'])
    op.create_table(
        'audit_journals',
        sa.Column('day', sa.String(10), primary_key=True),
        sa.Column('sealed_at', sa.BigInteger(), nullable=False),
        sa.Column('blob_key', sa.String(255), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('previous_sha256', sa.String(64), nullable=True),
        sa.Column('first_index', sa.BigInteger(), nullable=False),
        sa.Column('end_index', sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('audit_journals')
    op.drop_index('ix_ledger_checkpoints_created', table_name='ledger_checkpoints')
    op.drop_table('ledger_checkpoints')
    op.drop_index('ix_ledger_leaf_hash', table_name='ledger_nodes')
    op.drop_table('ledger_nodes')
    op.drop_table('audit_pending')
    for name in ('ix_audit_recorded', 'ix_audit_agent_recorded', 'ix_audit_patient_recorded'):
        op.drop_index(name, table_name='audit_events')
    op.drop_table('audit_events')
