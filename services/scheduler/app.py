"""Wiring: settings -> engine, producer, consumer -> runner -> activity handler and loops."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import Depends, FastAPI

from services.scheduler.adapters.privacy_repository import SchedulerPrivacyRepository
from services.scheduler.adapters.tables import (
    contact_log,
    privacy_requests,
    processed_activities,
)
from services.scheduler.consumer import ActivityHandler
from services.scheduler.contact_gate import ContactGate
from services.scheduler.dashboard_feeds import dashboard_sources
from services.scheduler.journeys.api import journeys_router
from services.scheduler.journeys.service import JourneyService
from services.scheduler.loops import OutboxPublisher, OutboxRelay, TimerLoop
from services.scheduler.predictions.api import predictions_router
from services.scheduler.predictions.service import PredictionRefresher
from services.scheduler.privacy import PrivacyDesk
from services.scheduler.privacy_api import privacy_router
from services.scheduler.reports.api import DashboardSources, reports_router
from services.scheduler.reports.consumer import ResultsHandler
from services.scheduler.reports.service import ReportsService
from services.scheduler.reports.winners import WinnerDeclarer
from services.scheduler.runner import JourneyCatalog, Runner
from services.scheduler.segments.api import segments_router
from services.scheduler.segments.service import (
    PredictionEntries,
    SegmentSweeper,
    SegmentTimers,
    SegmentTracker,
)
from services.scheduler.settings import SchedulerSettings
from shared import db
from shared.admin_auth import admin_guard
from shared.clock import Clock
from shared.http import ReadinessCheck, ops_router
from shared.kafka import (
    Assignment,
    ConsumerLoop,
    Publisher,
    make_consumer,
    make_producer,
    start_with_retry,
    stop_consumer,
)
from shared.privacy import PrivacyRequestHandler
from shared.pruning import Pruner
from shared.runtime import Loops, quietly
from shared.topics import (
    CUSTOMER_ACTIVITY,
    ENGAGEMENT_RESULTS,
    PRIVACY_REQUESTS,
    PRIVACY_RESULTS,
    Topics,
)

SERVICE = "scheduler"
CONTACT_LOG_MARGIN = timedelta(days=1)


class SchedulerService:
    def __init__(
        self,
        settings: SchedulerSettings,
        clock: Clock,
        dashboard: DashboardSources | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        topics = Topics(settings.topic_prefix)
        self.engine = db.make_engine(settings.database_url)
        self.producer = make_producer(settings.kafka_bootstrap_servers, settings.kafka_client_id)
        self.publisher = Publisher(self.producer, SERVICE)
        self.assignment = Assignment()
        self.consumer = make_consumer(
            settings.kafka_bootstrap_servers,
            settings.topic_prefix + SERVICE,
            settings.kafka_client_id,
            topics.name(CUSTOMER_ACTIVITY),
            listener=self.assignment,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
        gate = ContactGate({p.shop_id: p for p in settings.contact_policies})
        self.runner = Runner(JourneyCatalog(), topics, contact=gate)
        wake_relay, wake_timers = asyncio.Event(), asyncio.Event()
        outbox = OutboxPublisher(self.engine, self.publisher, wake_relay)
        self.timers = TimerLoop(
            self.engine,
            self.runner,
            clock,
            self.assignment,
            outbox,
            wake_timers,
            settings.poll_interval_s,
            settings.claim_batch,
            lanes=settings.lanes,
            segments=SegmentTimers(self.engine, self.runner),
        )
        self.segment_sweeper = SegmentSweeper(
            self.engine, self.runner, clock, self.assignment, settings.poll_interval_s
        )
        self.relay = OutboxRelay(self.engine, self.publisher, wake_relay, settings.poll_interval_s)
        handler = ActivityHandler(
            self.engine,
            self.runner,
            self.publisher,
            outbox,
            clock,
            wake_timers,
            settings.poll_interval_s,
            segments=SegmentTracker(self.runner),
            lanes=settings.lanes,
        )
        self.consumer_loop = ConsumerLoop(
            self.consumer,
            handler,
            SERVICE,
            self.publisher,
            max_records=settings.activity_batch,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
        )
        self.results_consumer = make_consumer(
            settings.kafka_bootstrap_servers,
            settings.topic_prefix + SERVICE + "-results",
            settings.kafka_client_id,
            topics.name(ENGAGEMENT_RESULTS),
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
        self.results_loop = ConsumerLoop(
            self.results_consumer,
            ResultsHandler(self.engine, self.publisher),
            SERVICE,
            self.publisher,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
        )
        self.pruner = Pruner(  # forgets activity ids the broker can no longer redeliver
            self.engine,
            processed_activities,
            "processed_at",
            clock,
            timedelta(days=settings.processed_retention_days),
            settings.prune_interval_s,
        )
        # A refresh that moved someone's predictions re-evaluates the segments that read them.
        self.predictions = PredictionRefresher(
            settings.database_url,
            clock,
            settings.predictions_refresh_s,
            on_refreshed=PredictionEntries(self.engine, self.runner, clock).on_refreshed,
        )
        self.contact_pruner = Pruner(  # the contact log only matters within the longest limit
            self.engine,
            contact_log,
            "released_at",
            clock,
            gate.longest_period + CONTACT_LOG_MARGIN,
            settings.prune_interval_s,
        )
        self._privacy(settings, topics)
        self._loops = Loops(SERVICE)
        self.app = FastAPI(
            title="Rebound scheduler", description="Journeys, enrolments and durable timers."
        )
        # The control plane reads on its own pool: a report never waits on, or holds, a
        # connection of the timer loop or the consumers.
        self.reports_engine = db.make_engine(settings.database_url, settings.reports_pool_size)
        # A/B winners of send_winner steps: a report's read, on the control plane's pool.
        self.winners = WinnerDeclarer(self.reports_engine, clock, settings.winner_check_s)
        if settings.role != "engine":
            guard = admin_guard(settings.admin_token, "REBOUND_SCHEDULER_ADMIN_TOKEN")
            self.app.include_router(
                journeys_router(JourneyService(self.engine, clock)), dependencies=[Depends(guard)]
            )
            self.app.include_router(
                segments_router(self.reports_engine, clock), dependencies=[Depends(guard)]
            )
            feeds = dashboard or dashboard_sources(self.reports_engine, clock)
            reports = reports_router(ReportsService(self.reports_engine), clock, feeds)
            self.app.include_router(reports, dependencies=[Depends(guard)])
            self.app.include_router(
                predictions_router(self.reports_engine, self.predictions),
                dependencies=[Depends(guard)],
            )
            # Without the engine in this process, the engine's outbox relay sends the requests.
            privacy = privacy_router(
                self.reports_engine,
                outbox if settings.role == "all" else None,
                topics.name(PRIVACY_REQUESTS),
                clock,
                self.export_retention,
            )
            self.app.include_router(privacy, dependencies=[Depends(guard)])
        checks: dict[str, ReadinessCheck] = {"database": lambda: db.ping(self.engine)}
        if settings.role != "api":  # the control plane alone starts no producer
            checks["broker"] = self.publisher.ready
        self.app.include_router(ops_router(checks))

    def _privacy(self, settings: SchedulerSettings, topics: Topics) -> None:
        """Data subject requests: its own group on privacy.requests and privacy.results."""
        self.export_retention = timedelta(days=settings.export_retention_days)
        self.privacy_consumer = make_consumer(
            settings.kafka_bootstrap_servers,
            settings.topic_prefix + SERVICE + "-privacy",
            settings.kafka_client_id + "-privacy",
            topics.name(PRIVACY_REQUESTS),
            topics.name(PRIVACY_RESULTS),
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
        store = SchedulerPrivacyRepository(self.engine, self.clock)
        acting = PrivacyRequestHandler(
            "scheduler", store, self.publisher, topics.name(PRIVACY_RESULTS), self.clock
        )
        desk = PrivacyDesk(
            self.engine,
            acting,
            self.publisher,
            topics.name(PRIVACY_REQUESTS),
            self.clock,
            self.export_retention,
        )
        self.privacy_loop = ConsumerLoop(
            self.privacy_consumer,
            desk,
            SERVICE,
            self.publisher,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
        )
        # An export's data is deleted when it expires (expires_at is set for exports only).
        self.export_pruner = Pruner(
            self.engine,
            privacy_requests,
            "expires_at",
            self.clock,
            timedelta(0),
            settings.prune_interval_s,
        )

    async def start(self) -> None:
        if self.settings.role == "api":
            return  # the control plane only: the engine runs in another process
        self._loops.spawn("producer", self._start_producer)
        self._loops.spawn("activities", self.consumer_loop.run)
        self._loops.spawn("results", self.results_loop.run)
        self._loops.spawn("prune", self.pruner.run)
        self._loops.spawn("prune_contact_log", self.contact_pruner.run)
        if self.settings.predictions_refresh_s > 0:
            self._loops.spawn("predictions", self.predictions.run)
        self._loops.spawn("prune-exports", self.export_pruner.run)
        self._loops.spawn("ab_winners", self.winners.run)

    async def _start_producer(self) -> None:
        """The producer first: the relay and the timers need it; then they run forever."""
        await start_with_retry(self.producer, "scheduler producer")
        self._loops.spawn("outbox", self.relay.run)
        self._loops.spawn("timers", self.timers.run)
        self._loops.spawn("segments", self.segment_sweeper.run)
        self._loops.spawn("privacy", self.privacy_loop.run)  # it answers through the producer

    async def stop(self) -> None:
        await self._loops.stop()
        self.predictions.close()
        await quietly(stop_consumer(self.consumer), "consumer")
        await quietly(stop_consumer(self.results_consumer), "results consumer")
        await quietly(stop_consumer(self.privacy_consumer), "privacy consumer")
        await quietly(self.producer.stop(), "producer")
        await self.engine.dispose()
        await self.reports_engine.dispose()
