"""identity: a guest key merged into an account (customer.merged.v1), so activity published
under the guest key before the merge is applied to the account

Revision ID: 0007_identity
Revises: 0005_reports
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_identity"
down_revision = "0006_predictions"
branch_labels = None
depends_on = None

SCHEMA = "scheduler"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customer_aliases",
        sa.Column("alias_key", sa.Text, primary_key=True),  # the guest key
        sa.Column("canonical_key", sa.Text, nullable=False),  # the account key
        sa.Column("partition", sa.Integer, nullable=False),  # the account key's partition
        sa.Column("merged_at", TZ, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("customer_aliases", schema=SCHEMA)
