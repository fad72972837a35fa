"""reports: what the reports need that the scheduler did not keep yet

- message_results: the dispatcher's last word on each request (sent, failed, suppressed with
  its reason, uncertain), from engagement.results;
- customer_orders: each order placed, from customer.activity, so a holdout's conversion and the
  retention cohorts can be counted without reading another service's tables;
- message_engagement.unsubscribed_at / bounced_at, which the activity already carries.

Revision ID: 0005_reports
Revises: 0004_contact_queue
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_reports"
down_revision = "0004_contact_queue"
branch_labels = None
depends_on = None

SCHEMA = "scheduler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "message_results",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),  # sent, failed, suppressed, uncertain
        sa.Column("reason", sa.Text),
        sa.Column("occurred_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "customer_orders",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("total", sa.Numeric, nullable=False),
        sa.Column("placed_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "customer_orders_by_customer",
        "customer_orders",
        ["customer_key", "placed_at"],
        schema=SCHEMA,
    )
    op.create_index(
        "enrollments_by_journey", "enrollments", ["journey_id", "entered_at"], schema=SCHEMA
    )
    op.add_column("message_engagement", sa.Column("unsubscribed_at", TS), schema=SCHEMA)
    op.add_column("message_engagement", sa.Column("bounced_at", TS), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("message_engagement", "bounced_at", schema=SCHEMA)
    op.drop_column("message_engagement", "unsubscribed_at", schema=SCHEMA)
    op.drop_index("enrollments_by_journey", "enrollments", schema=SCHEMA)
    op.drop_table("customer_orders", schema=SCHEMA)
    op.drop_table("message_results", schema=SCHEMA)
