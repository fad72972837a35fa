"""Per-shop contact policy settings: limits over all journeys, quiet hours, default time zone."""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class ShopContactPolicy(_Strict):
    shop_id: str = Field(min_length=1)
    limits: list[LimitConfig] = Field(default_factory=list)
    quiet_hours: QuietConfig | None = None
    time_zone: str = Field(
        default="UTC", description="For customers whose time zone the facts do not know."
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def policy(self) -> ContactPolicy:
        limits = tuple(ContactLimit(c.count, parse_duration(c.per)) for c in self.limits)
        quiet = self.quiet_hours
        return ContactPolicy(limits, None if quiet is None else QuietHours(quiet.from_, quiet.to))

    @property
    def longest_period(self) -> timedelta:
        return max((parse_duration(c.per) for c in self.limits), default=timedelta(0))
