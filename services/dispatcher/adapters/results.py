"""engagement.results: what happened to each request, as a CloudEvent anyone may subscribe to."""

from __future__ import annotations

from collections.abc import Sequence

from services.dispatcher.domain.records import MessageRecord
from shared.events import (
    MESSAGE_FAILED,
    MESSAGE_SENT,
    MESSAGE_SUPPRESSED,
    MESSAGE_UNCERTAIN,
    CloudEvent,
    MessageResult,
    make_event,
    stable_event_id,
)
from shared.kafka import Publisher

SOURCE = "rebound/dispatcher"
RESULT_TYPES = {
    "sent": MESSAGE_SENT,
    "failed": MESSAGE_FAILED,
    "suppressed": MESSAGE_SUPPRESSED,
    "uncertain": MESSAGE_UNCERTAIN,
}


def result_event(record: MessageRecord) -> CloudEvent:
    """The same record always gives the same event (id and time), so republishing is harmless."""
    if not record.is_final:
        raise ValueError(f"{record.request_key}: no result while still {record.status}")
    result = MessageResult(
        request_key=record.request_key,
        shop_id=record.shop_id,
        customer_key=record.customer_key,
        journey_id=record.journey_id,
        step_id=record.step_id,
        status=record.status,
        reason=record.reason,
        email=record.email,
        smtp_message_id=record.smtp_message_id,
        occurred_at=record.updated_at,
    )
    return make_event(
        type=RESULT_TYPES[record.status],
        source=SOURCE,
        id=stable_event_id("result", record.request_key),
        time=record.updated_at,
        subject=record.customer_key,
        shop_id=record.shop_id,
        data=result,
    )


class ResultPublisher:
    def __init__(self, publisher: Publisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def publish(self, records: Sequence[MessageRecord]) -> None:
        """All at once; returns once the broker acknowledged every one (acks=all)."""
        if records:
            await self._publisher.publish_many(
                [(self._topic, r.customer_key, result_event(r)) for r in records]
            )
