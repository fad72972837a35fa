"""dispatcher.messages records the SMTP stage a send reached, and which claim owns it.

'sending' splits into 'claimed' (no DATA command issued yet: safe to send after a crash) and
'data' (DATA was about to go out or went out: a crash leaves it 'uncertain'). Rows a crash
left in 'sending' become 'claimed' when no SMTP attempt was counted, else 'data'.

Revision ID: 0003_send_stages
Revises: 0002_suppressions
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_send_stages"
down_revision = "0002_suppressions"
branch_labels = None
depends_on = None

SCHEMA = "dispatcher"
STATUSES = "'claimed', 'data', 'sent', 'failed', 'suppressed', 'uncertain'"


def upgrade() -> None:
    op.add_column("messages", sa.Column("claim_id", sa.Text), schema=SCHEMA)
    op.drop_constraint("messages_status_known", "messages", schema=SCHEMA)
    op.execute(
        f"UPDATE {SCHEMA}.messages SET status = "
        "CASE WHEN attempts = 0 THEN 'claimed' ELSE 'data' END WHERE status = 'sending'"
    )
    op.create_check_constraint(
        "messages_status_known", "messages", f"status IN ({STATUSES})", schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_constraint("messages_status_known", "messages", schema=SCHEMA)
    op.execute(
        f"UPDATE {SCHEMA}.messages SET status = CASE status "
        "WHEN 'uncertain' THEN 'failed' ELSE 'sending' END "
        "WHERE status IN ('claimed', 'data', 'uncertain')"
    )
    op.create_check_constraint(
        "messages_status_known",
        "messages",
        "status IN ('sending', 'sent', 'failed', 'suppressed')",
        schema=SCHEMA,
    )
    op.drop_column("messages", "claim_id", schema=SCHEMA)
