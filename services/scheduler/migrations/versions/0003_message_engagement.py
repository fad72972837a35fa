"""message engagement: what the recipient did with each requested message (from activity)

Revision ID: 0003_engagement
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_engagement"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "message_engagement",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("human_opened_at", TS),
        sa.Column("machine_opened_at", TS),
        sa.Column("clicked_at", TS),
        sa.Column("converted_at", TS),
        sa.Column("revenue", sa.Numeric),
        schema=SCHEMA,
    )
    op.create_index(
        "message_requests_by_enrollment",
        "message_requests",
        ["enrollment_id", "requested_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("message_requests_by_enrollment", "message_requests", schema=SCHEMA)
    op.drop_table("message_engagement", schema=SCHEMA)
