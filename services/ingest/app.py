"""Wiring: settings -> producer, engine, consumer -> adapters -> handlers -> the HTTP app."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.broker import KafkaEventSink
from services.ingest.adapters.email_events import KafkaEmailEventSink
from services.ingest.adapters.privacy_repository import IngestPrivacyRepository
from services.ingest.adapters.privacy_sink import KafkaPrivacySink
from services.ingest.adapters.tables import processed_events
from services.ingest.api import (
    IngestApp,
    events_router,
    install_error_handlers,
    shopify_delivery,
    shopify_router,
    woocommerce_router,
)
from services.ingest.attribution import AttributionConsumer, CouponsConsumer
from services.ingest.attribution import Topics as AttributionTopics
from services.ingest.consumer import ShopEventsConsumer
from services.ingest.domain.engagement import Windows
from services.ingest.domain.shops import Shop, ShopDirectory
from services.ingest.engagement import EmailEventsConsumer
from services.ingest.handler import FactsHandler
from services.ingest.read_api import read_router
from services.ingest.settings import IngestSettings, ShopConfig, facts_settings_for
from services.ingest.stages import StageSweeper
from services.ingest.tracking import TrackingEdge
from shared.clock import Clock, parse_duration
from shared.db import make_engine, ping
from shared.http import ReadinessCheck, ops_router
from shared.kafka import BatchHandler, ConsumerLoop, make_consumer, make_producer, stop_consumer
from shared.pipeline import PipelinedConsumerLoop, whole_batches
from shared.privacy import PrivacyRequestHandler
from shared.pruning import Pruner
from shared.runtime import Loops, quietly
from shared.topics import (
    CUSTOMER_ACTIVITY,
    EMAIL_EVENTS,
    ENGAGEMENT_RESULTS,
    PRIVACY_REQUESTS,
    PRIVACY_RESULTS,
    SHOP_EVENTS,
    Topics,
)
from shared.tracking import TokenSigner

SERVICE = "ingest"
T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def shop_directory(shops: list[ShopConfig]) -> ShopDirectory:
    return ShopDirectory(
        Shop(
            shop_id=s.shop_id,
            shopify_domain=s.shopify_domain,
            shopify_secret=s.shopify_secret.get_secret_value().encode()
            if s.shopify_secret
            else None,
            api_token=s.api_token.get_secret_value() if s.api_token else None,
            woocommerce_url=s.woocommerce_url,
            woocommerce_secret=s.woocommerce_secret.get_secret_value().encode()
            if s.woocommerce_secret
            else None,
        )
        for s in shops
    )


class IngestService:
    """The HTTP edge (role api), the facts consumer (role consumer), or both (role all)."""

    def __init__(self, settings: IngestSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._topics = Topics(settings.topic_prefix)
        self._loops = Loops(SERVICE)
        self._sink = KafkaEventSink(
            self._topics.name(SHOP_EVENTS), settings.produce_timeout_s, SERVICE
        )
        self._email_sink = KafkaEmailEventSink(
            self._sink, self._topics.name(EMAIL_EVENTS), settings.produce_timeout_s
        )
        self._privacy_sink = KafkaPrivacySink(
            self._sink, self._topics.name(PRIVACY_REQUESTS), settings.produce_timeout_s
        )
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._side_consumers: list[AIOKafkaConsumer] = []
        self._engine: AsyncEngine | None = None
        self.app: FastAPI = self._build_app()

    @property
    def runs_consumer(self) -> bool:
        return self.settings.role in ("consumer", "all")

    @property
    def serves_api(self) -> bool:
        return self.settings.role in ("api", "all")

    def _build_app(self) -> IngestApp:
        app = IngestApp(
            title="Rebound ingest",
            description="Shop events in: Shopify and WooCommerce webhooks and the /events API.",
        )
        checks: dict[str, ReadinessCheck] = {"broker": self._broker_ready}
        if self.runs_consumer:
            checks["database"] = self._database_ready
        app.include_router(ops_router(checks))
        if self.serves_api:
            shops = shop_directory(self.settings.shops)
            max_age = timedelta(seconds=self.settings.shopify_max_delivery_age_s) or None
            privacy = self._privacy_sink
            app.include_router(shopify_router(shops, self._sink, self._clock, max_age, privacy))
            app.lean_posts["/webhooks/shopify"] = shopify_delivery(
                shops, self._sink, self._clock, max_age, privacy
            )
            app.include_router(woocommerce_router(shops, self._sink, self._clock))
            app.include_router(events_router(shops, self._sink, self._clock))
            if self.settings.tracking_keys:
                edge = self._tracking_edge()
                app.include_router(edge.router())
                app.lean_gets.update(edge.lean_gets())
            app.include_router(
                read_router(self._read_engine, self._clock, self.settings.admin_token)
            )
            install_error_handlers(app)
        return app

    def _read_engine(self) -> AsyncEngine:
        """The consumer's engine; an API-only process opens a small one at the first read."""
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url, pool_size=2)
        return self._engine

    def _tracking_edge(self) -> TrackingEdge:
        s = self.settings
        max_age = timedelta(days=s.tracking_max_age_days)
        signer = TokenSigner(s.tracking_keys)
        return TrackingEdge(signer, self._email_sink, self._clock, max_age)

    async def start(self) -> None:
        """Returns at once; the broker and database connections come up in the background."""
        s = self.settings
        self._producer = make_producer(
            s.kafka_bootstrap_servers, f"{s.kafka_client_id}-ingest", s.produce_linger_ms
        )
        self._loops.spawn("producer", lambda: self._sink.run(self._require(self._producer)))
        if self.runs_consumer:
            self._engine = self._engine or make_engine(s.database_url, pool_size=s.db_pool_size)
            self._consumer = make_consumer(
                s.kafka_bootstrap_servers,
                s.topic_prefix + SERVICE,
                f"{s.kafka_client_id}-ingest",
                self._topics.name(SHOP_EVENTS),
                session_timeout_ms=s.kafka_session_timeout_ms,
                fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            )
            self._loops.spawn("consumer", self._consume)
            self._loops.spawn("prune", self.pruner(self._engine).run)
            self._loops.spawn("email-events", self._consume_email_events)
            self._loops.spawn("attribution", self._consume_orders_for_attribution)
            self._loops.spawn("stages", self._sweep_stages)
            self._loops.spawn("coupons", self._consume_coupons)
            self._loops.spawn("privacy", self._answer_privacy_requests)

    def pruner(self, engine: AsyncEngine) -> Pruner:
        """Forgets processed event ids the broker can no longer redeliver."""
        s = self.settings
        return Pruner(
            engine,
            processed_events,
            "processed_at",
            self._clock,
            timedelta(days=s.processed_retention_days),
            s.prune_interval_s,
        )

    def _side_consumer(self, group: str, topic: str) -> AIOKafkaConsumer:
        s = self.settings
        consumer = make_consumer(
            s.kafka_bootstrap_servers,
            s.topic_prefix + group,
            f"{s.kafka_client_id}-{group}",
            self._topics.name(topic),
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        self._side_consumers.append(consumer)
        return consumer

    async def _run_loop(self, consumer: AIOKafkaConsumer, handler: BatchHandler) -> None:
        s = self.settings
        await ConsumerLoop(
            consumer,
            handler,
            SERVICE,
            await self._sink.started(),
            max_records=s.consumer_batch_max,
            retry_initial_s=s.retry_initial_s,
            retry_max_s=s.retry_max_s,
        ).run()

    async def _consume_email_events(self) -> None:
        """email.events -> engagement facts and consent -> customer.activity (own group)."""
        consumer = self._side_consumer("ingest-email", EMAIL_EVENTS)
        publisher = await self._sink.started()
        handler = EmailEventsConsumer(
            self._require(self._engine),
            publisher,
            self._topics.name(CUSTOMER_ACTIVITY),
            self._clock,
            facts_settings_for(self.settings.shops),
        )
        await self._run_loop(consumer, handler.handle)

    async def _consume_orders_for_attribution(self) -> None:
        """Orders placed (from ingest's own customer.activity) -> message.converted."""
        consumer = self._side_consumer("ingest-attribution", CUSTOMER_ACTIVITY)
        publisher = await self._sink.started()
        topics = AttributionTopics(
            self._topics.name(CUSTOMER_ACTIVITY), self._topics.name(ENGAGEMENT_RESULTS)
        )
        windows = {
            shop.shop_id: Windows(
                parse_duration(shop.attribution_click_window),
                parse_duration(shop.attribution_open_window),
            )
            for shop in self.settings.shops
        }
        handler = AttributionConsumer(
            self._require(self._engine),
            publisher,
            topics,
            windows,
            self._clock,
            facts_settings_for(self.settings.shops),
        )
        await self._run_loop(consumer, handler.handle)

    async def _sweep_stages(self) -> None:
        s = self.settings
        await StageSweeper(
            self._require(self._engine),
            await self._sink.started(),
            self._topics.name(CUSTOMER_ACTIVITY),
            self._clock,
            facts_settings_for(s.shops),
            tuple(shop.shop_id for shop in s.shops),
            s.stage_sweep_interval_s,
        ).run()

    async def _consume_coupons(self) -> None:
        """coupon.issued (engagement.results) -> which message carried which code."""
        consumer = self._side_consumer("ingest-coupons", ENGAGEMENT_RESULTS)
        handler = CouponsConsumer(self._require(self._engine), await self._sink.started())
        await self._run_loop(consumer, handler.handle)

    async def _answer_privacy_requests(self) -> None:
        """privacy.requests -> erase or export the customer's facts -> privacy.results."""
        consumer = self._side_consumer("ingest-privacy", PRIVACY_REQUESTS)
        publisher = await self._sink.started()
        store = IngestPrivacyRepository(self._require(self._engine))
        topic = self._topics.name(PRIVACY_RESULTS)
        handler = PrivacyRequestHandler("ingest", store, publisher, topic, self._clock)
        await self._run_loop(consumer, handler)

    async def _consume(self) -> None:
        publisher = await self._sink.started()
        handler = FactsHandler(
            self._require(self._engine),
            self._topics.name(CUSTOMER_ACTIVITY),
            self._clock,
            facts_settings_for(self.settings.shops),
        )
        stages = ShopEventsConsumer(handler, publisher)
        await PipelinedConsumerLoop(
            self._require(self._consumer),
            whole_batches(stages, publisher),
            SERVICE,
            publisher,
            stages=stages,
            max_records=self.settings.consumer_batch_max,
            retry_initial_s=self.settings.retry_initial_s,
            retry_max_s=self.settings.retry_max_s,
        ).run()

    async def stop(self) -> None:
        await quietly(self._email_sink.drain(), "email events")
        await self._loops.stop()
        if self._consumer is not None:
            await quietly(stop_consumer(self._consumer), "consumer")
        for side in self._side_consumers:
            await quietly(stop_consumer(side), "side consumer")
        if self._producer is not None:
            await quietly(self._producer.stop(), "producer")
        if self._engine is not None:
            await self._engine.dispose()

    async def _broker_ready(self) -> bool:
        publisher = self._sink.publisher
        return publisher is not None and await publisher.ready()

    async def _database_ready(self) -> bool:
        return self._engine is not None and await ping(self._engine)

    @staticmethod
    def _require(value: T | None) -> T:
        assert value is not None, "start() first"
        return value
