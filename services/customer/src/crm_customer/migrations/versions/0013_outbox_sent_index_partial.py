"""The outbox's ``ix_outbox_published_at`` over sent rows only (:func:`crm_platform.schema.outbox_sent_index_partial`).

Revision ID: 0013
"""

from alembic import op

from crm_platform.schema import outbox_sent_index_full, outbox_sent_index_partial

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    outbox_sent_index_partial(op)


def downgrade() -> None:
    outbox_sent_index_full(op)
