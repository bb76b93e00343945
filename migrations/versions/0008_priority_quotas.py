"""Jobs: `priority` (issue 13); tenants: quotas on running jobs and stored bytes (issues 12 and 13).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

`priority` is 0 (low), 1 (normal) or 2 (high); a free worker claims the highest first, FIFO within one.
A tenant's `max_running_jobs` and `max_storage_bytes` are NULL when unlimited.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.SmallInteger(), server_default="1", nullable=False))
        batch.create_check_constraint(op.f("ck_jobs_priority"), "priority IN (0, 1, 2)")
    # The claim order (ganft/repo/claims.py), read backwards: priority DESC, then created_at and id ASC.
    op.create_index(
        "ix_jobs_status_priority_created",
        "jobs",
        ["status", "priority", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_storage_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_storage_bytes")
        batch.drop_column("max_running_jobs")
    op.drop_index("ix_jobs_status_priority_created", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_priority"), type_="check")
        batch.drop_column("priority")
