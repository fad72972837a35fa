"""ab_winners: the A/B winner declared for a `send_winner` step, once and for good

One row per journey version and send step: the winning variant, the metric it won on, the
test's figures at that moment (per variant and the p-values of the leader against each other),
and when. Later entrants who reach the step get the winner; the row is never replaced.

Revision ID: 0011_winner
Revises: 0010_insight_predictions
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011_winner"
down_revision: str | None = "0010_insight_predictions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ab_winners",
        sa.Column("journey_id", sa.Text, primary_key=True),
        sa.Column("journey_version", sa.Integer, primary_key=True),
        sa.Column("step_id", sa.Text, primary_key=True),
        sa.Column("variant", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),  # click, conversion or revenue
        sa.Column("p_values", JSONB, nullable=False),  # the winner against each other variant
        sa.Column("figures", JSONB, nullable=False),  # per variant: sent, successes, mean
        sa.Column("declared_at", TS, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("ab_winners", schema=SCHEMA)
