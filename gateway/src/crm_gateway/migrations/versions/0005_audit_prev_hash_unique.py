"""A unique index on audit_log.prev_hash: no two records may follow the same one, so the chain cannot fork.

Gateway replicas on PostgreSQL append without a lock (crm_gateway.audit): each chains its batch to the head it
last saw and inserts it in one statement; a replica whose head is stale collides here (the record after that
head already names it) and re-reads the head. Existing chains are linear, so the index builds on them.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_index("ux_audit_prev_hash", "audit_log", ["prev_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_audit_prev_hash", table_name="audit_log")
