"""Producing e-mail events from the tracking endpoints, on the ingest producer.

An unsubscribe waits for the broker's acknowledgement (it must never be lost); an open or a
click is queued and answered at once, because a pixel or a redirect that waits on the broker
makes the reader wait, and one lost open costs little. One background task hands what was
queued meanwhile to the producer as one record batch per partition, so a request costs an
append to a list, not a produce of its own. At most MAX_QUEUED wait; beyond that they are
dropped and counted.
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
MAX_QUEUED = 10_000
_DROPPED = metrics.ERRORS.labels("ingest", "tracking_event_dropped")
_LOST = metrics.ERRORS.labels("ingest", "tracking_event_lost")


class EmailEventSink(Protocol):
    async def emit(self, key: str, event: CloudEvent) -> None:
        """Return once the broker acknowledged; else raise BrokerUnavailable."""
        ...

    def emit_soon(self, key: str, value: bytes) -> None:
        """Queue an encoded event for the producer; never raises, never waits."""
        ...


class KafkaEmailEventSink:
    def __init__(self, producer_of: KafkaEventSink, topic: str, timeout_s: float) -> None:
        self._producer_of = producer_of
        self._topic = topic
        self._timeout_s = timeout_s
        self._queued: list[tuple[str, str, bytes]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._sender: asyncio.Task[None] | None = None

    async def emit(self, key: str, event: CloudEvent) -> None:
        publisher = self._producer_of.publisher
        if publisher is None:
            raise BrokerUnavailable("the broker connection is not up yet")
        try:
            await asyncio.wait_for(publisher.publish(self._topic, key, event), self._timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"the broker did not acknowledge: {exc!r}") from exc

    def emit_soon(self, key: str, value: bytes) -> None:
        if len(self._queued) >= MAX_QUEUED or self._stopping:
            _DROPPED.inc()
            return
        self._queued.append((self._topic, key, value))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())
        self._wake.set()

    async def _send_queued(self) -> None:
        """Until stopped and empty: take everything queued, produce it, wait for the acks."""
        while self._queued or not self._stopping:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queued = self._queued, []
            await self._produce(batch)

    async def _produce(self, batch: list[tuple[str, str, bytes]]) -> None:
        publisher = self._producer_of.publisher
        try:
            if publisher is None:
                raise BrokerUnavailable("the broker connection is not up yet")
            await asyncio.wait_for(publisher.publish_raw(batch), self._timeout_s)
        except (TimeoutError, KafkaError, OSError, BrokerUnavailable) as exc:
            _LOST.inc(len(batch))
            log.warning("tracking_events_lost", count=len(batch), error=repr(exc))

    async def drain(self) -> None:
        """On shutdown: let what was accepted reach the broker."""
        self._stopping = True
        self._wake.set()
        if self._sender is not None:
            await self._sender
