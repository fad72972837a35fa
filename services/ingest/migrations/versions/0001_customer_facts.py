"""customer facts: processed events, customers, orders with lines, carts

Revision ID: 0001
Revises:
Create Date: 2024-10-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "ingest"
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", TZ, nullable=False, server_default=sa.text("now()")),
        schema=SCHEMA,
    )
    op.create_table(
        "customers",
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("locale", sa.Text),
        sa.Column("marketing_consent", sa.Text),
        sa.Column("registered_at", TZ),
        sa.Column("orders_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("total_spent", sa.Numeric, nullable=False, server_default=sa.text("0")),
        sa.Column("first_order_at", TZ),
        sa.Column("last_order_at", TZ),
        sa.Column("updated_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("customers_shop_email", "customers", ["shop_id", "email"], schema=SCHEMA)
    op.create_table(
        "orders",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("cart_id", sa.Text),
        sa.Column("currency", sa.Text),
        sa.Column("total_price", sa.Numeric, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("placed_at", TZ, nullable=False),
        sa.Column("paid_at", TZ),
        sa.Column("cancelled_at", TZ),
        sa.Column("updated_at", TZ, nullable=False),
        sa.CheckConstraint("status IN ('placed', 'paid', 'cancelled')", name="orders_status"),
        schema=SCHEMA,
    )
    op.create_index("orders_customer", "orders", ["customer_key", "placed_at"], schema=SCHEMA)
    op.create_table(
        "order_lines",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Text),
        sa.Column("variant_id", sa.Text),
        sa.Column("sku", sa.Text),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("variant_title", sa.Text),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("price", sa.Numeric, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "carts",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("cart_id", sa.Text, primary_key=True),
        sa.Column("customer_key", sa.Text),
        sa.Column("lines", JSONB, nullable=False),
        sa.Column("currency", sa.Text),
        sa.Column("total_price", sa.Numeric),
        sa.Column("recovery_url", sa.Text),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.CheckConstraint("status IN ('open', 'ordered', 'emptied')", name="carts_status"),
        schema=SCHEMA,
    )
    op.create_index(
        "carts_open_by_customer",
        "carts",
        ["customer_key", "updated_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    for table in ("carts", "order_lines", "orders", "customers", "processed_events"):
        op.drop_table(table, schema=SCHEMA)
