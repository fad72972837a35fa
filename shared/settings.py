"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Knobs every service has; each reads them under its own prefix (REBOUND_INGEST_...)."""

    model_config = SettingsConfigDict(env_prefix="REBOUND_", extra="ignore")

    database_url: str = Field(
        default="postgresql+asyncpg://rebound@127.0.0.1:55432/rebound",
        description="SQLAlchemy URL of the PostgreSQL database (asyncpg driver).",
    )
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:59092")
    kafka_client_id: str = "rebound"
    kafka_session_timeout_ms: int = Field(
        default=6_000,
        description=(
            "How long the broker waits for a silent consumer (a kill -9'd instance) before its "
            "partitions, and with them the scheduler's timers, move to another instance; "
            "heartbeats go every third of it. 6 s is Apache Kafka's smallest allowed "
            "(group.min.session.timeout.ms)."
        ),
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=30_000,
        description=(
            "The longest a consumer's fetch waits at the broker for records. Apache Kafka "
            "answers as soon as records arrive, so this only bounds idle polling; the local "
            "broker (Tansu) answers an empty fetch only when the wait ends, so each hop of a "
            "message (webhook, activity, request) waits up to this long: `make run` uses 100."
        ),
    )
    topic_prefix: str = Field(default="", description="Prepended to every topic name (tests).")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0


class DedupeRetention(BaseSettings):
    """For services that remember processed event ids (shared/pruning.py prunes them)."""

    processed_retention_days: float = Field(
        default=14,
        ge=1,
        description="How long processed event ids are kept to drop redeliveries; longer than "
        "the broker's retention (Kafka's default is 7 days).",
    )
    prune_interval_s: float = Field(
        default=3600, gt=0, description="How often old processed event ids are deleted."
    )
