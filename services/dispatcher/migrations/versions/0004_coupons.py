"""coupons: discount codes, generated per message or uploaded by the shop as a pool

One row per (shop, code). A generated code is inserted when it is issued; a pool code is
inserted by the upload with no request key and handed out once by setting it. The unique
request key is what makes a redelivered request or a re-render show the same code.

Revision ID: 0004_coupons
Revises: 0003_send_stages
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_coupons"
down_revision = "0003_send_stages"
branch_labels = None
depends_on = None

SCHEMA = "dispatcher"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("request_key", sa.Text, unique=True),  # NULL: a pool code not handed out yet
        sa.Column("customer_key", sa.Text),
        sa.Column("journey_id", sa.Text),
        sa.Column("step_id", sa.Text),
        sa.Column("issued_at", TZ),
        sa.Column("expires_at", TZ),
        sa.Column("uploaded_at", TZ),
        # When the shop platform confirmed it created the code (Shopify connector); a generated
        # code for such a shop is never mailed before this is set.
        sa.Column("platform_confirmed_at", TZ),
        sa.CheckConstraint("source IN ('generated', 'pool')", name="coupons_source_known"),
        schema=SCHEMA,
    )
    # The free pool of a shop, in upload order: what the hand-out statement scans.
    op.create_index(
        "coupons_free_pool",
        "coupons",
        ["shop_id", "uploaded_at", "code"],
        schema=SCHEMA,
        postgresql_where=sa.text("request_key IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("coupons", schema=SCHEMA)
