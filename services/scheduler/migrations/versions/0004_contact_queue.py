"""contact queue: messages due but held by the shop's contact policy; contact log: what went

A held message is a row, never only memory: a restart loses none, and because the row is
deleted in the transaction that writes the request to the outbox, none goes twice.

Revision ID: 0004_contact_queue
Revises: 0003_engagement
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_contact_queue"
down_revision = "0003_engagement"
branch_labels = None
depends_on = None

SCHEMA = "scheduler"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "contact_queue",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("due_at", TZ, nullable=False),  # when the step fell due (or its best hour)
        sa.Column("expires_at", TZ),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("request", JSONB, nullable=False),  # the MessageRequest to publish
        sa.Column("check_at", TZ, nullable=False),  # when the policy looks at it again
        schema=SCHEMA,
    )
    op.create_index("contact_queue_due", "contact_queue", ["check_at"], schema=SCHEMA)
    op.create_index("contact_queue_customer", "contact_queue", ["customer_key"], schema=SCHEMA)
    op.create_table(
        "contact_log",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("released_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "contact_log_customer", "contact_log", ["customer_key", "released_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("contact_log", schema=SCHEMA)
    op.drop_table("contact_queue", schema=SCHEMA)
