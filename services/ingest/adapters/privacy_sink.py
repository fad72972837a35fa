"""Producing data subject requests from the HTTP edge to privacy.requests, acknowledged in time.

It shares the webhook producer (started by `KafkaEventSink`); until that is up, or when the
broker does not acknowledge in time, the caller answers 503 and Shopify retries.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka.errors import KafkaError

from services.ingest.adapters.broker import BrokerUnavailable, KafkaEventSink
from shared import events as ev


class PrivacySink(Protocol):
    async def emit_request(self, event: ev.CloudEvent) -> None:
        """Return only after the broker acknowledged it; else raise BrokerUnavailable."""
        ...


class KafkaPrivacySink:
    def __init__(self, events: KafkaEventSink, topic: str, timeout_s: float) -> None:
        self._events = events
        self._topic = topic
        self._timeout_s = timeout_s

    async def emit_request(self, event: ev.CloudEvent) -> None:
        publisher = self._events.publisher
        if publisher is None:
            raise BrokerUnavailable("the broker connection is not up yet")
        key = event.shopid or ""
        try:
            await asyncio.wait_for(publisher.publish(self._topic, key, event), self._timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"the broker did not acknowledge: {exc!r}") from exc
