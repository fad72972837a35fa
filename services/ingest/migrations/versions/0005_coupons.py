"""coupons: discount codes the dispatcher handed to messages (from coupon.issued), so an order
that uses one is attributed to the message that carried it; conversions say which code

Revision ID: 0005_coupons
Revises: 0004_customer_facts_catalog
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

SCHEMA = "ingest"
revision: str = "0005_coupons"
down_revision: str | None = "0004_customer_facts_catalog"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("code_key", sa.Text, primary_key=True),  # lower(code): checkouts ignore case
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("request_key", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("journey_id", sa.Text, nullable=False),
        sa.Column("step_id", sa.Text, nullable=False),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("redeemed_at", TZ),
        sa.Column("redeemed_order_id", sa.Text),
        schema=SCHEMA,
    )
    op.add_column("conversions", sa.Column("code", sa.Text), schema=SCHEMA)
    op.add_column(
        "conversions",
        sa.Column("late", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("conversions", "late", schema=SCHEMA)
    op.drop_column("conversions", "code", schema=SCHEMA)
    op.drop_table("coupons", schema=SCHEMA)
