"""Jobs: paused state, priority, fork lineage, running-job quotas (issue 13).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # no schema change (yet)


def downgrade() -> None:
    pass
