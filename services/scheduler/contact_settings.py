"""Per-shop contact policy settings: limits over all journeys, quiet hours, default time zone
and best hour, and whether service mail counts (REBOUND_SCHEDULER_CONTACT_POLICIES)."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.scheduler.domain.contact_policy import ContactLimit, ContactPolicy, QuietHours
from shared.clock import parse_duration


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class LimitConfig(_Strict):
    count: int = Field(ge=1, description="At most this many marketing e-mails ...")
    per: str = Field(pattern=r"^(\d+[smhdw])+$", description="... in any window this long (7d).")


class QuietConfig(_Strict):
    from_: time = Field(alias="from", description="Local time quiet hours start, e.g. 21:00.")
    to: time = Field(description="Local time they end, e.g. 08:00.")


def known_zone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class ShopContactPolicy(_Strict):
    shop_id: str = Field(min_length=1)
    limits: list[LimitConfig] = Field(default_factory=list)
    quiet_hours: QuietConfig | None = None
    time_zone: str = Field(
        default="UTC", description="For customers whose time zone the facts do not know."
    )
    best_hour: int | None = Field(
        default=None,
        ge=0,
        le=23,
        description="send_at: best_hour for a customer with no usual hour while the shop has "
        "no opens yet (local time); unset: such a message goes when due.",
    )
    # Service mail: journeys with `consent: none` (e.g. cart reminders where the law allows).
    # exempt: not counted and never deferred by the limits, but quiet hours still apply;
    # counted: held and counted like marketing mail.
    service_mail: Literal["exempt", "counted"] = "exempt"

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not known_zone(value):
            raise ValueError(f"unknown time zone {value!r}")
        return value

    @model_validator(mode="after")
    def _can_be_met(self) -> ShopContactPolicy:
        self.policy()  # quiet hours from and to the same time, say, are refused when loaded
        return self

    def policy(self) -> ContactPolicy:
        limits = tuple(ContactLimit(c.count, parse_duration(c.per)) for c in self.limits)
        quiet = self.quiet_hours
        return ContactPolicy(limits, None if quiet is None else QuietHours(quiet.from_, quiet.to))

    def counts(self, consent_required: bool) -> bool:
        """Whether a message takes a slot of the limits: marketing mail always."""
        return consent_required or self.service_mail == "counted"

    @property
    def longest_period(self) -> timedelta:
        return max((parse_duration(c.per) for c in self.limits), default=timedelta(0))
