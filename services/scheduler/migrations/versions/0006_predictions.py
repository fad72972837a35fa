"""purchase predictions: per shop the last fit (BG/NBD and Gamma-Gamma parameters, how much
history it saw, a note on how far to trust it), per customer what it predicts

Revision ID: 0006_predictions
Revises: 0005_reports
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_predictions"
down_revision = "0005_reports"
branch_labels = None
depends_on = None

SCHEMA = "scheduler"
TZ = sa.DateTime(timezone=True)
F = sa.Float(53)


def upgrade() -> None:
    op.create_table(
        "prediction_fits",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("as_of", TZ, nullable=False),  # the facts' cut-off: T is measured to it
        sa.Column("fitted_at", TZ, nullable=False),
        sa.Column("fit_seconds", F, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("repeat_buyers", sa.Integer, nullable=False),
        sa.Column("repeat_purchases", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),  # ok, rough, too_little_data, fit_failed
        sa.Column("note", sa.Text, nullable=False),
        *(sa.Column(name, F) for name in ("r", "alpha", "a", "b", "p", "q", "gamma")),
        schema=SCHEMA,
    )
    op.create_table(
        "predictions",
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("as_of", TZ, nullable=False),
        sa.Column("p_alive", F, nullable=False),
        sa.Column("orders_30d", F, nullable=False),
        sa.Column("orders_90d", F, nullable=False),
        sa.Column("next_order_at", TZ),
        sa.Column("order_value", F),
        sa.Column("changed_at", TZ, nullable=False),  # when a refresh last changed a figure
        schema=SCHEMA,
    )
    op.create_index("predictions_by_shop", "predictions", ["shop_id", "changed_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("predictions", schema=SCHEMA)
    op.drop_table("prediction_fits", schema=SCHEMA)
