"""enrollments_one_active led by the customer: an activity batch finds its customers' enrolments

The activity batch locks the active enrolments of its customers. `enrollments_one_active`
(one active enrolment per journey and customer) led with the journey, so the planner could
only use it to read every active enrolment and filter them: O(table) per batch, quadratic
over a burst (a backfill into a table autovacuum has not analysed yet). The same unique
index led by the customer answers both: the uniqueness, and one probe per customer
(queries.ACTIVE_ENROLLMENTS_FOR_UPDATE). Reads by journey use enrollments_by_journey.

Revision ID: 0012_enrolperf_active
Revises: 0011_winner
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.alembic import create_index_concurrently, drop_index_concurrently

revision: str = "0012_enrolperf_active"
down_revision: str | None = "0011_winner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "scheduler"
INDEX = "enrollments_one_active"
NEXT = "enrollments_one_active_next"


def _one_active(columns: list[str]) -> None:
    """The new index is built beside the old one and swapped in, both CONCURRENTLY: a
    scheduler with millions of enrolments keeps writing meanwhile, and one of the two unique
    indexes holds at every moment."""
    where = sa.text("status = 'active'")
    create_index_concurrently(
        NEXT, "enrollments", columns, SCHEMA, unique=True, postgresql_where=where
    )
    drop_index_concurrently(INDEX, "enrollments", SCHEMA)
    op.execute(f"ALTER INDEX {SCHEMA}.{NEXT} RENAME TO {INDEX}")


def upgrade() -> None:
    _one_active(["customer_key", "journey_id"])


def downgrade() -> None:
    _one_active(["journey_id", "customer_key"])
