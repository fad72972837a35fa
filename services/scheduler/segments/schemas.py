"""What the segment endpoints answer (the control plane's JSON)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel


class SegmentSize(BaseModel):
    segment: str
    size: int
    as_of: datetime


class Member(BaseModel):
    customer_key: str
    shop_id: str
    email: str | None
    orders_count: int
    last_order_at: datetime | None
    stage: str | None


class MembersPage(BaseModel):
    segment: str
    members: list[Member]
    next_after: str | None  # pass as `after` for the next page; None: the last page


class SizeOnDay(BaseModel):
    day: date
    shop_id: str
    segment: str
    size: int


class PreviewMember(BaseModel):
    customer_key: str
    email: str | None
    last_order_at: datetime | None
    holdout: bool  # enrolled, gets nothing: the journey's baseline
    first_message_at: datetime | None
    first_step: str | None


class BackfillPreview(BaseModel):
    journey_id: str
    version: int
    as_of: datetime
    would_enter: int
    sample: list[PreviewMember]
    mailed: int = 0  # a preview sends nothing


class TestSend(BaseModel):
    request_key: str
    journey_version: int
    step_id: str
    variant: str | None
    customer_key: str
    would_have_reached: str | None  # the customer's own address
    sent_to: list[str]  # the journey's test recipients (empty: nowhere)
    requested_at: datetime
    test: bool = True
