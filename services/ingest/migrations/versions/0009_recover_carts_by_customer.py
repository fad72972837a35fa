"""recover: carts by customer and time, whatever their status

Attribution matches an order that names no cart to the customer's most recent cart left before
the reminder went out. By then the order has closed that cart (status 'ordered'), so the
partial index of open carts (carts_open_by_customer) cannot find it.

Revision ID: 0009_recover_carts_by_customer
Revises: 0008_importer_one_orders_index
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.alembic import create_index_concurrently, drop_index_concurrently

SCHEMA = "ingest"
revision: str = "0009_recover_carts_by_customer"
down_revision: str | None = "0008_importer_one_orders_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:  # the consumer writes carts all the time: built without stopping it
    create_index_concurrently("carts_by_customer", "carts", ["customer_key", "updated_at"], SCHEMA)


def downgrade() -> None:
    drop_index_concurrently("carts_by_customer", "carts", SCHEMA)
