"""Producing e-mail events from the tracking endpoints, on the ingest producer.

An unsubscribe waits for the broker's acknowledgement (it must never be lost); an open or a
click is handed to the producer and answered at once, because a pixel or a redirect that
waits on the broker makes the reader wait, and one lost open costs little. At most
MAX_IN_FLIGHT of those are pending; beyond that they are dropped and counted.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka.errors import KafkaError

from services.ingest.adapters.broker import BrokerUnavailable, KafkaEventSink
from shared import metrics
from shared.events import CloudEvent
from shared.logging import get_logger

log = get_logger(__name__)
MAX_IN_FLIGHT = 10_000


class EmailEventSink(Protocol):
    async def emit(self, key: str, event: CloudEvent) -> None:
        """Return once the broker acknowledged; else raise BrokerUnavailable."""
        ...

    def emit_soon(self, key: str, event: CloudEvent) -> None:
        """Produce in the background; never raises, never waits."""
        ...


class KafkaEmailEventSink:
    def __init__(self, producer_of: KafkaEventSink, topic: str, timeout_s: float) -> None:
        self._producer_of = producer_of
        self._topic = topic
        self._timeout_s = timeout_s
        self._pending: set[asyncio.Task[None]] = set()

    async def emit(self, key: str, event: CloudEvent) -> None:
        publisher = self._producer_of.publisher
        if publisher is None:
            raise BrokerUnavailable("the broker connection is not up yet")
        try:
            await asyncio.wait_for(publisher.publish(self._topic, key, event), self._timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"the broker did not acknowledge: {exc!r}") from exc

    def emit_soon(self, key: str, event: CloudEvent) -> None:
        if len(self._pending) >= MAX_IN_FLIGHT:
            metrics.ERRORS.labels("ingest", "tracking_event_dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._background(key, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _background(self, key: str, event: CloudEvent) -> None:
        try:
            await self.emit(key, event)
        except BrokerUnavailable as exc:
            metrics.ERRORS.labels("ingest", "tracking_event_lost").inc()
            log.warning("tracking_event_lost", event_id=event.id, type=event.type, error=str(exc))

    async def drain(self) -> None:
        """On shutdown: let what was accepted reach the broker."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
