"""An index on refresh_tokens.revoked_at: every gateway replica loads the recently revoked sessions at start and
re-syncs them periodically (crm_gateway.revocations), which must not scan the whole token table.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_index("ix_refresh_tokens_revoked_at", "refresh_tokens", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_revoked_at", table_name="refresh_tokens")
