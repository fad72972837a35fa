"""When a journey's first message to a customer would go out if they were enrolled now: the
engine run forward on the customer's facts, every wait skipped to its end (a dry run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.scheduler.domain import engine
from services.scheduler.domain.conditions import Facts
from services.scheduler.domain.journey import Journey

MAX_WAITS = 20  # a first message behind more waits than this is reported as none


@dataclass(frozen=True)
class FirstMessage:
    holdout: bool
    at: datetime | None  # None: holdout, or the journey ends without a message
    step_id: str | None


def first_message(
    journey: Journey, customer_key: str, facts_at: Callable[[datetime], Facts], now: datetime
) -> FirstMessage:
    outcome = engine.enter(journey, customer_key, facts_at(now), now)
    holdout = outcome.enrollment.holdout
    at = now
    for _ in range(MAX_WAITS):
        sent = [d for d in outcome.decisions if isinstance(d, engine.RequestMessage)]
        if sent:
            return FirstMessage(holdout, at, sent[0].step_id)
        timers = [d for d in outcome.decisions if isinstance(d, engine.ScheduleTimer)]
        if outcome.enrollment.status != "active" or not timers:
            break
        at = timers[-1].due_at
        outcome = engine.on_timer(journey, outcome.enrollment, timers[-1].step_id, facts_at(at), at)
    return FirstMessage(holdout, None, None)
