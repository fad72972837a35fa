"""importer: one index on orders (customer_key, placed_at), not two

0001 made `orders_customer` and 0004 `orders_by_customer` on the same columns: every order
written maintained both. The catalog's recommendation reads it by the name it was given in
0004 (docs/adr/0002-customer-facts.md), so that one stays.

Revision ID: 0008_importer_one_orders_index
Revises: 0007_identity
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.alembic import create_index_concurrently, drop_index_concurrently

SCHEMA = "ingest"
revision: str = "0008_importer_one_orders_index"
down_revision: str | None = "0007_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_index_concurrently("orders_customer", "orders", SCHEMA)


def downgrade() -> None:
    create_index_concurrently("orders_customer", "orders", ["customer_key", "placed_at"], SCHEMA)
