"""privacy requests: erasure and export requests, and which service answered them

A request row holds no personal data: the subject is kept as SHA-256 hashes only, so a later
erasure of the same customer can find and delete an export made for them. An export's parts
(the customer's data, one per service) are deleted when the export expires.

Revision ID: 0009_privacy
Revises: 0008_segments
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0009_privacy"
down_revision = "0008_segments"
branch_labels = None
depends_on = None

SCHEMA = "scheduler"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "privacy_requests",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),  # redact | export
        sa.Column("scope", sa.Text, nullable=False),  # customer | shop
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("platform_request_id", sa.Text),
        sa.Column("subject_hashes", ARRAY(sa.Text), nullable=False),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("erased_at", TZ),  # an export whose subject was erased since
        sa.Column("expires_at", TZ),  # an export's data is deleted then
        schema=SCHEMA,
    )
    op.create_index("privacy_requests_expiry", "privacy_requests", ["expires_at"], schema=SCHEMA)
    op.create_table(
        "privacy_parts",
        sa.Column(
            "request_id",
            sa.Text,
            sa.ForeignKey(f"{SCHEMA}.privacy_requests.request_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("service", sa.Text, primary_key=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("erased", JSONB),  # rows erased per table (a redact's confirmation)
        sa.Column("data", JSONB),  # the service's part of an export
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("privacy_parts", schema=SCHEMA)
    op.drop_table("privacy_requests", schema=SCHEMA)
