"""What the scheduler keeps of message engagement, and each enrolment's last message, in sets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.facts import LastMessage
from shared.events import MessageEngagement

_UPSERT = text("""
    INSERT INTO scheduler.message_engagement AS old (request_key, sent_at, human_opened_at,
        machine_opened_at, clicked_at, converted_at, revenue, unsubscribed_at, bounced_at)
    VALUES (:request_key, :sent_at, :human_opened_at, :machine_opened_at, :clicked_at,
        :converted_at, :revenue, :unsubscribed_at, :bounced_at)
    ON CONFLICT (request_key) DO UPDATE SET
        human_opened_at = least(old.human_opened_at, excluded.human_opened_at),
        machine_opened_at = least(old.machine_opened_at, excluded.machine_opened_at),
        clicked_at = least(old.clicked_at, excluded.clicked_at),
        converted_at = coalesce(old.converted_at, excluded.converted_at),
        revenue = coalesce(old.revenue, excluded.revenue),
        unsubscribed_at = least(old.unsubscribed_at, excluded.unsubscribed_at),
        bounced_at = least(old.bounced_at, excluded.bounced_at)
""")

# The latest request of each enrolment, with what is known of it (nothing yet: all null).
_LAST_MESSAGES = text("""
    SELECT DISTINCT ON (r.enrollment_id) r.enrollment_id, r.request_key, r.step_id,
        coalesce(e.sent_at, r.requested_at) AS sent_at, e.human_opened_at, e.machine_opened_at,
        e.clicked_at, e.converted_at, e.revenue,
        count(*) OVER (PARTITION BY r.enrollment_id) AS sent
    FROM scheduler.message_requests r
    LEFT JOIN scheduler.message_engagement e ON e.request_key = r.request_key
    WHERE r.enrollment_id = ANY(:ids)
    ORDER BY r.enrollment_id, r.requested_at DESC, r.request_key DESC
""")


class EngagementRepository:
    async def record(self, conn: AsyncConnection, messages: Sequence[MessageEngagement]) -> None:
        """One executemany for a batch's e-mail events (the same message twice, opened then
        clicked, is two rows of it applied in order, which one set statement could not do)."""
        if not messages:
            return
        await conn.execute(
            _UPSERT,
            [
                {
                    "request_key": message.request_key,
                    "sent_at": message.sent_at,
                    "human_opened_at": message.first_human_open_at,
                    "machine_opened_at": message.first_machine_open_at,
                    "clicked_at": message.first_click_at,
                    "converted_at": message.converted_at,
                    "revenue": message.revenue,
                    "unsubscribed_at": message.unsubscribed_at,
                    "bounced_at": message.bounced_at,
                }
                for message in messages
            ],
        )

    async def last_messages(
        self, conn: AsyncConnection, enrollment_ids: Iterable[int]
    ) -> dict[int, tuple[LastMessage, int]]:
        """Enrolment id -> (its last message, how many it was sent)."""
        ids = list(set(enrollment_ids))
        if not ids:
            return {}
        rows = await conn.execute(_LAST_MESSAGES, {"ids": ids})
        return {row.enrollment_id: (_last(row), int(row.sent)) for row in rows}


def _last(row: Any) -> LastMessage:
    return LastMessage(
        request_key=row.request_key,
        step_id=row.step_id,
        sent_at=row.sent_at,
        human_opened_at=row.human_opened_at,
        machine_opened_at=row.machine_opened_at,
        clicked_at=row.clicked_at,
        converted_at=row.converted_at,
        revenue=row.revenue,
    )
