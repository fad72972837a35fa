"""reengagements: the latest order or opt-in per customer, which lifts a sunset

A sunset (customer.sunset.v1) suppresses a customer's marketing mail until they order or opt
in again. The two arrive on different topics, so either may come first: a sunset older than
the customer's latest re-engagement is never recorded, and a re-engagement removes older ones.

Revision ID: 0005_lifecycle_sunset
Revises: 0004_coupons
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_lifecycle_sunset"
down_revision: str | None = "0004_coupons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "reengagements",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("reengagements", schema=SCHEMA)
