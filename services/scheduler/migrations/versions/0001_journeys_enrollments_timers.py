"""Journeys, customer facts, enrolments, durable timers and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("definition", JSONB, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("loaded_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "customers",
        sa.Column("customer_key", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("profile", JSONB, nullable=False),
        sa.Column("cart", JSONB),
        sa.Column("updated_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "processed_activities",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("journey_id", sa.Text, nullable=False),
        sa.Column("journey_version", sa.Integer, nullable=False),
        sa.Column("customer_key", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("holdout", sa.Boolean, nullable=False),
        sa.Column("exit_reason", sa.Text),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "enrollments_one_active",
        "enrollments",
        ["journey_id", "customer_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index("enrollments_by_customer", "enrollments", ["customer_key"], schema=SCHEMA)
    op.create_table(
        "timers",
        sa.Column(
            "enrollment_id",
            sa.BigInteger,
            sa.ForeignKey(f"{SCHEMA}.enrollments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("step_id", sa.Text, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("timers_due", "timers", ["partition", "due_at"], schema=SCHEMA)
    op.create_table(
        "message_requests",
        sa.Column("request_key", sa.Text, primary_key=True),
        sa.Column("enrollment_id", sa.BigInteger, nullable=False),
        sa.Column("step_id", sa.Text, nullable=False),
        sa.Column("variant", sa.Text),
        sa.Column("requested_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "outbox",
        "message_requests",
        "timers",
        "enrollments",
        "processed_activities",
        "customers",
        "journeys",
    ):
        op.drop_table(table, schema=SCHEMA)
