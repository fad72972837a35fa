"""Wiring: settings -> engine, producer, consumer, mailer -> adapters -> the request handler."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.dispatcher.adapters.coupons import CouponRepository
from services.dispatcher.adapters.mailer import SmtpConfig, SmtpPool
from services.dispatcher.adapters.privacy_repository import (
    DispatcherPrivacyRepository,
    redactions,
)
from services.dispatcher.adapters.recommendations import IngestRecommendations
from services.dispatcher.adapters.repository import SCHEMA, MessageRepository
from services.dispatcher.adapters.results import ResultPublisher
from services.dispatcher.adapters.shopify_discounts import ShopifyDiscounts
from services.dispatcher.adapters.suppression_barrier import SuppressionBarrier
from services.dispatcher.adapters.suppressions import SuppressionRepository
from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.consumer import RequestHandler
from services.dispatcher.coupon_api import coupon_router
from services.dispatcher.coupons import CouponDesk
from services.dispatcher.dispatch import (
    SERVICE,
    Content,
    Dispatcher,
    Engagement,
    SendPolicy,
    ShopIdentity,
)
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.suppression_events import SuppressionEvents
from shared import db
from shared.clock import Clock
from shared.events import CloudEvent
from shared.http import ops_router
from shared.kafka import (
    BatchHandler,
    ConsumerLoop,
    Publisher,
    make_consumer,
    make_producer,
    start_with_retry,
    stop_consumer,
)
from shared.logging import get_logger
from shared.privacy import PrivacyRequestHandler
from shared.pruning import Pruner
from shared.runtime import Loops, quietly
from shared.topics import (
    CUSTOMER_ACTIVITY,
    EMAIL_EVENTS,
    ENGAGEMENT_RESULTS,
    MESSAGE_REQUESTS,
    PRIVACY_REQUESTS,
    PRIVACY_RESULTS,
    Topics,
)
from shared.tracking import TokenSigner

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = get_logger(__name__)


def migrate(settings: DispatcherSettings) -> None:
    """Bring the dispatcher schema to head (blocking: call outside the event loop)."""
    db.upgrade(MIGRATIONS_DIR, settings.database_url, SCHEMA)


def smtp_config(settings: DispatcherSettings) -> SmtpConfig:
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        tls=settings.smtp_tls,
        timeout_s=settings.smtp_timeout_s,
        local_hostname=settings.smtp_local_hostname,
        backoff_initial_s=settings.retry_initial_s,
        backoff_max_s=settings.retry_max_s,
    )


def make_engine(settings: DispatcherSettings) -> AsyncEngine:
    """A few connections, no pre-ping: a batch runs a handful of statements, and a connection
    that broke is invalidated by the repository when a statement fails on it."""
    return create_async_engine(
        settings.database_url, pool_size=4, max_overflow=4, pool_pre_ping=False, pool_recycle=1800
    )


class DispatcherService:
    """message.requests -> SMTP -> dispatcher.messages -> engagement.results."""

    def __init__(self, settings: DispatcherSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.engine = make_engine(settings)
        self._pool = SmtpPool(smtp_config(settings), settings.smtp_connections)
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._producer_started = False
        self._consumer: AIOKafkaConsumer | None = None
        self._suppression_consumer: AIOKafkaConsumer | None = None
        self._privacy_consumer: AIOKafkaConsumer | None = None
        self.privacy = DispatcherPrivacyRepository(self.engine, clock)
        self._loops = Loops(SERVICE)
        self._dispatcher: Dispatcher | None = None  # the requests loop's, once it runs
        self._barrier = SuppressionBarrier(
            settings.kafka_bootstrap_servers,
            self._suppressions_group,
            self.topics.name(EMAIL_EVENTS),
            settings.suppressions_wait_s,
        )
        self.app = FastAPI(title="Rebound dispatcher")
        self.app.include_router(
            ops_router({"database": self._database_ready, "broker": self._broker_ready})
        )
        self._http = httpx.AsyncClient()
        self._coupon_shops = {c.shop_id: c for c in settings.coupons}
        self.coupons = CouponRepository(self.engine)
        self.app.include_router(
            coupon_router(
                self.coupons,
                self._coupon_desk(None),
                self._coupon_shops,
                settings.admin_token,
                clock,
            )
        )

    async def start(self) -> None:
        """Returns at once; the loop connects to the broker with backoff in the background."""
        s = self.settings
        self._producer = make_producer(s.kafka_bootstrap_servers, s.kafka_client_id)
        self._consumer = make_consumer(
            s.kafka_bootstrap_servers,
            s.topic_prefix + SERVICE,
            s.kafka_client_id,
            self.topics.name(MESSAGE_REQUESTS),
            session_timeout_ms=s.kafka_session_timeout_ms,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        self._suppression_consumer = make_consumer(
            s.kafka_bootstrap_servers,
            self._suppressions_group,
            s.kafka_client_id + "-suppressions",
            self.topics.name(EMAIL_EVENTS),
            self.topics.name(ENGAGEMENT_RESULTS),  # customer.sunset.v1
            self.topics.name(CUSTOMER_ACTIVITY),  # orders and opt-ins lift a sunset
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        self._privacy_consumer = make_consumer(
            s.kafka_bootstrap_servers,
            s.topic_prefix + SERVICE + "-privacy",
            s.kafka_client_id + "-privacy",
            self.topics.name(PRIVACY_REQUESTS),
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        self._loops.spawn("requests", self._consume)
        self._loops.spawn("suppressions", self._consume_suppressions)
        self._loops.spawn("privacy", self._answer_privacy_requests)
        self._loops.spawn("prune-redactions", self._redaction_pruner().run)

    def _redaction_pruner(self) -> Pruner:
        """Forgets erased customers' hashes once no request asked before could still come."""
        return Pruner(
            self.engine,
            redactions,
            "redacted_at",
            self.clock,
            timedelta(days=self.settings.redaction_memory_days),
            self.settings.prune_interval_s,
        )

    async def _publisher(self) -> Publisher:
        """The producer, started once for the three loops and their restarts: every start()
        adds a sender task to the same accumulator, and two of them wake each other forever
        (a busy loop that took about a third of the process's CPU)."""
        assert self._producer is not None
        async with self._producer_lock:
            if not self._producer_started:
                await start_with_retry(self._producer, f"{SERVICE} producer")
                self._producer_started = True
        return Publisher(self._producer, SERVICE)

    async def _answer_privacy_requests(self) -> None:
        """privacy.requests -> erase or export messages, suppressions, codes -> privacy.results."""
        assert self._producer is not None and self._privacy_consumer is not None
        publisher = await self._publisher()
        topic = self.topics.name(PRIVACY_RESULTS)
        handler = PrivacyRequestHandler("dispatcher", self.privacy, publisher, topic, self.clock)
        await self._loop(self._privacy_consumer, handler, publisher)

    async def _loop(
        self, consumer: AIOKafkaConsumer, handler: BatchHandler, publisher: Publisher
    ) -> None:
        await ConsumerLoop(
            consumer,
            handler,
            SERVICE,
            publisher,
            retry_initial_s=self.settings.retry_initial_s,
            retry_max_s=self.settings.retry_max_s,
        ).run()

    @property
    def _suppressions_group(self) -> str:
        return self.settings.topic_prefix + SERVICE + "-suppressions"

    async def _consume_suppressions(self) -> None:
        """email.events, engagement.results, customer.activity -> dispatcher.suppressions
        (unsubscribes, hard bounces, sunsets and what lifts them)."""
        assert self._producer is not None and self._suppression_consumer is not None
        publisher = await self._publisher()
        handler = SuppressionEvents(SuppressionRepository(self.engine), publisher)
        await ConsumerLoop(
            self._suppression_consumer,
            handler,
            SERVICE,
            publisher,
            retry_initial_s=self.settings.retry_initial_s,
            retry_max_s=self.settings.retry_max_s,
        ).run()

    async def _consume(self) -> None:
        assert self._producer is not None and self._consumer is not None
        publisher = await self._publisher()
        await ConsumerLoop(
            self._consumer,
            self._handler(publisher),
            SERVICE,
            publisher,
            retry_initial_s=self.settings.retry_initial_s,
            retry_max_s=self.settings.retry_max_s,
            max_records=self.settings.batch_size,
        ).run()

    def _handler(self, publisher: Publisher) -> RequestHandler:
        s = self.settings
        dispatcher = Dispatcher(
            repository=MessageRepository(self.engine),
            renderer=TemplateRenderer(),
            pool=self._pool,
            results=ResultPublisher(publisher, self.topics.name(ENGAGEMENT_RESULTS)),
            clock=self.clock,
            policy=SendPolicy(
                mail_from=s.mail_from,
                max_attempts=s.max_send_attempts,
                retry_initial_s=s.retry_initial_s,
                retry_max_s=s.retry_max_s,
            ),
            engagement=self._engagement(publisher),
            coupons=self._coupon_desk(publisher),
            content=self._content(),
        )
        self._dispatcher = dispatcher
        return RequestHandler(dispatcher, publisher, self.privacy)

    def _content(self) -> Content:
        s = self.settings
        shops = {c.shop_id: c.view() for c in s.shops}
        if s.ingest_url is None:
            return Content(shops)
        products = IngestRecommendations(
            self._http, s.ingest_url, s.ingest_token, s.products_per_mail
        )
        return Content(shops, products)

    def _coupon_desk(self, publisher: Publisher | None) -> CouponDesk:
        connectors = {
            c.shop_id: ShopifyDiscounts(
                c.shopify_admin_url, c.shopify_access_token.get_secret_value(), self._http
            )
            for c in self.settings.coupons
            if c.shopify_admin_url is not None and c.shopify_access_token is not None
        }
        topic = self.topics.name(ENGAGEMENT_RESULTS)
        return CouponDesk(self.coupons, self._coupon_shops, connectors, publisher, topic)

    def _engagement(self, publisher: Publisher) -> Engagement:
        s = self.settings
        shops = {c.shop_id: ShopIdentity(c.mail(), c.dkim_key()) for c in s.shops}
        signer = TokenSigner(s.tracking_keys) if s.tracking_keys else None
        bounces = BounceTopic(publisher, self.topics.name(EMAIL_EVENTS))
        suppressions = SuppressionRepository(self.engine)
        return Engagement(shops, signer, suppressions, bounces, self._barrier)

    async def stop(self, grace_s: float | None = None) -> None:
        """Lets the mail already at the relay finish (up to `stop_grace_s`; 0: cut it off, as
        a kill would), then stops everything. What was not started is left for the next
        instance: its requests are not committed and its rows stay claimed."""
        grace_s = self.settings.stop_grace_s if grace_s is None else grace_s
        if self._dispatcher is not None and grace_s > 0:
            self._dispatcher.drain()
            try:
                async with asyncio.timeout(grace_s):
                    await self._dispatcher.idle()
            except TimeoutError:
                log.warning("stop_grace_expired", grace_s=grace_s)
        await self._loops.stop()
        self._pool.close()
        await self._http.aclose()
        if self._consumer is not None:
            await quietly(stop_consumer(self._consumer), "consumer")
        if self._suppression_consumer is not None:
            await quietly(stop_consumer(self._suppression_consumer), "suppressions consumer")
        await quietly(self._barrier.close(), "suppression barrier")
        if self._privacy_consumer is not None:
            await quietly(stop_consumer(self._privacy_consumer), "privacy consumer")
        if self._producer is not None:
            await quietly(self._producer.stop(), "producer")
        await self.engine.dispose()

    async def _database_ready(self) -> bool:
        return await db.ping(self.engine)

    async def _broker_ready(self) -> bool:
        if self._producer is None:
            return False
        return await Publisher(self._producer, SERVICE).ready()


class BounceTopic:
    def __init__(self, publisher: Publisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def publish_bounces(self, events: list[tuple[str, CloudEvent]]) -> None:
        """All bounces of a batch at once, waiting for every ack."""
        await self._publisher.publish_many([(self._topic, key, event) for key, event in events])
