"""Applies the engine's decisions inside the caller's transaction: enrolments, timers, outbox.

The consumer (a batch of activities) and the timer loop (a pass of due timers) both come
through here, so an enrolment changes the same way whichever woke it. Per pass or batch: a
few reads, the pure engine in a plain loop over the rows, then one statement per kind of
change (see adapters/queries.py); the events to publish come back to the caller, which
publishes them from memory after the commit.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.contact_repository import ContactRepository
from services.scheduler.adapters.engagement_repository import EngagementRepository
from services.scheduler.adapters.repository import (
    BatchRepository,
    CustomerFacts,
    DueTimer,
    NewEnrollment,
    OutboxMessage,
    RequestRow,
    TimerRow,
    Writes,
)
from services.scheduler.adapters.winner_repository import Version, WinnerRepository
from services.scheduler.contact_gate import ContactGate, DueSend
from services.scheduler.domain import engine
from services.scheduler.domain.engine import Enrollment
from services.scheduler.domain.facts import (
    EnrollmentView,
    LastMessage,
    for_enrollment,
    lazy_facts,
)
from services.scheduler.domain.journey import Journey, journey_reads_predictions
from services.scheduler.journeys.repository import JourneyRepository
from services.scheduler.predictions.repository import PredictionRepository
from services.scheduler.reports.repository import ReportFactsRepository
from shared import events
from shared.events import Activity, MessageRequest, Profile
from shared.topics import ENGAGEMENT_RESULTS, MESSAGE_REQUESTS, Topics

SOURCE = "rebound/scheduler"
SEGMENT_ENTERED = "segment.entered"  # the `event.kind` a segment enrolment is made with


class JourneyCatalog:
    """Every stored version (enrolments finish on the version they started), newest active."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], Journey] = {}
        self._active: list[Journey] = []
        self._stamp: tuple[int, datetime | None] | None = None
        self.reads_predictions = False  # some stored version's conditions look at them
        self.sending_winners: list[Version] = []  # versions with a send_winner step
        self._checked_in: weakref.ref[object] | None = None  # the transaction that looked last

    async def refresh(self, conn: AsyncConnection) -> None:
        """One cheap query per transaction (the activity handler, the segment tracker and
        the runner all ask in the same one); definitions are re-read only when they changed."""
        transaction = conn.sync_connection.get_transaction() if conn.sync_connection else None
        seen = self._checked_in() if self._checked_in is not None else None
        if transaction is not None and seen is transaction:
            return
        repo = JourneyRepository()
        stamp = await repo.stamp(conn)
        looked = conn.sync_connection.get_transaction() if conn.sync_connection else None
        self._checked_in = None if looked is None else weakref.ref(looked)
        if stamp == self._stamp:
            return
        stored = await repo.all_versions(conn)
        self._versions = {(j.id, j.version): j for j, _ in stored}
        self._active = [j for j, active in stored if active]
        self.reads_predictions = any(journey_reads_predictions(j) for j, _ in stored)
        self.sending_winners = [(j.id, j.version) for j, _ in stored if _sends_winner(j)]
        # Only now: a transaction of another loop (or timer lane) that asks meanwhile reads
        # the definitions too, instead of taking the stamp for definitions not yet loaded.
        self._stamp = stamp

    def active(self) -> list[Journey]:
        return self._active

    def version(self, journey_id: str, version: int) -> Journey | None:
        return self._versions.get((journey_id, version))


@dataclass(frozen=True)
class Published:
    """What a committed pass or batch has to publish: outbox rows and their bytes, in order."""

    outbox_ids: list[int]
    messages: list[OutboxMessage]
    earliest_timer: datetime | None = None


def merge(parts: Sequence[Published]) -> Published:
    """Several committed parts as one, in their order."""
    due = [p.earliest_timer for p in parts if p.earliest_timer is not None]
    return Published(
        [i for p in parts for i in p.outbox_ids],
        [m for p in parts for m in p.messages],
        min(due, default=None),
    )


@dataclass
class _Tracked:
    """One enrolment while a pass or batch runs: its latest state and its pending timer."""

    journey: Journey
    enrollment: Enrollment
    customer: CustomerFacts
    is_new: bool
    changed: bool = False
    timer: engine.ScheduleTimer | engine.CancelTimer | None = None


Action = engine.RequestMessage | engine.PublishDecision


@dataclass
class _Plan:
    """Engine outcomes of one pass or batch, kept in order, written once at the end."""

    tracked: list[_Tracked] = field(default_factory=list)
    actions: list[tuple[_Tracked, Action, CustomerFacts]] = field(default_factory=list)

    def track(self, tracked: _Tracked) -> _Tracked:
        self.tracked.append(tracked)
        return tracked

    def apply(self, tracked: _Tracked, outcome: engine.Outcome, customer: CustomerFacts) -> None:
        if outcome.enrollment != tracked.enrollment:
            tracked.enrollment = outcome.enrollment
            tracked.changed = True
        for decision in outcome.decisions:
            if isinstance(decision, engine.ScheduleTimer | engine.CancelTimer):
                tracked.timer = decision  # the last one stands: a wait replaced, a cancel
            else:
                self.actions.append((tracked, decision, customer))

    def writes(self, requests: list[RequestRow]) -> Writes:
        timers, cancelled = [], []
        for t in self.tracked:
            assert t.enrollment.id is not None
            if isinstance(t.timer, engine.ScheduleTimer):
                timers.append(
                    TimerRow(t.enrollment.id, t.customer.partition, t.timer.step_id, t.timer.due_at)
                )
            elif isinstance(t.timer, engine.CancelTimer) and not t.is_new:
                cancelled.append(t.enrollment.id)
        return Writes(
            inserted=[
                NewEnrollment(t.enrollment, t.customer.partition) for t in self.tracked if t.is_new
            ],
            updated=[t.enrollment for t in self.tracked if t.changed and not t.is_new],
            timers=timers,
            cancelled=cancelled,
            requests=requests,
        )

    def earliest_timer(self) -> datetime | None:
        due = [t.timer.due_at for t in self.tracked if isinstance(t.timer, engine.ScheduleTimer)]
        return min(due, default=None)


@dataclass(frozen=True)
class _Seen:
    """What one customer's activity is applied against: enrolments, past ones, last messages."""

    enrolled: list[_Tracked]
    ever: set[tuple[str, str]]
    last: dict[int, tuple[LastMessage, int]]
    winners: dict[Version, dict[str, str]]  # declared A/B winners of send_winner steps


@dataclass(frozen=True)
class _Request:
    """A message request made in this pass or batch: its record and its JSON form (the
    contract's fields in order), made from facts validated when they came in."""

    row: RequestRow
    data: dict[str, Any]

    def message(self) -> MessageRequest:
        """The contract, for the contact gate: built only for the mail it times."""
        return MessageRequest.model_validate(self.data)

    def event(self) -> bytes:
        return _request_event(self.data)


@dataclass
class Runner:
    catalog: JourneyCatalog
    topics: Topics
    engagement: EngagementRepository = field(default_factory=EngagementRepository)
    contact: ContactGate = field(default_factory=ContactGate)  # when marketing mail may go

    async def fire_timers(
        self, conn: AsyncConnection, due: Sequence[DueTimer], now: datetime
    ) -> Published:
        """Claimed timers -> engine -> bulk writes, in the caller's transaction."""
        repo = BatchRepository(conn)
        await self.catalog.refresh(conn)
        steps = {t.enrollment_id: t.step_id for t in due}
        plan = _Plan()
        last = await self.engagement.last_messages(conn, steps)
        targets = await repo.timer_targets(list(steps))
        predictions = await self._predictions(conn, (c.key for _, c in targets))
        winners = await self._winners(conn)
        for enrollment, customer in targets:
            journey = self.catalog.version(enrollment.journey_id, enrollment.journey_version)
            if journey is None:
                continue
            assert enrollment.id is not None
            facts = _facts("timer", now, customer, now, predictions=predictions.get(customer.key))
            scoped = _scoped(facts, journey, enrollment, last.get(enrollment.id))
            outcome = engine.on_timer(
                journey, enrollment, steps[enrollment.id], scoped, now, _of(winners, journey)
            )
            plan.apply(
                plan.track(_Tracked(journey, enrollment, customer, False)), outcome, customer
            )
        return await self._write(repo, plan, now)

    async def apply_activities(
        self, conn: AsyncConnection, batch: Sequence[tuple[Activity, int]], now: datetime
    ) -> Published:
        """New activities (already deduplicated), in order, in the caller's transaction."""
        if not batch:
            return Published([], [])
        repo = BatchRepository(conn)
        await self.catalog.refresh(conn)
        given = [_customer(a, p) for a, p in batch]
        await repo.save_customers(given, now)
        latest = {c.key: c for c in given}
        # E-mail events: what the recipient did with a message.
        await self.engagement.record(conn, [a.message for a, _ in batch if a.message is not None])
        # Orders placed: the reports' holdout conversions and retention cohorts.
        await ReportFactsRepository(conn).record_orders(
            [a for a, _ in batch if a.kind == events.ORDER_PLACED]
        )
        plan = _Plan()
        by_customer: dict[str, list[_Tracked]] = {key: [] for key in latest}
        for enrollment in await repo.active_for_update(list(latest)):
            journey = self.catalog.version(enrollment.journey_id, enrollment.journey_version)
            if journey is not None:
                tracked = _Tracked(journey, enrollment, latest[enrollment.customer_key], False)
                by_customer[enrollment.customer_key].append(plan.track(tracked))
        never = [j.id for j in self.catalog.active() if j.limits.reentry == "never"]
        ever = await repo.ever_enrolled(list(latest), never)
        last = await self.engagement.last_messages(
            conn, (t.enrollment.id for t in plan.tracked if t.enrollment.id is not None)
        )
        predictions = await self._predictions(conn, latest)
        winners = await self._winners(conn)
        for activity, partition in batch:
            customer = _customer(activity, partition, predictions.get(activity.profile.key))
            seen = _Seen(by_customer[customer.key], ever, last, winners)
            self._on_activity(plan, seen, activity, customer, now)
        return await self._write(repo, plan, now)

    def _on_activity(
        self,
        plan: _Plan,
        seen: _Seen,
        activity: Activity,
        customer: CustomerFacts,
        now: datetime,
    ) -> None:
        about = activity.message.request_key if activity.message else None
        facts = _facts(
            activity.kind, activity.occurred_at, customer, now, about, customer.predictions
        )
        enrolled, ever = seen.enrolled, seen.ever
        active: set[str] = set()
        for tracked in enrolled:
            if tracked.enrollment.status != "active":
                continue  # ended earlier in this batch
            last = seen.last.get(tracked.enrollment.id or 0)
            scoped = _scoped(facts, tracked.journey, tracked.enrollment, last)
            outcome = engine.on_activity(
                tracked.journey,
                tracked.enrollment,
                activity.kind,
                scoped,
                now,
                _of(seen.winners, tracked.journey),
            )
            plan.apply(tracked, outcome, customer)
            if outcome.enrollment.status == "active":
                active.add(tracked.journey.id)
        for journey in self.catalog.active():
            if journey.id in active or not engine.should_enter(journey, activity.kind, facts, now):
                continue
            if journey.limits.reentry == "never" and (journey.id, customer.key) in ever:
                continue
            outcome = engine.enter(journey, customer.key, facts, now, _of(seen.winners, journey))
            tracked = plan.track(_Tracked(journey, outcome.enrollment, customer, True))
            plan.apply(tracked, outcome, customer)
            enrolled.append(tracked)
            ever.add((journey.id, customer.key))

    async def enter(
        self,
        conn: AsyncConnection,
        entrants: Sequence[tuple[Journey, CustomerFacts]],
        now: datetime,
    ) -> Published:
        """Enrol customers who entered a journey's segment, unless already in it (or ever, for
        `reentry: never`), in the caller's transaction."""
        if not entrants:
            return Published([], [])
        repo = BatchRepository(conn)
        keys = sorted({c.key for _, c in entrants})
        active = {(e.journey_id, e.customer_key) for e in await repo.active_for_update(keys)}
        never = sorted({j.id for j, _ in entrants if j.limits.reentry == "never"})
        ever = await repo.ever_enrolled(keys, never)
        winners = await self._winners(conn)
        plan = _Plan()
        for journey, customer in entrants:
            pair = (journey.id, customer.key)
            if pair in active or (journey.limits.reentry == "never" and pair in ever):
                continue
            facts = _facts(SEGMENT_ENTERED, now, customer, now, predictions=customer.predictions)
            outcome = engine.enter(journey, customer.key, facts, now, _of(winners, journey))
            plan.apply(
                plan.track(_Tracked(journey, outcome.enrollment, customer, True)), outcome, customer
            )
            active.add(pair)
        return await self._write(repo, plan, now)

    async def _predictions(
        self, conn: AsyncConnection, keys: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        """The customers' purchase predictions, in one statement, when a journey reads them."""
        if not self.catalog.reads_predictions:
            return {}
        return await PredictionRepository(conn).facts_for(keys)

    async def _winners(self, conn: AsyncConnection) -> dict[Version, dict[str, str]]:
        """The declared A/B winners, in one statement, when a journey sends its winner."""
        if not self.catalog.sending_winners:
            return {}
        return await WinnerRepository(conn).of_versions(self.catalog.sending_winners)

    async def _within_caps(self, repo: BatchRepository, plan: _Plan) -> None:
        """`limits.max_enrolments`: new enrolments past a journey's cap are not made."""
        wanted: dict[str, int] = {}
        caps: dict[str, int] = {}
        for t in plan.tracked:
            cap = t.journey.limits.max_enrolments
            if t.is_new and cap is not None:
                wanted[t.journey.id] = wanted.get(t.journey.id, 0) + 1
                caps[t.journey.id] = cap
        if not wanted:
            return
        granted = await repo.reserve_enrolments(wanted, caps)
        refused = set()
        for t in plan.tracked:
            if t.is_new and t.journey.id in granted:
                if granted[t.journey.id] > 0:
                    granted[t.journey.id] -= 1
                else:
                    refused.add(id(t))
        plan.tracked = [t for t in plan.tracked if id(t) not in refused]
        plan.actions = [a for a in plan.actions if id(a[0]) not in refused]

    async def _write(self, repo: BatchRepository, plan: _Plan, now: datetime) -> Published:
        await self._within_caps(repo, plan)
        new = [t for t in plan.tracked if t.is_new]
        for tracked, new_id in zip(new, await repo.new_enrollment_ids(len(new)), strict=True):
            tracked.enrollment = engine.changed(tracked.enrollment, id=new_id)
        requests: list[_Request] = []
        for tracked, action, customer in plan.actions:
            if isinstance(action, engine.RequestMessage):
                request = self._message_request(tracked, action, customer, now)
                if request is not None:
                    requests.append(request)
        due = self._governed(plan, {r.row.request_key: r for r in requests}, now)
        _stay_while_held(plan, {d.request.request_key for d in due})
        fresh = await repo.write(plan.writes([r.row for r in requests]), now)
        due = [d for d in due if d.request.request_key in fresh]
        fresh -= await self.contact.hold(ContactRepository(repo.connection), due, now)
        messages = self._messages(plan, {r.row.request_key: r for r in requests}, fresh, now)
        ids = await repo.add_outbox(messages, now)
        return Published(ids, messages, plan.earliest_timer())

    def _governed(self, plan: _Plan, requests: dict[str, _Request], now: datetime) -> list[DueSend]:
        """The requests the contact policy times, with what it weighs (test mode goes as due:
        its mail is not the customer's and must not use up their slots)."""
        due: dict[str, DueSend] = {}
        for tracked, action, customer in plan.actions:
            if not isinstance(action, engine.RequestMessage) or tracked.journey.test_mode:
                continue
            key = _request_key(tracked, action)
            request, best_hour = requests.get(key), action.send.send_at == "best_hour"
            if request is None or key in due:
                continue
            if not self.contact.governs_shop(request.data["shop_id"], best_hour):
                continue
            profile = customer.about()
            due[key] = DueSend(
                request.message(),
                now,
                tracked.journey.priority,
                action.send.expiry,
                best_hour,
                profile["time_zone"],
                profile["usual_open_hour"],
            )
        return list(due.values())

    def _messages(
        self,
        plan: _Plan,
        requests: dict[str, _Request],
        fresh: set[str],
        now: datetime,
    ) -> list[OutboxMessage]:
        """Outbox rows in the order the engine decided; a request made before is not repeated."""
        out: list[OutboxMessage] = []
        request_topic = self.topics.name(MESSAGE_REQUESTS)
        for tracked, action, customer in plan.actions:
            assert tracked.enrollment.id is not None
            if isinstance(action, engine.PublishDecision):
                out.append(
                    self._decision(tracked.journey, tracked.enrollment.id, action, customer, now)
                )
                continue
            key = _request_key(tracked, action)
            if key in fresh and key in requests:
                fresh.discard(key)  # the same step asked twice in one pass is asked once
                out.append(OutboxMessage(request_topic, customer.key, requests[key].event()))
        return out

    def _message_request(
        self,
        tracked: _Tracked,
        action: engine.RequestMessage,
        customer: CustomerFacts,
        now: datetime,
    ) -> _Request | None:
        journey, profile = tracked.journey, customer.about()
        email = profile["email"]
        if journey.test_mode:
            email = journey.test_recipients[0] if journey.test_recipients else None
        if not email:
            return None
        send = action.send
        summary = {name: profile[name] for name in _SUMMARY_FIELDS}
        context: dict[str, Any] = {"journey_name": journey.name, "customer": summary}
        if send.params:
            context["params"] = {k: str(v) for k, v in send.params.items()}
        cart = customer.cart_json()
        if cart is not None:
            context["cart"] = cart
        if send.offer is not None:
            # A discount code is issued by the dispatcher, one per request key.
            context["offer"] = send.offer.model_dump(mode="json", exclude_none=True)
        key = _request_key(tracked, action)
        recipient = {
            "email": email,
            "first_name": profile["first_name"],
            "last_name": profile["last_name"],
            "locale": profile["locale"],
        }
        # The contract's fields in its order: the event's data as it is, the request from it.
        data: dict[str, Any] = {
            "request_key": key,
            "shop_id": profile["shop_id"],
            "customer_key": customer.key,
            "journey_id": journey.id,
            "journey_version": journey.version,
            "step_id": action.step_id,
            "channel": "email",
            "template": send.template,
            "subject": send.subject,
            "recipient": recipient,
            "consent_required": journey.consent == "marketing",
            "marketing_consent": profile["marketing_consent"],
            "context": context,
            "requested_at": now,
            "test": journey.test_mode,
        }
        assert tracked.enrollment.id is not None
        row = RequestRow(key, tracked.enrollment.id, action.step_id, action.variant)
        return _Request(row, data)

    def _decision(
        self,
        journey: Journey,
        enrollment_id: int,
        decision: engine.PublishDecision,
        customer: CustomerFacts,
        now: datetime,
    ) -> OutboxMessage:
        """Other channels (SMS, ads audiences, suppression) act on decisions published here."""
        if decision.decision == events.SUNSET_DECISION:
            return self._sunset(journey, enrollment_id, decision, customer, now)
        event = events.CloudEvent(
            id=events.stable_event_id("decision", str(enrollment_id), decision.step_id),
            source=SOURCE,
            type=events.JOURNEY_DECISION,
            subject=customer.key,
            time=now,
            shopid=customer.about()["shop_id"],
            data=events.JourneyDecision(
                decision=decision.decision,
                journey_id=journey.id,
                journey_version=journey.version,
                step_id=decision.step_id,
                customer_key=customer.key,
            ).model_dump(mode="json"),
        )
        return OutboxMessage(
            self.topics.name(ENGAGEMENT_RESULTS), customer.key, events.encode(event)
        )

    def _sunset(
        self,
        journey: Journey,
        enrollment_id: int,
        decision: engine.PublishDecision,
        customer: CustomerFacts,
        now: datetime,
    ) -> OutboxMessage:
        """customer.sunset.v1: the dispatcher suppresses the customer's marketing mail."""
        event = events.make_event(
            type=events.CUSTOMER_SUNSET,
            source=SOURCE,
            id=events.stable_event_id("decision", str(enrollment_id), decision.step_id),
            time=now,
            subject=customer.key,
            shop_id=customer.about()["shop_id"],
            data=events.CustomerSunset(
                shop_id=customer.about()["shop_id"],
                customer_key=customer.key,
                journey_id=journey.id,
                journey_version=journey.version,
                step_id=decision.step_id,
                sunset_at=now,
            ),
        )
        return OutboxMessage(
            self.topics.name(ENGAGEMENT_RESULTS), customer.key, events.encode(event)
        )


def _sends_winner(journey: Journey) -> bool:
    return any(s.send is not None and s.send.send_winner for s in journey.steps)


def _of(winners: dict[Version, dict[str, str]], journey: Journey) -> engine.Winners:
    return winners.get((journey.id, journey.version), engine.NO_WINNERS)


def _scoped(
    facts: Mapping[str, Any],
    journey: Journey,
    enrollment: Enrollment,
    last: tuple[LastMessage, int] | None,
) -> Mapping[str, Any]:
    """The facts as one enrolment sees them: its own last message and progress."""
    step = journey.steps[min(enrollment.step_index, len(journey.steps) - 1)]
    message, sent = last if last is not None else (None, 0)
    view = EnrollmentView(journey.id, step.id, enrollment.entered_at, enrollment.holdout, sent)
    return for_enrollment(facts, view, message)


def _stay_while_held(plan: _Plan, held: set[str]) -> None:
    """An enrolment whose last step is a message the contact policy holds is not completed
    yet: an exit rule (an order) still stops that message. The gate completes it on release."""
    for tracked, action, _ in plan.actions:
        if (
            isinstance(action, engine.RequestMessage)
            and tracked.enrollment.status == "completed"
            and _request_key(tracked, action) in held
        ):
            tracked.enrollment = replace(tracked.enrollment, status="active")


def _request_key(tracked: _Tracked, action: engine.RequestMessage) -> str:
    """Stable: a replay after a crash asks with the same key, and the dispatcher dedupes it."""
    return f"{tracked.journey.id}:{tracked.enrollment.id}:{action.step_id}"


def _request_event(data: dict[str, Any]) -> bytes:
    """The bytes `events.encode(make_event(...))` gives for the request whose JSON form (the
    contract's fields in order) is `data`, in one serialisation: per timer."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": events.stable_event_id("request", data["request_key"]),
            "source": SOURCE,
            "type": events.MESSAGE_REQUESTED,
            "subject": data["customer_key"],
            "time": data["requested_at"],
            "datacontenttype": "application/json",
            "shopid": data["shop_id"],
            "data": data,
        },
        option=orjson.OPT_UTC_Z,  # pydantic writes UTC as `Z`
    )


# What a lifecycle mail may say about the customer (the dispatcher's content.CustomerContext),
# in the profile's order (as `model_dump(include=...)` gave them).
_SUMMARY_FIELDS = tuple(
    name
    for name in Profile.model_fields
    if name
    in {
        "orders_count",
        "total_spent",
        "first_order_at",
        "last_order_at",
        "registered_at",
        "last_order_categories",
    }
)


def _facts(
    kind: str,
    occurred_at: datetime,
    customer: CustomerFacts,
    now: datetime,
    about_message: str | None = None,
    predictions: Mapping[str, Any] | None = None,
) -> Mapping[str, Any]:
    return lazy_facts(
        kind,
        occurred_at,
        customer.profile_facts,
        customer.cart_facts,
        now,
        about_message,
        predictions,
    )


def _customer(
    activity: Activity, partition: int, predictions: dict[str, Any] | None = None
) -> CustomerFacts:
    key = activity.profile.key
    return CustomerFacts(key, partition, activity.profile, activity.cart, predictions)
