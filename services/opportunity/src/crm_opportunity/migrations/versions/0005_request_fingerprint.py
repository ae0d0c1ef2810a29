"""The idempotency key binds to its request: ``opportunities.request_fingerprint`` holds the SHA-256 of the request that
first used the row's ``request_id`` (crm_platform.idempotency.fingerprint), so a reuse of the key with another
request is refused. Nullable and without a default: on PostgreSQL adding it rewrites nothing; rows stored before
hold NULL and keep answering a retry as they did.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("opportunities", sa.Column("request_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("opportunities") as batch:
        batch.drop_column("request_fingerprint")
