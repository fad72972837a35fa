"""purchase days: distinct UTC days with a counted order and the first day's spend, which the
scheduler's purchase predictions (BG/NBD, Gamma-Gamma) count as repeat purchases; existing
customers are counted from their stored orders

Revision ID: 0006_purchase_days_predictions
Revises: 0005_coupons
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

SCHEMA = "ingest"
revision: str = "0006_purchase_days_predictions"
down_revision: str | None = "0005_coupons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = """
    UPDATE ingest.customers c SET purchase_days = d.days, first_day_spent = d.first_day_spent
    FROM (
        SELECT customer_key, count(DISTINCT day) AS days,
            sum(total_price) FILTER (WHERE day = first_day) AS first_day_spent
        FROM (
            SELECT customer_key, total_price, (placed_at AT TIME ZONE 'UTC')::date AS day,
                min((placed_at AT TIME ZONE 'UTC')::date) OVER (PARTITION BY customer_key)
                    AS first_day
            FROM ingest.orders WHERE status <> 'cancelled'
        ) o
        GROUP BY customer_key
    ) d
    WHERE c.customer_key = d.customer_key
"""


def upgrade() -> None:
    for name, kind in (("purchase_days", sa.Integer), ("first_day_spent", sa.Numeric)):
        op.add_column(
            "customers",
            sa.Column(name, kind, nullable=False, server_default=sa.text("0")),
            schema=SCHEMA,
        )
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_column("customers", "first_day_spent", schema=SCHEMA)
    op.drop_column("customers", "purchase_days", schema=SCHEMA)
