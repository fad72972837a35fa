"""Settings of the ingest service, from REBOUND_INGEST_* (or the shared REBOUND_*) variables."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
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


class IngestSettings(ServiceSettings):
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
    consumer_batch_max: int = Field(default=2000, ge=1, description="Records per consumer batch.")
    db_pool_size: int = Field(default=5, ge=1)
    processed_retention_days: float = Field(
        default=14,
        ge=1,
        description="How long processed event ids are kept to drop redeliveries; longer than "
        "the broker's retention (Kafka's default is 7 days).",
    )
    prune_interval_s: float = Field(
        default=3600, gt=0, description="How often old processed event ids are deleted."
    )
    tracking_keys: list[TrackingKey] = Field(
        default_factory=list,
        description='JSON list in REBOUND_INGEST_TRACKING_KEYS, newest first, e.g. [{"kid": '
        '"2026-11", "secret": "..."}]; the same list as the dispatcher\'s. Empty: the '
        "tracking and unsubscribe endpoints are not served.",
    )
    tracking_max_age_days: int = Field(
        default=400, ge=1, description="Opens and clicks of older mail are not recorded."
    )
