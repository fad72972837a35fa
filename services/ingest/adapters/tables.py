"""The ingest schema as SQLAlchemy Core tables (the migrations create the same)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

SCHEMA = "ingest"
metadata = MetaData(schema=SCHEMA)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("processed_events_processed_at", "processed_at"),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_key", Text, primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("customer_id", Text),
    Column("email", Text),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("locale", Text),
    Column("marketing_consent", Text),
    Column("registered_at", DateTime(timezone=True)),
    Column("orders_count", Integer, nullable=False, server_default=text("0")),
    Column("total_spent", Numeric, nullable=False, server_default=text("0")),
    Column("first_order_at", DateTime(timezone=True)),
    Column("last_order_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("country", Text),
    Column("time_zone", Text),
    Column("recent_order_at", ARRAY(DateTime(timezone=True)), nullable=False),
    Column("recent_order_total", ARRAY(Numeric), nullable=False),
    Column("last_order_categories", ARRAY(Text), nullable=False),
    Column("stage", Text),
    Column("stage_due_at", DateTime(timezone=True)),
    Column("purchase_days", Integer, nullable=False, server_default=text("0")),
    Column("first_day_spent", Numeric, nullable=False, server_default=text("0")),
)

orders = Table(
    "orders",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("order_id", Text, primary_key=True),
    Column("customer_key", Text, nullable=False),
    Column("cart_id", Text),
    Column("currency", Text),
    Column("total_price", Numeric, nullable=False),
    Column("status", Text, nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("order_id", Text, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", Text),
    Column("variant_id", Text),
    Column("sku", Text),
    Column("title", Text, nullable=False),
    Column("variant_title", Text),
    Column("quantity", BigInteger, nullable=False),
    Column("price", Numeric, nullable=False),
    Column("category", Text),
)

carts = Table(
    "carts",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("cart_id", Text, primary_key=True),
    Column("customer_key", Text),
    Column("lines", JSONB, nullable=False),
    Column("currency", Text),
    Column("total_price", Numeric),
    Column("recovery_url", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),
    Index(
        "carts_open_by_customer",
        "customer_key",
        "updated_at",
        postgresql_where=text("status = 'open'"),
    ),
    Index("carts_by_customer", "customer_key", "updated_at"),
)

customer_categories = Table(
    "customer_categories",
    metadata,
    Column("customer_key", Text, primary_key=True),
    Column("category", Text, primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("spent", Numeric, nullable=False),
    Column("first_order_at", DateTime(timezone=True), nullable=False),
    Column("last_order_at", DateTime(timezone=True), nullable=False),
)

shop_stats = Table(
    "shop_stats",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("high_value_from", Numeric),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("product_id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("category", Text),
    Column("tags", ARRAY(Text), nullable=False),
    Column("url", Text),
    Column("image_url", Text),
    Column("price", Numeric),
    Column("available", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

product_sales = Table(
    "product_sales",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("product_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("units", BigInteger, nullable=False),
)

customer_aliases = Table(
    "customer_aliases",
    metadata,
    Column("alias_key", Text, primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("canonical_key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("merged_at", DateTime(timezone=True)),
    Column("merged_by", Text),
    Index("customer_aliases_canonical", "canonical_key"),
)
