"""Datasets at real size: stored (memory-mappable) form, ingest figures, resumable uploads (issue 10).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # no schema change (yet)


def downgrade() -> None:
    pass
