"""processed_events by processed_at, so old ids are pruned without a scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

SCHEMA = "ingest"
revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "processed_events_processed_at", "processed_events", ["processed_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("processed_events_processed_at", "processed_events", schema=SCHEMA)
