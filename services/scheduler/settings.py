"""Scheduler settings, from REBOUND_SCHEDULER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from services.scheduler.contact_settings import ShopContactPolicy
from shared.settings import DedupeRetention, ServiceSettings

DEFAULT_JOURNEYS_DIR = Path(__file__).parent / "journeys"


class SchedulerSettings(ServiceSettings, DedupeRetention):
    model_config = SettingsConfigDict(env_prefix="REBOUND_SCHEDULER_", extra="ignore")

    http_port: int = 8002
    role: Literal["all", "api", "engine"] = Field(
        default="all",
        description="api: the control plane, reports and dashboard only; engine: the consumers, "
        "timers and outbox only (HTTP serves health and metrics); all: both in one process.",
    )
    reports_pool_size: int = Field(
        default=3,
        gt=0,
        description="Connections of the control plane's own pool (reports, dashboard), apart "
        "from the engine's, so a long report never holds one the timer loop needs.",
    )
    journeys_dir: Path = DEFAULT_JOURNEYS_DIR
    poll_interval_s: float = Field(default=1.0, description="How often due timers are looked for.")
    clock_offset_s: float = Field(
        default=0.0,
        description=(
            "Shift the scheduler's clock by this many seconds (a rehearsal, `make bench`): "
            "timers due that much later fire now. Leave at 0 in production."
        ),
    )
    claim_batch: int = Field(
        default=1000, gt=0, description="Due timers fired per pass (per lane, per transaction)."
    )
    activity_batch: int = Field(
        default=2000,
        gt=0,
        le=10_000,
        description="customer.activity records taken from the broker per batch (a batch is "
        "applied in one transaction per lane).",
    )
    lanes: int = Field(
        default=3,
        ge=1,
        le=16,
        description="Timer passes, and batches of activity, run this many transactions at "
        "once over disjoint groups of partitions, each on its own database connection: one "
        "lane's statements run while another's customers are computed.",
    )
    predictions_refresh_s: float = Field(
        default=86_400,
        ge=0,
        description="How often each shop's purchase predictions (BG/NBD, Gamma-Gamma) are "
        "fitted again, in a worker process; 0: only on demand (POST /predictions/{shop}/refresh).",
    )
    winner_check_s: float = Field(
        default=3_600,
        gt=0,
        description="How often the engine runs the reports' A/B test on the send steps with "
        "`send_winner` and records a winner when the test declares one (later entrants get it).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token (or HTTP basic password, any user) of the control plane: "
        "journeys, segments, reports, exports and /dashboard. Unset: those answer 503.",
    )
    export_retention_days: float = Field(
        default=7,
        gt=0,
        description="How long an assembled privacy export (a customer's data) is kept.",
    )

    contact_policies: list[ShopContactPolicy] = Field(
        default_factory=list,
        description="JSON list in REBOUND_SCHEDULER_CONTACT_POLICIES, per shop: limits over "
        "all journeys, quiet hours, default time zone and best hour, whether service mail "
        "counts (docs/adr/0003-contact-policy.md). A shop without an entry: mail goes as due.",
    )

    @field_validator("contact_policies")
    @classmethod
    def _one_policy_per_shop(cls, value: list[ShopContactPolicy]) -> list[ShopContactPolicy]:
        shops = [p.shop_id for p in value]
        twice = sorted({s for s in shops if shops.count(s) > 1})
        if twice:
            raise ValueError(f"contact_policies: more than one entry for {twice}")
        return value
