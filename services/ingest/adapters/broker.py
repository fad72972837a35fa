"""Producing canonical events for the HTTP edge: acknowledged within a deadline, or unavailable."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest.domain.canonical import ShopEvent
from shared.kafka import Publisher, start_with_retry
from shared.logging import get_logger

log = get_logger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the caller answers 503 so the sender retries."""


class EventSink(Protocol):
    async def emit(self, event: ShopEvent) -> None:
        """Return only after the broker acknowledged the event; else raise BrokerUnavailable."""
        ...


class KafkaEventSink:
    """The producer starts in the background; until it has, every emit is BrokerUnavailable."""

    def __init__(self, topic: str, timeout_s: float, service: str) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._service = service
        self._publisher: Publisher | None = None
        self._started = asyncio.Event()

    async def run(self, producer: AIOKafkaProducer) -> None:
        await start_with_retry(producer, f"{self._service} producer")
        self._publisher = Publisher(producer, self._service)
        self._started.set()
        log.info("producer_started")

    async def started(self) -> Publisher:
        """Wait until the producer is up (the consumer needs it for activity and dead letters)."""
        await self._started.wait()
        assert self._publisher is not None
        return self._publisher

    @property
    def publisher(self) -> Publisher | None:
        return self._publisher

    async def emit(self, event: ShopEvent) -> None:
        publisher = self._publisher
        if publisher is None:
            raise BrokerUnavailable("the broker connection is not up yet")
        try:
            await asyncio.wait_for(
                publisher.publish_one_raw(self._topic, event.key, event.value), self._timeout_s
            )
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"the broker did not acknowledge: {exc!r}") from exc
