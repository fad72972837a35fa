"""redactions: customers (and shops) erased lately, as hashes, so mail asked for before the
erasure and still on its way is not sent

Revision ID: 0006_privacy
Revises: 0005_lifecycle_sunset
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_privacy"
down_revision = "0005_lifecycle_sunset"
branch_labels = None
depends_on = None

SCHEMA = "dispatcher"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "redactions",
        # SHA-256 of (shop, customer key), (shop, lower-cased address) or (shop, '') for a shop
        sa.Column("subject_hash", sa.Text, primary_key=True),
        sa.Column("redacted_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("redactions_by_time", "redactions", ["redacted_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("redactions", schema=SCHEMA)
