"""suppressions: customers who unsubscribed and addresses that hard-bounced

Revision ID: 0002_suppressions
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_suppressions"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),  # customer | address
        sa.Column("value", sa.Text, primary_key=True),  # customer key | lowercased e-mail
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('customer', 'address')", name="suppression_kind"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("suppressions", schema=SCHEMA)
