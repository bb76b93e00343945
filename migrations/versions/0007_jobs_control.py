"""Jobs: `pausing`/`paused` states, fork lineage and the kept checkpoints of each job (issue 13).

Revision ID: 0007
Revises: 0006

Revision 0005 was reserved for this and shipped empty: a database already upgraded past it would never run a
change made there, so the change is a revision of its own at the head.
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
NEW = ("queued", "running", "cancelling", "pausing", "paused", "succeeded", "failed", "cancelled")


def _status_check(values: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{v}'" for v in values))


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite cannot ALTER a CHECK in place
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), _status_check(NEW))
        batch.add_column(sa.Column("parent_job_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("parent_step", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_parent_job_id_jobs"), "jobs", ["parent_job_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "job_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_checkpoints_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_checkpoints")),
        sa.UniqueConstraint("job_id", "step", name="uq_job_checkpoints_job_step"),
    )


def downgrade() -> None:
    op.drop_table("job_checkpoints")
    # Jobs in the new states have no place in the old schema: a paused job goes back to the queue.
    op.execute("UPDATE jobs SET status = 'queued' WHERE status IN ('pausing', 'paused')")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("fk_jobs_parent_job_id_jobs"), type_="foreignkey")
        batch.drop_column("parent_step")
        batch.drop_column("parent_job_id")
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), _status_check(OLD))
