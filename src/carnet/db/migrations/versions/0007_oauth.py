"""OAuth 2.0 / OpenID Connect authorisation server: clients, codes, refresh tokens, revocations,
client assertion ids, sign-in sessions and patient accounts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'oauth_clients',
        sa.Column('client_id', sa.String(64), primary_key=True),
        sa.Column('name', sa.String(255), nullable=False),
        sa.Column('client_type', sa.String(16), nullable=False),
        sa.Column('secret_hash', sa.String(255), nullable=True),
        sa.Column('redirect_uris', sa.Text(), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('jwks', sa.Text(), nullable=True),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
    )
    op.create_table(
        'oauth_codes',
        sa.Column('code_hash', sa.String(64), primary_key=True),
        sa.Column('client_id', sa.String(64), nullable=False),
        sa.Column('redirect_uri', sa.Text(), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('code_challenge', sa.String(128), nullable=False),
        sa.Column('nonce', sa.String(255), nullable=True),
        sa.Column('claims', sa.Text(), nullable=False),
        sa.Column('auth_time', sa.BigInteger(), nullable=False),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
        sa.Column('used_at', sa.BigInteger(), nullable=True),
    )
    op.create_index('ix_oauth_codes_expires', 'oauth_codes', ['expires_at'])
    op.create_table(
        'oauth_refresh_tokens',
        sa.Column('token_hash', sa.String(64), primary_key=True),
        sa.Column('family_id', sa.String(64), nullable=False),
        sa.Column('client_id', sa.String(64), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('claims', sa.Text(), nullable=False),
        sa.Column('auth_time', sa.BigInteger(), nullable=False),
        sa.Column('issued_at', sa.BigInteger(), nullable=False),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
        sa.Column('rotated_at', sa.BigInteger(), nullable=True),
        sa.Column('revoked', sa.Boolean(), nullable=False),
    )
    op.create_index('ix_oauth_refresh_tokens_family', 'oauth_refresh_tokens', ['family_id'])
    op.create_index('ix_oauth_refresh_tokens_client', 'oauth_refresh_tokens', ['client_id'])
    op.create_table(
        'oauth_revoked_tokens',
        sa.Column('jti', sa.String(64), primary_key=True),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
        sa.Column('revoked_at', sa.BigInteger(), nullable=False),
    )
    op.create_table(
        'oauth_assertion_jtis',
        sa.Column('client_id', sa.String(64), primary_key=True),
        sa.Column('jti', sa.String(255), primary_key=True),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
    )
    op.create_table(
        'signin_sessions',
        sa.Column('session_id', sa.String(64), primary_key=True),
        sa.Column('state', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_signin_sessions_expires', 'signin_sessions', ['expires_at'])
    op.create_table(
        'patient_accounts',
        sa.Column('username', sa.String(128), primary_key=True),
        sa.Column('patient_id', sa.String(64), nullable=False),
        sa.Column('password_hash', sa.String(255), nullable=False),
        sa.Column('totp_secret', sa.String(64), nullable=True),
        sa.Column('totp_last_step', sa.BigInteger(), nullable=True),
        sa.Column('channel', sa.String(255), nullable=True),
        sa.Column('failed_count', sa.Integer(), nullable=False),
        sa.Column('locked_until', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_patient_accounts_patient', 'patient_accounts', ['patient_id'])


def downgrade() -> None:
    op.drop_index('ix_patient_accounts_patient', 'patient_accounts')
    op.drop_table('patient_accounts')
    op.drop_index('ix_signin_sessions_expires', 'signin_sessions')
    op.drop_table('signin_sessions')
    op.drop_table('oauth_assertion_jtis')
    op.drop_table('oauth_revoked_tokens')
    op.drop_index('ix_oauth_refresh_tokens_client', 'oauth_refresh_tokens')
    op.drop_index('ix_oauth_refresh_tokens_family', 'oauth_refresh_tokens')
    op.drop_table('oauth_refresh_tokens')
    op.drop_index('ix_oauth_codes_expires', 'oauth_codes')
    op.drop_table('oauth_codes')
    op.drop_table('oauth_clients')
