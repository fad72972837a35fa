"""Kafka topic names. Every customer-scoped message is keyed by the customer key."""

from __future__ import annotations

from dataclasses import dataclass

SHOP_EVENTS = "shop.events"
EMAIL_EVENTS = "email.events"
CUSTOMER_ACTIVITY = "customer.activity"
MESSAGE_REQUESTS = "message.requests"
ENGAGEMENT_RESULTS = "engagement.results"
# Erasure and export requests, and each service's answer to them (docs/privacy.md); keyed by
# the shop id, so one shop's requests are handled in the order they were made.
PRIVACY_REQUESTS = "privacy.requests"
PRIVACY_RESULTS = "privacy.results"

DLQ_SUFFIX = ".dlq"

ALL_TOPICS = (
    SHOP_EVENTS,
    EMAIL_EVENTS,
    CUSTOMER_ACTIVITY,
    MESSAGE_REQUESTS,
    ENGAGEMENT_RESULTS,
    PRIVACY_REQUESTS,
    PRIVACY_RESULTS,
)


def dlq(topic: str) -> str:
    return topic + DLQ_SUFFIX


@dataclass(frozen=True)
class Topics:
    """Topic names with an optional prefix, so tests can run side by side on one broker."""

    prefix: str = ""

    def name(self, topic: str) -> str:
        return self.prefix + topic

    def all_with_dlq(self) -> list[str]:
        return [self.name(t) for t in ALL_TOPICS] + [self.name(dlq(t)) for t in ALL_TOPICS]
