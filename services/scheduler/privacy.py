"""The scheduler's privacy desk: records every data subject request and every service's answer,
and erases or exports the scheduler's own part (docs/privacy.md).

It consumes privacy.requests (record the request, then act like every service does) and
privacy.results (record which service confirmed an erasure or sent its part of an export).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.privacy_repository import PrivacyRequests
from shared import events as ev
from shared.clock import Clock
from shared.events import InvalidEvent, PrivacyRequest, subject_hash
from shared.kafka import Publisher, Record
from shared.privacy import REDACT_TYPES, PrivacyRequestHandler, decode_request


def request_kind(event_type: str) -> str:
    return "redact" if event_type in REDACT_TYPES else "export"


def request_hashes(request: PrivacyRequest) -> list[str]:
    """The subject as it was named, hashed: enough to find its exports, naming no one."""
    named = sorted(request.subject_keys()) + sorted(e.lower() for e in request.emails)
    return [subject_hash(request.shop_id, value) for value in named]


class PrivacyDesk:
    def __init__(
        self,
        engine: AsyncEngine,
        acting: PrivacyRequestHandler,
        publisher: Publisher,
        requests_topic: str,
        clock: Clock,
        export_retention: timedelta,
    ) -> None:
        self._engine = engine
        self._acting = acting
        self._publisher = publisher
        self._requests_topic = requests_topic
        self._clock = clock
        self._retention = export_retention

    async def __call__(self, batch: Sequence[Record]) -> None:
        for record in batch:
            try:
                if record.topic == self._requests_topic:
                    await self._request(record)
                else:
                    await self._answer(record)
            except InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))

    async def _request(self, record: Record) -> None:
        event_type, request = decode_request(record.value)
        kind = request_kind(event_type)
        async with self._engine.begin() as conn:
            requests = PrivacyRequests(conn, self._retention)
            await requests.record_request(kind, request, request_hashes(request))
        await self._acting.handle(event_type, request)

    async def _answer(self, record: Record) -> None:
        event = ev.decode(record.value)
        now = self._clock.now()
        async with self._engine.begin() as conn:
            requests = PrivacyRequests(conn, self._retention)
            if event.type == ev.CUSTOMER_REDACTED:
                done = ev.payload(event, ev.PrivacyConfirmed)
                await requests.record_answer(
                    "redact", done.request_id, done.shop_id, done.service, now, erased=done.erased
                )
            elif event.type == ev.CUSTOMER_EXPORT_PART:
                part = ev.payload(event, ev.ExportPart)
                await requests.record_answer(
                    "export", part.request_id, part.shop_id, part.service, now, data=part.data
                )
            else:
                raise InvalidEvent(f"unexpected event type {event.type!r} on privacy.results")
