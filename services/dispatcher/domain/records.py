"""The durable record of one message request: the single source of truth for "was it sent?"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Status = Literal["sending", "sent", "failed", "suppressed"]
FinalStatus = Literal["sent", "failed", "suppressed"]
FINAL_STATUSES: frozenset[str] = frozenset({"sent", "failed", "suppressed"})


@dataclass(frozen=True)
class MessageRecord:
    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    email: str
    subject: str
    status: Status
    reason: str | None
    smtp_message_id: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES
