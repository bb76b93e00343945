"""Jobs: `preempted_by` (preemption of `low` jobs for a waiting `high` one; issue 13).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08

Set together with `pausing` when a worker sweep preempts a running `low` job (GANFT_PREEMPTION):
once its trainer has checkpointed, the job is `queued` again rather than `paused`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("preempted_by", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("preempted_by")
