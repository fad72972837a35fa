"""Applies the engine's decisions inside the caller's transaction: enrolments, timers, outbox.

The consumer (activities) and the timer loop (due timers) both come through here, so an
enrolment changes the same way whichever woke it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.engagement_repository import EngagementRepository
from services.scheduler.adapters.repository import (
    ActivityRepository,
    CustomerFacts,
    EnrollmentRepository,
    JourneyRepository,
    OutboxRepository,
    TimerRepository,
)
from services.scheduler.domain import engine
from services.scheduler.domain.facts import (
    EnrollmentView,
    LastMessage,
    build_facts,
    for_enrollment,
)
from services.scheduler.domain.journey import Journey
from shared import events
from shared.events import Activity, MessageRequest, Recipient, make_event
from shared.topics import ENGAGEMENT_RESULTS, MESSAGE_REQUESTS, Topics

SOURCE = "rebound/scheduler"


class JourneyCatalog:
    """Every stored version (enrolments finish on the version they started), newest active."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], Journey] = {}
        self._active: list[Journey] = []
        self._stamp: tuple[int, datetime | None] | None = None

    async def refresh(self, conn: AsyncConnection) -> None:
        """One cheap query per batch; definitions are re-read only when they changed."""
        repo = JourneyRepository()
        stamp = await repo.stamp(conn)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        stored = await repo.all_versions(conn)
        self._versions = {(j.id, j.version): j for j, _ in stored}
        self._active = [j for j, active in stored if active]

    def active(self) -> list[Journey]:
        return self._active

    def version(self, journey_id: str, version: int) -> Journey | None:
        return self._versions.get((journey_id, version))


@dataclass
class Runner:
    catalog: JourneyCatalog
    topics: Topics
    discount_code: str
    activities: ActivityRepository
    enrollments: EnrollmentRepository
    timers: TimerRepository
    outbox: OutboxRepository
    engagement: EngagementRepository

    @classmethod
    def build(cls, catalog: JourneyCatalog, topics: Topics, discount_code: str) -> Runner:
        return cls(
            catalog,
            topics,
            discount_code,
            ActivityRepository(),
            EnrollmentRepository(),
            TimerRepository(),
            OutboxRepository(),
            EngagementRepository(),
        )

    async def apply_activity(
        self, conn: AsyncConnection, activity: Activity, partition: int, now: datetime
    ) -> None:
        customer = CustomerFacts(activity.profile.key, partition, activity.profile, activity.cart)
        await self.activities.save_customer(conn, customer, now)
        about = activity.message.request_key if activity.message else None
        if activity.message is not None:
            await self.engagement.record(conn, activity.message)
        facts = build_facts(
            activity.kind, activity.occurred_at, activity.profile, activity.cart, now, about
        )
        enrolled: set[str] = set()
        active = await self.enrollments.active_for_update(conn, customer.key)
        last = await self.engagement.last_messages(conn, (e.id for e in active if e.id))
        for enrollment in active:
            journey = self.catalog.version(enrollment.journey_id, enrollment.journey_version)
            if journey is None:
                continue
            scoped = _scoped(facts, journey, enrollment, last.get(enrollment.id or 0))
            outcome = engine.on_activity(journey, enrollment, activity.kind, scoped, now)
            if outcome.decisions or outcome.enrollment != enrollment:
                await self._apply(conn, journey, outcome, customer, now)
            if outcome.enrollment.status == "active":
                enrolled.add(journey.id)
        for journey in self.catalog.active():
            if journey.id in enrolled or not engine.should_enter(
                journey, activity.kind, facts, now
            ):
                continue
            if journey.limits.reentry == "never" and await self.enrollments.ever_enrolled(
                conn, journey.id, customer.key
            ):
                continue
            await self._apply(
                conn, journey, engine.enter(journey, customer.key, facts, now), customer, now
            )

    async def fire_timer(
        self, conn: AsyncConnection, enrollment_id: int, step_id: str, now: datetime
    ) -> None:
        enrollment = await self.enrollments.get_for_update(conn, enrollment_id)
        if enrollment is None:
            return
        journey = self.catalog.version(enrollment.journey_id, enrollment.journey_version)
        customer = await self.activities.customer(conn, enrollment.customer_key)
        if journey is None or customer is None:
            return
        facts = build_facts("timer", now, customer.profile, customer.cart, now)
        last = await self.engagement.last_messages(conn, [enrollment_id])
        scoped = _scoped(facts, journey, enrollment, last.get(enrollment_id))
        outcome = engine.on_timer(journey, enrollment, step_id, scoped, now)
        await self._apply(conn, journey, outcome, customer, now)

    async def _apply(
        self,
        conn: AsyncConnection,
        journey: Journey,
        outcome: engine.Outcome,
        customer: CustomerFacts,
        now: datetime,
    ) -> None:
        enrollment = outcome.enrollment
        if enrollment.id is None:
            new_id = await self.enrollments.insert(conn, enrollment, customer.partition, now)
            enrollment = replace(enrollment, id=new_id)
        else:
            await self.enrollments.update(conn, enrollment, now)
        assert enrollment.id is not None
        for decision in outcome.decisions:
            await self._decide(conn, journey, enrollment.id, decision, customer, now)

    async def _decide(
        self,
        conn: AsyncConnection,
        journey: Journey,
        enrollment_id: int,
        decision: engine.Decision,
        customer: CustomerFacts,
        now: datetime,
    ) -> None:
        if isinstance(decision, engine.ScheduleTimer):
            await self.timers.schedule(
                conn, enrollment_id, customer.partition, decision.step_id, decision.due_at
            )
        elif isinstance(decision, engine.CancelTimer):
            await self.timers.cancel(conn, enrollment_id)
        elif isinstance(decision, engine.RequestMessage):
            await self._request(conn, journey, enrollment_id, decision, customer, now)
        else:
            await self._publish_decision(conn, journey, enrollment_id, decision, customer, now)

    async def _request(
        self,
        conn: AsyncConnection,
        journey: Journey,
        enrollment_id: int,
        decision: engine.RequestMessage,
        customer: CustomerFacts,
        now: datetime,
    ) -> None:
        request = self._message_request(journey, enrollment_id, decision, customer, now)
        if request is None or not await self.outbox.record_request(
            conn, request.request_key, enrollment_id, decision.step_id, decision.variant, now
        ):
            return
        event = make_event(
            type=events.MESSAGE_REQUESTED,
            source=SOURCE,
            time=now,
            id=events.stable_event_id("request", request.request_key),
            subject=customer.key,
            shop_id=customer.profile.shop_id,
            data=request,
        )
        await self.outbox.add(
            conn, self.topics.name(MESSAGE_REQUESTS), customer.key, events.encode(event), now
        )

    def _message_request(
        self,
        journey: Journey,
        enrollment_id: int,
        decision: engine.RequestMessage,
        customer: CustomerFacts,
        now: datetime,
    ) -> MessageRequest | None:
        profile = customer.profile
        email = profile.email
        if journey.test_mode:
            email = journey.test_recipients[0] if journey.test_recipients else None
        if not email:
            return None
        send = decision.send
        context: dict[str, Any] = {"journey_name": journey.name}
        if customer.cart is not None:
            context["cart"] = customer.cart.model_dump(mode="json")
        if send.offer is not None:
            offer = send.offer.model_dump(mode="json", exclude_none=True)
            if send.offer.kind == "discount_code" and not send.offer.code:
                offer["code"] = self.discount_code
            context["offer"] = offer
        return MessageRequest(
            request_key=f"{journey.id}:{enrollment_id}:{decision.step_id}",
            shop_id=profile.shop_id,
            customer_key=customer.key,
            journey_id=journey.id,
            journey_version=journey.version,
            step_id=decision.step_id,
            template=send.template,
            subject=send.subject,
            recipient=Recipient(
                email=email,
                first_name=profile.first_name,
                last_name=profile.last_name,
                locale=profile.locale,
            ),
            consent_required=journey.consent == "marketing",
            marketing_consent=profile.marketing_consent,
            context=context,
            requested_at=now,
        )

    async def _publish_decision(
        self,
        conn: AsyncConnection,
        journey: Journey,
        enrollment_id: int,
        decision: engine.PublishDecision,
        customer: CustomerFacts,
        now: datetime,
    ) -> None:
        """Other channels (SMS, ads audiences, suppression) act on decisions published here."""
        event = events.CloudEvent(
            id=events.stable_event_id("decision", str(enrollment_id), decision.step_id),
            source=SOURCE,
            type=events.JOURNEY_DECISION,
            subject=customer.key,
            time=now,
            shopid=customer.profile.shop_id,
            data=events.JourneyDecision(
                decision=decision.decision,
                journey_id=journey.id,
                journey_version=journey.version,
                step_id=decision.step_id,
                customer_key=customer.key,
            ).model_dump(mode="json"),
        )
        await self.outbox.add(
            conn, self.topics.name(ENGAGEMENT_RESULTS), customer.key, events.encode(event), now
        )


def _scoped(
    facts: dict[str, Any],
    journey: Journey,
    enrollment: engine.Enrollment,
    last: tuple[LastMessage, int] | None,
) -> dict[str, Any]:
    """The facts as one enrolment sees them: its own last message and progress."""
    step = journey.steps[min(enrollment.step_index, len(journey.steps) - 1)]
    message, sent = last if last is not None else (None, 0)
    view = EnrollmentView(journey.id, step.id, enrollment.entered_at, enrollment.holdout, sent)
    return for_enrollment(facts, view, message)
