"""The scheduler's tables (schema `scheduler`), mirrored from migrations/ for SQLAlchemy Core."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

SCHEMA = "scheduler"
TS = sa.DateTime(timezone=True)
metadata = sa.MetaData(schema=SCHEMA)

journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("definition", JSONB, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("loaded_at", TS, nullable=False),
)
customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_key", sa.Text, primary_key=True),
    sa.Column("shop_id", sa.Text, nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("profile", JSONB, nullable=False),
    sa.Column("cart", JSONB),
    sa.Column("updated_at", TS, nullable=False),
)
processed_activities = sa.Table(
    "processed_activities",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("processed_at", TS, nullable=False),
    sa.Index("processed_activities_processed_at", "processed_at"),
)
enrollments = sa.Table(
    "enrollments",
    metadata,
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
)
timers = sa.Table(
    "timers",
    metadata,
    sa.Column("enrollment_id", sa.BigInteger, primary_key=True),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("step_id", sa.Text, nullable=False),
    sa.Column("due_at", TS, nullable=False),
)
message_requests = sa.Table(
    "message_requests",
    metadata,
    sa.Column("request_key", sa.Text, primary_key=True),
    sa.Column("enrollment_id", sa.BigInteger, nullable=False),
    sa.Column("step_id", sa.Text, nullable=False),
    sa.Column("variant", sa.Text),
    sa.Column("requested_at", TS, nullable=False),
)
message_engagement = sa.Table(
    "message_engagement",
    metadata,
    sa.Column("request_key", sa.Text, primary_key=True),
    sa.Column("sent_at", TS, nullable=False),
    sa.Column("human_opened_at", TS),
    sa.Column("machine_opened_at", TS),
    sa.Column("clicked_at", TS),
    sa.Column("converted_at", TS),
    sa.Column("revenue", sa.Numeric),
    sa.Column("unsubscribed_at", TS),
    sa.Column("bounced_at", TS),
)
# The dispatcher's last word on each request (engagement.results), for the reports.
message_results = sa.Table(
    "message_results",
    metadata,
    sa.Column("request_key", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("occurred_at", TS, nullable=False),
)
# Orders placed (customer.activity): holdout conversions and retention cohorts.
customer_orders = sa.Table(
    "customer_orders",
    metadata,
    sa.Column("shop_id", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer_key", sa.Text, nullable=False),
    sa.Column("total", sa.Numeric, nullable=False),
    sa.Column("placed_at", TS, nullable=False),
    sa.Index("customer_orders_by_customer", "customer_key", "placed_at"),
)
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)
_F = sa.Float(53)
prediction_fits = sa.Table(
    "prediction_fits",
    metadata,
    sa.Column("shop_id", sa.Text, primary_key=True),
    sa.Column("as_of", TS, nullable=False),
    sa.Column("fitted_at", TS, nullable=False),
    sa.Column("fit_seconds", _F, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("repeat_buyers", sa.Integer, nullable=False),
    sa.Column("repeat_purchases", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    *(sa.Column(name, _F) for name in ("r", "alpha", "a", "b", "p", "q", "gamma")),
)
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("customer_key", sa.Text, primary_key=True),
    sa.Column("shop_id", sa.Text, nullable=False),
    sa.Column("as_of", TS, nullable=False),
    sa.Column("p_alive", _F, nullable=False),
    sa.Column("orders_30d", _F, nullable=False),
    sa.Column("orders_90d", _F, nullable=False),
    sa.Column("next_order_at", TS),
    sa.Column("order_value", _F),
    sa.Column("changed_at", TS, nullable=False),
    sa.Column("previous", JSONB),  # the figures the refresh of changed_at replaced
    sa.Index("predictions_by_shop", "shop_id", "changed_at"),
)
customer_aliases = sa.Table(
    "customer_aliases",
    metadata,
    sa.Column("alias_key", sa.Text, primary_key=True),
    sa.Column("canonical_key", sa.Text, nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("merged_at", TS, nullable=False),
)
segment_timers = sa.Table(
    "segment_timers",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("customer_key", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("due_at", TS, nullable=False),
    sa.Column("leaves_at", TS),
    sa.Index("segment_timers_due", "partition", "due_at"),
)
segment_sweeps = sa.Table(
    "segment_sweeps",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("swept_at", TS, nullable=False),
)
segment_backfills = sa.Table(
    "segment_backfills",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("requested_at", TS, nullable=False),
    sa.Column("customers", sa.BigInteger, nullable=False),
)
segment_sizes = sa.Table(
    "segment_sizes",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("shop_id", sa.Text, primary_key=True),
    sa.Column("segment", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("counted_at", TS, nullable=False),
)
journey_enrolment_counts = sa.Table(
    "journey_enrolment_counts",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("enrolled", sa.BigInteger, nullable=False),
)
contact_queue = sa.Table(
    "contact_queue",
    metadata,
    sa.Column("request_key", sa.Text, primary_key=True),
    sa.Column("shop_id", sa.Text, nullable=False),
    sa.Column("customer_key", sa.Text, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("due_at", TS, nullable=False),
    sa.Column("expires_at", TS),
    sa.Column("time_zone", sa.Text, nullable=False),
    sa.Column("request", JSONB, nullable=False),
    sa.Column("check_at", TS, nullable=False),
    sa.Index("contact_queue_due", "check_at"),
    sa.Index("contact_queue_customer", "customer_key"),
)
contact_log = sa.Table(
    "contact_log",
    metadata,
    sa.Column("request_key", sa.Text, primary_key=True),
    sa.Column("shop_id", sa.Text, nullable=False),
    sa.Column("customer_key", sa.Text, nullable=False),
    sa.Column("released_at", TS, nullable=False),
    sa.Index("contact_log_customer", "customer_key", "released_at"),
)
privacy_requests = sa.Table(
    "privacy_requests",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("shop_id", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("platform_request_id", sa.Text),
    sa.Column("subject_hashes", ARRAY(sa.Text), nullable=False),
    sa.Column("requested_at", TS, nullable=False),
    sa.Column("erased_at", TS),
    sa.Column("expires_at", TS),
    sa.Index("privacy_requests_expiry", "expires_at"),
)
privacy_parts = sa.Table(
    "privacy_parts",
    metadata,
    sa.Column(
        "request_id",
        sa.Text,
        sa.ForeignKey("scheduler.privacy_requests.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("service", sa.Text, primary_key=True),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("erased", JSONB),
    sa.Column("data", JSONB),
)
ab_winners = sa.Table(
    "ab_winners",
    metadata,
    sa.Column("journey_id", sa.Text, primary_key=True),
    sa.Column("journey_version", sa.Integer, primary_key=True),
    sa.Column("step_id", sa.Text, primary_key=True),
    sa.Column("variant", sa.Text, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("p_values", JSONB, nullable=False),
    sa.Column("figures", JSONB, nullable=False),
    sa.Column("declared_at", TS, nullable=False),
)
