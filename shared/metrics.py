"""Prometheus metrics every service exposes on /metrics; names are shared so dashboards match."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS_IN = Counter("rebound_events_in_total", "Events received", ["service", "source"])
EVENTS_OUT = Counter("rebound_events_out_total", "Events produced", ["service", "topic"])
ERRORS = Counter("rebound_errors_total", "Errors by kind", ["service", "kind"])
WEBHOOKS_DROPPED = Counter(
    "rebound_webhooks_dropped_total",
    "Authentic webhook deliveries answered 2xx that produced nothing",
    ["service", "platform", "reason"],
)
DEAD_LETTERS = Counter("rebound_dead_letters_total", "Messages sent to a DLQ", ["service", "topic"])
CONSUMER_LAG = Gauge(
    "rebound_consumer_lag", "Records behind the partition end", ["service", "topic", "partition"]
)
TIMERS_DUE = Gauge("rebound_timers_due", "Timers due and not yet fired", ["service"])
TIMERS_FIRED = Counter("rebound_timers_fired_total", "Timers fired", ["service"])
MAILS_SENT = Counter("rebound_mails_sent_total", "E-mails accepted by the SMTP server", ["service"])
MESSAGES_SKIPPED = Counter(
    "rebound_messages_suppressed_total", "Message requests not sent", ["service", "reason"]
)
COUPONS_ISSUED = Counter(
    "rebound_coupons_issued_total", "Discount codes handed to messages", ["service", "source"]
)
COUPON_POOL_REMAINING = Gauge(
    "rebound_coupon_pool_remaining", "Uploaded discount codes not handed out yet", ["shop"]
)
REQUEST_LATENCY = Histogram(
    "rebound_http_request_seconds",
    "HTTP handling time",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
