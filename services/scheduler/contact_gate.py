"""The contact policy across every journey: decides WHEN a marketing message may go.

A send step that falls due is held here (a row in scheduler.contact_queue) instead of going
straight to message.requests; a pass over the customers with something due asks the pure
`contact_policy.plan` what goes now, what is no longer relevant and when to look again. What
goes is returned for the caller to write to its outbox in the same transaction; what expired
is returned as `suppressed / frequency_cap_expired` results. The dispatcher still decides
WHETHER and HOW (consent, unsubscribes, suppressions) at the moment it sends
(docs/adr/0003-contact-policy.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.scheduler.adapters.contact_repository import ContactRepository, QueuedSend
from services.scheduler.contact_settings import ShopContactPolicy
from services.scheduler.domain.contact_policy import Waiting, at_best_hour, plan
from shared.events import (
    MESSAGE_SUPPRESSED,
    CloudEvent,
    MessageRequest,
    MessageResult,
    make_event,
    stable_event_id,
)

EXPIRED_REASON = "frequency_cap_expired"
SOURCE = "rebound/scheduler"


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
    shop_hour: int | None = None  # the shop's best hour from all opens


@dataclass
class Released:
    send: list[MessageRequest] = field(default_factory=list)
    expired: list[MessageRequest] = field(default_factory=list)


class ContactGate:
    def __init__(self, policies: Mapping[str, ShopContactPolicy]) -> None:
        self._policies = policies

    def _policy(self, shop_id: str) -> ShopContactPolicy:
        return self._policies.get(shop_id) or ShopContactPolicy(shop_id=shop_id)

    def governs(self, request: MessageRequest) -> bool:
        """Marketing mail (consent required) is counted and held; other mail goes as due."""
        return request.consent_required

    async def hold(self, repo: ContactRepository, sends: Sequence[DueSend]) -> None:
        """Queue what fell due; `release` decides when each goes."""
        await repo.hold([self._queued(s) for s in sends])

    def _queued(self, send: DueSend) -> QueuedSend:
        shop = self._policy(send.request.shop_id)
        zone = send.time_zone or shop.time_zone
        due = send.due_at
        if send.best_hour:
            hour = send.usual_hour if send.usual_hour is not None else send.shop_hour
            due = at_best_hour(due, ZoneInfo(zone), hour, shop.policy().quiet)
        expires = None if send.expires_after is None else send.due_at + send.expires_after
        return QueuedSend(send.request, send.priority, due, expires, zone, due)

    async def release(self, repo: ContactRepository, now: datetime, limit: int) -> Released:
        """One pass: what may go now for every customer with something due."""
        queued = await repo.due(now, limit)
        if not queued:
            return Released()
        longest = max(
            (self._policy(s[0].request.shop_id).longest_period for s in queued.values()),
            default=timedelta(0),
        )
        history = await repo.history(list(queued), now - longest)
        out = Released()
        going: list[QueuedSend] = []
        expired: list[QueuedSend] = []
        wake: dict[str, datetime] = {}
        for customer, sends in queued.items():
            shop = self._policy(sends[0].request.shop_id)
            waiting = [Waiting(s.key, s.due_at, s.priority, s.expires_at) for s in sends]
            decided = plan(
                shop.policy(), ZoneInfo(sends[0].time_zone), history.get(customer, []), waiting, now
            )
            by_key = {s.key: s for s in sends}
            going += [by_key[k] for k in decided.send_now]
            expired += [by_key[k] for k in decided.expired]
            if decided.wake_at is not None:
                wake[customer] = decided.wake_at
        await repo.released(going, now)
        await repo.dropped([s.key for s in expired])
        await repo.recheck(wake)
        out.send = [s.request for s in going]
        out.expired = [s.request for s in expired]
        return out


def expired_result(request: MessageRequest, now: datetime) -> CloudEvent:
    """suppressed / frequency_cap_expired, as the dispatcher would report a suppression."""
    result = MessageResult(
        request_key=request.request_key,
        shop_id=request.shop_id,
        customer_key=request.customer_key,
        journey_id=request.journey_id,
        step_id=request.step_id,
        status="suppressed",
        reason=EXPIRED_REASON,
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
