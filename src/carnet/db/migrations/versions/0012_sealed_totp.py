"""Sealed TOTP secrets: room for the sealed form in patient_accounts.totp_secret

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

A TOTP secret is now stored sealed (``v1.`` and the base64 of a nonce and its AES-256-GCM
ciphertext, 83 characters for a 32-character secret; carnet.auth.accounts). The secrets stored in
clear before this revision need the key file to be sealed, which a migration does not read:
``carnet migrate`` and ``carnet serve`` seal them right after upgrading, and a sign-in seals its own.
"""

import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patient_accounts') as batch:
        batch.alter_column('totp_secret', type_=sa.String(160), existing_type=sa.String(64),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('patient_accounts') as batch:
        batch.alter_column('totp_secret', type_=sa.String(64), existing_type=sa.String(160),
                           existing_nullable=True)
