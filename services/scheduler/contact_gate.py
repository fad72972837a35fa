"""The contact policy across every journey: decides WHEN a journey's message may go.

A send step of a shop with a contact policy (or one that asks for the customer's best hour)
is held here, a row in scheduler.contact_queue, instead of going straight to message.requests
(`hold`, called where the runner writes requests). The timer pass then looks at the customers
with something due (`release_to_outbox`): the pure `contact_policy.plan` says what goes now,
what is no longer relevant and when to look again. What goes is written to the scheduler's
outbox in the same transaction that takes it out of the queue; what expired is published as
`message.suppressed.v1 / frequency_cap_expired` on engagement.results, where the dispatcher's
results are. The dispatcher still decides WHETHER and HOW (consent, unsubscribes, suppressions)
at the moment it sends (docs/adr/0003-contact-policy.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.contact_repository import ContactRepository, QueuedSend
from services.scheduler.adapters.repository import BatchRepository, OutboxMessage
from services.scheduler.contact_settings import ShopContactPolicy, known_zone
from services.scheduler.domain.contact_policy import Waiting, at_best_hour, plan
from shared import metrics
from shared.events import (
    MESSAGE_REQUESTED,
    MESSAGE_SUPPRESSED,
    CloudEvent,
    MessageRequest,
    MessageResult,
    encode,
    make_event,
    stable_event_id,
)
from shared.topics import ENGAGEMENT_RESULTS, MESSAGE_REQUESTS, Topics

EXPIRED_REASON = "frequency_cap_expired"
ENDED_REASON = "journey_exited"  # the customer left the journey (bought, say) while it waited
SOURCE = "rebound/scheduler"
SERVICE = "scheduler"
# The shop's best hour (from all its customers' opens) moves slowly: read it at most this often.
SHOP_HOUR_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class DueSend:
    """A send step that fell due, with what the policy needs to know about it."""

    request: MessageRequest
    due_at: datetime
    priority: int = 0  # the journey's
    expires_after: timedelta | None = None
    best_hour: bool = False  # send_at: best_hour
    time_zone: str | None = None  # the customer's, from the facts
    usual_hour: int | None = None  # the customer's usual opening hour, from the facts


@dataclass
class Released:
    send: list[MessageRequest] = field(default_factory=list)
    expired: list[MessageRequest] = field(default_factory=list)
    ended: list[MessageRequest] = field(default_factory=list)
    looked: int = 0  # customers looked at: a full pass means more may be due


@dataclass
class _Decided:
    going: list[QueuedSend] = field(default_factory=list)
    counted: list[QueuedSend] = field(default_factory=list)
    expired: list[QueuedSend] = field(default_factory=list)
    ended: list[QueuedSend] = field(default_factory=list)
    wake: dict[str, datetime] = field(default_factory=dict)


class ContactGate:
    def __init__(self, policies: Mapping[str, ShopContactPolicy] | None = None) -> None:
        self._policies = dict(policies or {})
        self._shop_hours: dict[str, tuple[datetime, int | None]] = {}

    def _policy(self, shop_id: str) -> ShopContactPolicy:
        return self._policies.get(shop_id) or ShopContactPolicy(shop_id=shop_id)

    @property
    def longest_period(self) -> timedelta:
        return max((p.longest_period for p in self._policies.values()), default=timedelta(0))

    def governs(self, send: DueSend) -> bool:
        """A shop with a policy has every journey mail timed by it; elsewhere only a step that
        asks for the customer's best hour waits."""
        return self.governs_shop(send.request.shop_id, send.best_hour)

    def governs_shop(self, shop_id: str, best_hour: bool) -> bool:
        return shop_id in self._policies or best_hour

    async def hold(
        self, repo: ContactRepository, sends: Sequence[DueSend], now: datetime
    ) -> set[str]:
        """Queue what this gate governs; `release` decides when each goes. The held keys."""
        held = [s for s in sends if self.governs(s)]
        if not held:
            return set()
        unknown = {s.request.shop_id for s in held if s.best_hour and s.usual_hour is None}
        hours = await self._hours(repo, unknown, now)
        await repo.hold([self._queued(s, hours.get(s.request.shop_id)) for s in held])
        return {s.request.request_key for s in held}

    async def _hours(
        self, repo: ContactRepository, shops: set[str], now: datetime
    ) -> dict[str, int | None]:
        stale = sorted(s for s in shops if self._shop_hours.get(s, (now, None))[0] <= now)
        if stale:
            found = await repo.shop_best_hours(stale)
            for shop in stale:
                self._shop_hours[shop] = (now + SHOP_HOUR_TTL, found.get(shop))
        return {s: self._shop_hours[s][1] for s in shops}

    def _queued(self, send: DueSend, shop_hour: int | None) -> QueuedSend:
        shop = self._policy(send.request.shop_id)
        zone = send.time_zone if send.time_zone and known_zone(send.time_zone) else shop.time_zone
        expires = None if send.expires_after is None else send.due_at + send.expires_after
        due = send.due_at
        if send.best_hour:
            hour = next(
                (h for h in (send.usual_hour, shop_hour, shop.best_hour) if h is not None), None
            )
            best = at_best_hour(due, ZoneInfo(zone), hour, shop.policy().quiet)
            if expires is None or best < expires:  # a best hour past relevance: as due
                due = best
        return QueuedSend(send.request, send.priority, due, expires, zone, due)

    async def release(
        self, repo: ContactRepository, partitions: Sequence[int], now: datetime, limit: int
    ) -> Released:
        """One pass: what may go now for every customer with something due."""
        queued = await repo.due(partitions, now, limit)
        if not queued:
            return Released()
        history = await repo.history(list(queued), now - self.longest_period)
        decided = _Decided()
        for customer, sends in queued.items():
            self._decide(sends, history.get(customer, []), now, decided)
        await repo.released(decided.going, decided.counted, now)
        await repo.dropped([s.key for s in decided.expired + decided.ended])
        await repo.complete_waiting([s.key for s in decided.going + decided.expired], now)
        await repo.recheck(decided.wake)
        return Released(
            send=[_as_of_now(s) for s in decided.going],
            expired=[s.request for s in decided.expired],
            ended=[s.request for s in decided.ended],
            looked=len(queued),
        )

    def _decide(
        self, sends: list[QueuedSend], sent: list[datetime], now: datetime, out: _Decided
    ) -> None:
        """One customer: a message whose enrolment ended goes nowhere; the rest are planned."""
        out.ended += [s for s in sends if s.ended is not None]
        live = [s for s in sends if s.ended is None]
        if not live:
            return
        shop = self._policy(live[0].request.shop_id)
        counts = {s.key: shop.counts(s.request.consent_required) for s in live}
        waiting = [Waiting(s.key, s.due_at, s.priority, s.expires_at, counts[s.key]) for s in live]
        decided = plan(shop.policy(), ZoneInfo(live[0].time_zone), sent, waiting, now)
        by_key = {s.key: s for s in live}
        out.going += [by_key[k] for k in decided.send_now]
        out.counted += [by_key[k] for k in decided.send_now if counts[k]]
        out.expired += [by_key[k] for k in decided.expired]
        if decided.wake_at is not None:
            gone = set(decided.send_now) | set(decided.expired)
            out.wake |= {k: decided.wake_at for k in by_key if k not in gone}

    async def release_to_outbox(
        self,
        conn: AsyncConnection,
        topics: Topics,
        partitions: Sequence[int],
        now: datetime,
        limit: int,
    ) -> tuple[int, list[int], list[OutboxMessage]]:
        """The timer pass's step: what may go now into the outbox, in the caller's
        transaction; (customers looked at, outbox ids, their messages)."""
        released = await self.release(ContactRepository(conn), partitions, now, limit)
        messages = [request_message(topics, r, now) for r in released.send]
        for reason, requests in (
            (EXPIRED_REASON, released.expired),
            (ENDED_REASON, released.ended),
        ):
            messages += [result_message(topics, r, now, reason) for r in requests]
            if requests:
                metrics.MESSAGES_SKIPPED.labels(SERVICE, reason).inc(len(requests))
        ids = await BatchRepository(conn).add_outbox(messages, now)
        return released.looked, ids, messages

    async def next_check(
        self, conn: AsyncConnection, partitions: Sequence[int], until: datetime
    ) -> datetime | None:
        return await ContactRepository(conn).next_check(partitions, until)


def _as_of_now(send: QueuedSend) -> MessageRequest:
    """The request with the customer's consent as the facts know it now, not when it was held
    (the dispatcher checks it again at sending)."""
    if send.consent is None or send.consent == send.request.marketing_consent:
        return send.request
    return MessageRequest.model_validate(
        send.request.model_dump() | {"marketing_consent": send.consent}
    )


def request_message(topics: Topics, request: MessageRequest, now: datetime) -> OutboxMessage:
    """The same event id the runner gives it, so a request sent twice is one request."""
    event = make_event(
        type=MESSAGE_REQUESTED,
        source=SOURCE,
        id=stable_event_id("request", request.request_key),
        time=now,
        subject=request.customer_key,
        shop_id=request.shop_id,
        data=request,
    )
    return OutboxMessage(topics.name(MESSAGE_REQUESTS), request.customer_key, encode(event))


def result_message(
    topics: Topics, request: MessageRequest, now: datetime, reason: str
) -> OutboxMessage:
    event = expired_result(request, now, reason)
    return OutboxMessage(topics.name(ENGAGEMENT_RESULTS), request.customer_key, encode(event))


def expired_result(
    request: MessageRequest, now: datetime, reason: str = EXPIRED_REASON
) -> CloudEvent:
    """suppressed / frequency_cap_expired, as the dispatcher reports a suppression (the same
    event id scheme, so a result published twice is one result)."""
    result = MessageResult(
        request_key=request.request_key,
        shop_id=request.shop_id,
        customer_key=request.customer_key,
        journey_id=request.journey_id,
        step_id=request.step_id,
        status="suppressed",
        reason=reason,
        email=request.recipient.email,
        occurred_at=now,
    )
    return make_event(
        type=MESSAGE_SUPPRESSED,
        source=SOURCE,
        id=stable_event_id("result", request.request_key),
        time=now,
        subject=request.customer_key,
        shop_id=request.shop_id,
        data=result,
    )
