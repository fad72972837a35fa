"""Configuration of the dispatcher, from REBOUND_DISPATCHER_* environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.dispatcher.shops import ShopCoupons, ShopMailConfig
from shared.settings import ServiceSettings
from shared.tracking import TrackingKey


class DispatcherSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REBOUND_DISPATCHER_", extra="ignore")

    http_port: int = 8003
    kafka_client_id: str = "rebound-dispatcher"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = Field(default=False, description="Upgrade with STARTTLS after connect.")
    smtp_tls: bool = Field(default=False, description="Implicit TLS from the first byte (465).")
    smtp_timeout_s: float = 10.0
    smtp_local_hostname: str | None = Field(
        default=None, description="Name sent in EHLO; default is this host's FQDN."
    )
    mail_from: str = "Rebound <hello@shop.example>"
    prune_interval_s: float = Field(
        default=3600, gt=0, description="How often expired erasure hashes are deleted."
    )
    redaction_memory_days: float = Field(
        default=30,
        gt=0,
        description="How long a hash of an erased customer is kept, so a message asked for "
        "before the erasure and still on its way is dropped unsent (longer than the broker's "
        "retention of message.requests).",
    )

    max_send_attempts: int = Field(
        default=3,
        ge=1,
        description="SMTP attempts per request for transient failures before the batch is "
        "handed back to the consumer (server unreachable) or the message is "
        "marked failed (server keeps deferring with 4xx).",
    )
    smtp_connections: int = Field(
        default=32,
        ge=1,
        description="Persistent SMTP connections to the relay; each carries one mail at a time, "
        "so this many mails are in flight at once.",
    )
    stop_grace_s: float = Field(
        default=15.0,
        ge=0,
        description="On SIGTERM, how long the mail already handed to the relay may take to "
        "finish before the process stops anyway (a mail cut off during DATA can only be "
        "reported uncertain). No new mail starts once the stop began. Keep it below the "
        "orchestrator's grace period (30 s in deploy/k8s).",
    )
    batch_size: int = Field(
        default=500, ge=1, description="Message requests fetched and handled as one batch."
    )
    suppressions_wait_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a batch of marketing requests waits for the suppressions "
        "consumer to have stored every unsubscribe already on email.events; past it the batch "
        "is retried later, never sent unchecked.",
    )

    shops: list[ShopMailConfig] = Field(
        default_factory=list,
        description="JSON list in REBOUND_DISPATCHER_SHOPS: per shop sender, footer address, "
        "public tracking URL, tracking on/off, DKIM key. A shop without an entry gets plain mail "
        "from mail_from.",
    )
    coupons: list[ShopCoupons] = Field(
        default_factory=list,
        description="JSON list in REBOUND_DISPATCHER_COUPONS: per shop where discount codes "
        "come from (generated or an uploaded pool) and the Shopify connector.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the dispatcher's control endpoints (coupon pool upload); "
        "unset: those endpoints answer 503.",
    )
    ingest_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+",
        description="Base URL of ingest's read API, for the recommended products mail shows "
        "(POST /customers/recommendations); unset: mail shows no products.",
    )
    ingest_token: SecretStr | None = Field(
        default=None, description="ingest's admin token (REBOUND_INGEST_ADMIN_TOKEN)."
    )
    products_per_mail: int = Field(default=4, ge=1, le=12)
    tracking_keys: list[TrackingKey] = Field(
        default_factory=list,
        description="JSON list in REBOUND_DISPATCHER_TRACKING_KEYS, newest first (it signs); "
        "the same list as ingest's.",
    )

    @model_validator(mode="after")
    def _keys_for_shops(self) -> DispatcherSettings:
        if self.shops and not self.tracking_keys:
            raise ValueError(
                "shops need tracking_keys: their mail carries signed unsubscribe links"
            )
        return self
