"""The durable record of one message request: the single source of truth for "was it sent?".

A request moves claimed -> data -> sent. `claimed`: this dispatcher owns it and no DATA
command was issued yet, so after a crash it is safe to send (the relay never had it).
`data`: recorded just before DATA went out; a crash from here to the relay's answer leaves
it unknown whether the relay took it, and it becomes `uncertain`, never sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Status = Literal["claimed", "data", "sent", "failed", "suppressed", "uncertain"]
FinalStatus = Literal["sent", "failed", "suppressed", "uncertain"]
FINAL_STATUSES: frozenset[str] = frozenset({"sent", "failed", "suppressed", "uncertain"})


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
