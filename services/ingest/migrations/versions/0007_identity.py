"""identity: a guest's e-mail key as an alias of the account with the same e-mail in the shop

Revision ID: 0007_identity
Revises: 0005_coupons
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

SCHEMA = "ingest"
revision: str = "0007_identity"
down_revision: str | None = "0006_purchase_days_predictions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customer_aliases",
        sa.Column("alias_key", sa.Text, primary_key=True),  # the guest key, shop:e:<e-mail>
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),  # trimmed and lowercased
        sa.Column("canonical_key", sa.Text, nullable=False),  # the account key, shop:c:<id>
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("merged_at", TZ),  # set when a stored guest's history was merged in
        sa.Column("merged_by", sa.Text),  # the event that merged it (announced again with it)
        schema=SCHEMA,
    )
    op.create_index(
        "customer_aliases_canonical", "customer_aliases", ["canonical_key"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("customer_aliases_canonical", "customer_aliases", schema=SCHEMA)
    op.drop_table("customer_aliases", schema=SCHEMA)
