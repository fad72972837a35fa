"""processed_activities by processed_at, so old ids are pruned without a scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from shared.alembic import create_index_concurrently, drop_index_concurrently

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"


def upgrade() -> None:  # every event writes a processed id: built without stopping that
    create_index_concurrently(
        "processed_activities_processed_at", "processed_activities", ["processed_at"], SCHEMA
    )


def downgrade() -> None:
    drop_index_concurrently("processed_activities_processed_at", "processed_activities", SCHEMA)
