"""processed_activities by processed_at, so old ids are pruned without a scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"


def upgrade() -> None:
    op.create_index(
        "processed_activities_processed_at",
        "processed_activities",
        ["processed_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("processed_activities_processed_at", "processed_activities", schema=SCHEMA)
