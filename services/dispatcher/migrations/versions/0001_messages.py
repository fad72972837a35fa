"""dispatcher.messages: one row per message request, the record of what was sent.

Revision ID: 0001
Revises:
Create Date: 2024-10-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "dispatcher"


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("journey_id", sa.Text, nullable=False),
        sa.Column("step_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("smtp_message_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('sending', 'sent', 'failed', 'suppressed')", name="messages_status_known"
        ),
        schema=SCHEMA,
    )
    # Frequency caps and "what did this customer get lately" read by customer and time.
    op.create_index(
        "messages_customer_created", "messages", ["customer_key", "created_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("messages_customer_created", table_name="messages", schema=SCHEMA)
    op.drop_table("messages", schema=SCHEMA)
