"""engagement.results in: the dispatcher's word on each request (sent, failed, suppressed with
its reason, uncertain), kept for the reports. Everything else on the topic is not ours."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.reports.repository import ReportFactsRepository
from shared import events
from shared.events import InvalidEvent, MessageResult
from shared.kafka import Publisher, Record

RESULT_TYPES = frozenset(
    {
        events.MESSAGE_SENT,
        events.MESSAGE_FAILED,
        events.MESSAGE_SUPPRESSED,
        events.MESSAGE_UNCERTAIN,
    }
)


def message_result(raw: bytes | None) -> MessageResult | None:
    event = events.decode(raw)
    return events.payload(event, MessageResult) if event.type in RESULT_TYPES else None


@dataclass
class ResultsHandler:
    """Idempotent: the same result twice writes the same row."""

    engine: AsyncEngine
    publisher: Publisher

    async def __call__(self, batch: list[Record]) -> None:
        results: list[MessageResult] = []
        for record in batch:
            try:
                found = message_result(record.value)
            except InvalidEvent as exc:
                await self.publisher.dead_letter(record, str(exc))
                continue
            if found is not None:
                results.append(found)
        if results:
            async with self.engine.begin() as conn:
                await ReportFactsRepository(conn).record_results(results)
