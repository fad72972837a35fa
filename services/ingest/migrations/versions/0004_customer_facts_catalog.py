"""customer facts for win-back (rolling periods, categories, time zone, stage), the product
catalog and daily product sales

Revision ID: 0004_customer_facts_catalog
Revises: 0003_engagement
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

SCHEMA = "ingest"
revision: str = "0004_customer_facts_catalog"
down_revision: str | None = "0003_engagement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    _customers()
    op.add_column("order_lines", sa.Column("category", sa.Text), schema=SCHEMA)
    op.create_index("orders_by_customer", "orders", ["customer_key", "placed_at"], schema=SCHEMA)
    op.create_table(
        "customer_categories",
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("category", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("spent", sa.Numeric, nullable=False),
        sa.Column("first_order_at", TZ, nullable=False),
        sa.Column("last_order_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "customer_categories_by_shop",
        "customer_categories",
        ["shop_id", "category"],
        schema=SCHEMA,
    )
    _catalog()


def _customers() -> None:
    empty = sa.text("'{}'")
    for column in (
        sa.Column("country", sa.Text),
        sa.Column("time_zone", sa.Text),
        sa.Column("recent_order_at", ARRAY(TZ), nullable=False, server_default=empty),
        sa.Column("recent_order_total", ARRAY(sa.Numeric), nullable=False, server_default=empty),
        sa.Column("last_order_categories", ARRAY(sa.Text), nullable=False, server_default=empty),
        sa.Column("stage", sa.Text),
        sa.Column("stage_due_at", TZ),
    ):
        op.add_column("customers", column, schema=SCHEMA)
    op.create_index(
        "customers_stage_due",
        "customers",
        ["stage_due_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("stage_due_at IS NOT NULL"),
    )
    op.create_table(
        "shop_stats",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("high_value_from", sa.Numeric),
        sa.Column("computed_at", TZ, nullable=False),
        schema=SCHEMA,
    )


def _catalog() -> None:
    op.create_table(
        "products",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("category", sa.Text),
        sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("url", sa.Text),
        sa.Column("image_url", sa.Text),
        sa.Column("price", sa.Numeric),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "products_available_by_category",
        "products",
        ["shop_id", "category"],
        schema=SCHEMA,
        postgresql_where=sa.text("available"),
    )
    op.create_table(
        "product_sales",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("units", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("product_sales", "products", "customer_categories", "shop_stats"):
        op.drop_table(table, schema=SCHEMA)
    op.drop_index("orders_by_customer", "orders", schema=SCHEMA)
    op.drop_column("order_lines", "category", schema=SCHEMA)
    op.drop_index("customers_stage_due", "customers", schema=SCHEMA)
    for name in (
        "country",
        "time_zone",
        "recent_order_at",
        "recent_order_total",
        "last_order_categories",
        "stage",
        "stage_due_at",
    ):
        op.drop_column("customers", name, schema=SCHEMA)
