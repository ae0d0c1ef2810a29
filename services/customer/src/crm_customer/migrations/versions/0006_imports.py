"""Batch import jobs, the uploaded file's chunks, the per-row report and the job's in-file duplicate keys.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_imports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("file_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("format", sa.String(10), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("file_size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("encoding", sa.String(20), nullable=False, server_default=""),
        sa.Column("columns", sa.Text, nullable=False, server_default="[]"),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("distribution", sa.String(20), nullable=False, server_default="none"),
        sa.Column("distribution_team_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("staff", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("creator_roles", sa.String(200), nullable=False, server_default=""),
        sa.Column("creator_scope", sa.String(20), nullable=False, server_default=""),
        sa.Column("creator_permissions", sa.Text, nullable=False, server_default=""),
        sa.Column("branch_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("region", sa.String(64), nullable=False, server_default=""),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("checkpoint_row", sa.Integer, nullable=False, server_default="1"),
        sa.Column("processed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("imported", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duplicates", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rolled_back", sa.Integer, nullable=False, server_default="0"),
        sa.Column("kept", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_customer_imports_file", "customer_imports", ["branch_id", "file_sha256"])
    op.create_index("ix_customer_imports_status", "customer_imports", ["status"])
    op.create_table(
        "customer_import_chunks",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "customer_import_rows",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("row_no", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("errors", sa.Text, nullable=False, server_default="[]"),
        sa.Column("duplicate_of", sa.String(36), nullable=False, server_default=""),
        sa.Column("duplicate_row", sa.Integer, nullable=False, server_default="0"),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
        sa.Column("owner_id", sa.String(64), nullable=False, server_default=""),
    )
    op.create_table(
        "customer_import_keys",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(120), primary_key=True),
        sa.Column("row_no", sa.Integer, nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("customer_import_keys")
    op.drop_table("customer_import_rows")
    op.drop_table("customer_import_chunks")
    op.drop_index("ix_customer_imports_status", "customer_imports")
    op.drop_index("ix_customer_imports_file", "customer_imports")
    op.drop_table("customer_imports")
