"""engagement: per-message opens, clicks, unsubscribes, bounces; per-customer last touches;
conversions (an order attributed to a message)

Revision ID: 0003_engagement
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

SCHEMA = "ingest"
revision: str = "0003_engagement"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("journey_id", sa.Text, nullable=False),
        sa.Column("step_id", sa.Text, nullable=False),
        sa.Column("sent_at", TZ, nullable=False),
        sa.Column("first_human_open_at", TZ),
        sa.Column("last_human_open_at", TZ),
        sa.Column("first_machine_open_at", TZ),
        sa.Column("human_opens", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("machine_opens", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("first_click_at", TZ),
        sa.Column("last_click_at", TZ),
        sa.Column("clicked_links", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("unsubscribed_at", TZ),
        sa.Column("bounced_at", TZ),
        sa.Column("converted_at", TZ),
        sa.Column("order_id", sa.Text),
        sa.Column("revenue", sa.Numeric),
        schema=SCHEMA,
    )
    op.create_index("messages_by_customer", "messages", ["customer_key", "sent_at"], schema=SCHEMA)
    op.create_table(
        "engagement",
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("last_human_open_at", TZ),
        sa.Column("last_click_at", TZ),
        sa.Column("unsubscribed_at", TZ),
        schema=SCHEMA,
    )
    op.create_table(
        "conversions",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("request_key", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("touch", sa.Text, nullable=False),
        sa.Column("touched_at", TZ, nullable=False),
        sa.Column("ordered_at", TZ, nullable=False),
        sa.Column("revenue", sa.Numeric, nullable=False),
        sa.Column("currency", sa.Text),
        sa.Column("recovered_cart_id", sa.Text),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("conversions", schema=SCHEMA)
    op.drop_table("engagement", schema=SCHEMA)
    op.drop_table("messages", schema=SCHEMA)
