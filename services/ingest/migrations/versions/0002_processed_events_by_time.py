"""processed_events by processed_at, so old ids are pruned without a scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.alembic import create_index_concurrently, drop_index_concurrently

SCHEMA = "ingest"
revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:  # every event writes a processed id: built without stopping that
    create_index_concurrently(
        "processed_events_processed_at", "processed_events", ["processed_at"], SCHEMA
    )


def downgrade() -> None:
    drop_index_concurrently("processed_events_processed_at", "processed_events", SCHEMA)
