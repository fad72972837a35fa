"""predictions keep the figures a refresh replaced, so a segment over them sees who entered

Revision ID: 0010_insight_predictions
Revises: 0009_privacy
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010_insight_predictions"
down_revision: str | None = "0009_privacy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The customer's predictions before the refresh that last changed them (changed_at);
    # None: that refresh gave the customer their first.
    op.add_column("predictions", sa.Column("previous", JSONB), schema="scheduler")


def downgrade() -> None:
    op.drop_column("predictions", "previous", schema="scheduler")
