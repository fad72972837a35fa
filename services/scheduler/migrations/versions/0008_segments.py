"""segments: durable segment timers, the safety-net sweeps, backfills, daily segment sizes and
the journey-wide enrolment count behind `limits.max_enrolments`

Revision ID: 0008_segments
Revises: 0006_predictions
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_segments"
down_revision: str | None = "0007_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # The next moment a customer enters a segment-triggered journey's segment; owned by the
    # customer's partition like the enrolment timers, deleted by the transaction that fires it.
    op.create_table(
        "segment_timers",
        sa.Column("journey_id", sa.Text, primary_key=True),
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("leaves_at", TS),  # when that stay in the segment ends by time alone
        schema=SCHEMA,
    )
    op.create_index("segment_timers_due", "segment_timers", ["partition", "due_at"], schema=SCHEMA)
    op.create_table(
        "segment_sweeps",
        sa.Column("journey_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("swept_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "segment_backfills",
        sa.Column("journey_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("customers", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "segment_sizes",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("segment", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("counted_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "journey_enrolment_counts",
        sa.Column("journey_id", sa.Text, primary_key=True),
        sa.Column("enrolled", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "journey_enrolment_counts",
        "segment_sizes",
        "segment_backfills",
        "segment_sweeps",
        "segment_timers",
    ):
        op.drop_table(table, schema=SCHEMA)
