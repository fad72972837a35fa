"""Settings of the ingest service, from REBOUND_INGEST_* (or the shared REBOUND_*) variables."""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.ingest.domain.customer_facts import FactsSettings
from shared.settings import DedupeRetention, ServiceSettings
from shared.tracking import TrackingKey

Role = Literal["api", "consumer", "all"]


class ShopConfig(BaseModel):
    """One shop Rebound serves: how its webhooks are verified and how its API calls authenticate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str = Field(min_length=1, description="Rebound's id of the shop (part of every key).")
    shopify_domain: str | None = Field(
        default=None, description="X-Shopify-Shop-Domain, e.g. shop.myshopify.com."
    )
    shopify_secret: SecretStr | None = Field(
        default=None, description="The app's client secret that signs Shopify webhooks."
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token for POST /events (shops on other platforms)."
    )
    woocommerce_url: str | None = Field(
        default=None,
        description="The WooCommerce site's address as X-WC-Webhook-Source sends it (the "
        "site's home URL, e.g. https://shop.example/); a trailing slash does not matter.",
    )
    woocommerce_secret: SecretStr | None = Field(
        default=None, description="The secret set on the shop's WooCommerce webhooks."
    )
    attribution_click_window: str = Field(
        default="5d",
        pattern=r"^(\d+[smhdw])+$",
        description="An order this long after a click is credited to the clicked message.",
    )
    attribution_open_window: str = Field(
        default="1d",
        pattern=r"^(\d+[smhdw])+$",
        description="An order this long after a human open is credited to the opened message.",
    )
    period_days: int = Field(
        default=90, ge=1, le=366, description="Length of the last and the previous period."
    )
    active_days: int = Field(default=30, ge=1, description="Ordered within: active.")
    falling_asleep_days: int = Field(default=50, ge=1, description="Nothing for: falling asleep.")
    inactive_days: int = Field(default=90, ge=1, description="Nothing for: inactive.")
    high_value_spend: Decimal | None = Field(
        default=None,
        ge=0,
        description="Spend from which a customer is high value; "
        "unset: the top `high_value_share` of the shop's buyers.",
    )
    high_value_share: float = Field(default=0.10, gt=0, lt=1)
    high_value_min_buyers: int = Field(
        default=50,
        ge=1,
        description="The top `high_value_share` applies once the shop has this many buyers; "
        "before that only `high_value_spend` makes a customer high value.",
    )
    time_zone: str = Field(
        default="UTC", description="IANA zone of customers whose own zone is not known."
    )

    def facts_settings(self) -> FactsSettings:
        return FactsSettings(
            period_days=self.period_days,
            active_days=self.active_days,
            falling_asleep_days=self.falling_asleep_days,
            inactive_days=self.inactive_days,
            high_value_spend=self.high_value_spend,
            high_value_share=self.high_value_share,
            high_value_min_buyers=self.high_value_min_buyers,
            time_zone=self.time_zone,
        )


class IngestSettings(ServiceSettings, DedupeRetention):
    model_config = SettingsConfigDict(env_prefix="REBOUND_INGEST_", extra="ignore")

    http_port: int = 8001
    role: Role = Field(default="all", description="api: HTTP only; consumer: facts only; all.")
    shops: list[ShopConfig] = Field(
        default_factory=list,
        description='JSON list in REBOUND_INGEST_SHOPS, e.g. [{"shop_id": "s1", '
        '"shopify_domain": "s1.myshopify.com", "shopify_secret": "..."}]',
    )
    produce_timeout_s: float = Field(
        default=3.0, gt=0, description="How long a request waits for the broker's ack, then 503."
    )
    workers: int = Field(
        default=1,
        ge=0,
        description="Processes of `run`, all on the same port (SO_REUSEPORT); 0: one per core.",
    )
    produce_linger_ms: int = Field(
        default=0,
        ge=0,
        description="How long the producer holds an event to batch it with others. 0: at once; "
        "under load, batches form anyway while the previous produce request is in flight.",
    )
    consumer_batch_max: int = Field(default=2000, ge=1, description="Records per consumer batch.")
    db_pool_size: int = Field(default=5, ge=1)
    shopify_max_delivery_age_s: float = Field(
        default=86400,
        ge=0,
        description="A Shopify delivery whose X-Shopify-Triggered-At is older than this is "
        "stale: answered 200, nothing produced, counted. Shopify retries for 4 hours; the "
        "default (a day) keeps every retry and drops replays of old deliveries. 0: no check.",
    )
    tracking_keys: list[TrackingKey] = Field(
        default_factory=list,
        description='JSON list in REBOUND_INGEST_TRACKING_KEYS, newest first, e.g. [{"kid": '
        '"2026-11", "secret": "..."}]; the same list as the dispatcher\'s. Empty: the '
        "tracking and unsubscribe endpoints are not served.",
    )
    stage_sweep_interval_s: float = Field(
        default=3600, gt=0, description="How often lifecycle stages moved by time are looked for."
    )
    tracking_max_age_days: int = Field(
        default=400, ge=1, description="Opens and clicks of older mail are not recorded."
    )

    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the read API (POST /customers/recommendations, which the "
        "dispatcher calls); unset: it answers 503.",
    )

    def worker_processes(self) -> int:
        """`workers`, with 0 resolved to the cores this process may run on."""
        return self.workers or len(os.sched_getaffinity(0))


def facts_settings_for(shops: list[ShopConfig]) -> Callable[[str], FactsSettings]:
    """Each shop's facts settings; a shop not configured gets the defaults."""
    by_id = {shop.shop_id: shop.facts_settings() for shop in shops}
    default = FactsSettings()
    return lambda shop_id: by_id.get(shop_id, default)
