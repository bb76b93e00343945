"""Models: `deleted_at` (DELETE /v1/models/{id}; issue 12).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A deleted model is hidden from the API and no new job may use it; its files are removed by the
garbage collector (ganft/retention.py) once no unfinished job uses it (an uploaded model), or with
its job's artifacts (a job's output model).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("deleted_at")
