"""Journey execution as a pure function: (journey, enrolment, what happened, now) -> decisions.

Deterministic and free of I/O, so a 60-day sequence is tested by handing it times. The
adapters turn decisions into timer rows and message requests in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from services.scheduler.domain.conditions import Facts, lookup
from services.scheduler.domain.journey import EventTrigger, Journey, Send, Step, Variant
from shared.clock import parse_duration
from shared.events import EMAIL_OPENED

UNSUBSCRIBED = "unsubscribed"
MAX_STEPS_PER_ADVANCE = 100  # a goto loop without a wait is a definition error, not a hang
# What a definition the format let through can still raise on some customer's facts (a `ref`
# to a fact that is no number, a loop stored before loops were refused): the enrolment ends
# with the reason instead of its batch failing again and again on the partition.
DEFINITION_ERRORS = (ValueError, ArithmeticError, LookupError, TypeError)
EXIT_REASON_MAX_CHARS = 500

# failed: a timer of this enrolment could not be fired (exit_reason says why)
Status = Literal["active", "exited", "completed", "failed"]
# The declared A/B winners of the enrolment's journey version: step id -> variant id. Read by
# the runner from the store and handed in as data; only `send_winner` steps follow them.
Winners = Mapping[str, str]
NO_WINNERS: Winners = MappingProxyType({})


@dataclass(frozen=True)
class Enrollment:
    journey_id: str
    journey_version: int
    customer_key: str
    entered_at: datetime
    step_index: int = 0
    status: Status = "active"
    holdout: bool = False
    exit_reason: str | None = None
    id: int | None = None


def changed(enrollment: Enrollment, **changes: Any) -> Enrollment:
    """`dataclasses.replace(enrollment, **changes)` at a fifth of its cost (several times per
    timer): the fields are copied as they are, as replace would pass them to __init__."""
    unknown = changes.keys() - enrollment.__dict__.keys()
    if unknown:
        raise TypeError(f"Enrollment has no field {sorted(unknown)[0]!r}")
    copy = object.__new__(type(enrollment))
    copy.__dict__.update(enrollment.__dict__, **changes)
    return copy


@dataclass(frozen=True)
class ScheduleTimer:
    step_id: str
    due_at: datetime


@dataclass(frozen=True)
class CancelTimer:
    pass


@dataclass(frozen=True)
class RequestMessage:
    step_id: str
    send: Send
    variant: str | None = None


@dataclass(frozen=True)
class PublishDecision:
    step_id: str
    decision: str


Decision = ScheduleTimer | CancelTimer | RequestMessage | PublishDecision


@dataclass(frozen=True)
class Outcome:
    enrollment: Enrollment
    decisions: list[Decision] = field(default_factory=list)


def should_enter(journey: Journey, kind: str, facts: Facts, now: datetime) -> bool:
    trigger = journey.trigger
    if not journey.active or not isinstance(trigger, EventTrigger) or trigger.event != kind:
        return False
    if trigger.max_age is not None:
        occurred = lookup(facts, trigger.max_age_from)
        if isinstance(occurred, datetime) and not _within(occurred, trigger.max_age, now):
            return False
    return trigger.if_ is None or trigger.if_.holds(facts, now)


def enter(
    journey: Journey,
    customer_key: str,
    facts: Facts,
    now: datetime,
    winners: Winners = NO_WINNERS,
) -> Outcome:
    holdout = _bucket(customer_key, journey.id, "holdout") < journey.limits.holdout_percent
    enrollment = Enrollment(journey.id, journey.version, customer_key, now, holdout=holdout)
    return advance(journey, enrollment, facts, now, winners)


def on_timer(
    journey: Journey,
    enrollment: Enrollment,
    step_id: str,
    facts: Facts,
    now: datetime,
    winners: Winners = NO_WINNERS,
) -> Outcome:
    """A wait ended. A timer for a step the enrolment has left is stale and does nothing."""
    if enrollment.status != "active" or _current(journey, enrollment).id != step_id:
        return Outcome(enrollment)
    following = changed(enrollment, step_index=enrollment.step_index + 1)
    return advance(journey, following, facts, now, winners)


def on_activity(
    journey: Journey,
    enrollment: Enrollment,
    kind: str,
    facts: Facts,
    now: datetime,
    winners: Winners = NO_WINNERS,
) -> Outcome:
    """Unsubscribed leaves every marketing journey; then the exit rules; then a wait that
    restarts on this activity restarts, and one that waits for this engagement ends now.

    `facts` are scoped to this enrolment (facts.for_enrollment): `last_message` is its own.
    """
    try:
        return _on_activity(journey, enrollment, kind, facts, now, winners)
    except DEFINITION_ERRORS as exc:
        return _failed(enrollment, exc)


def _on_activity(
    journey: Journey,
    enrollment: Enrollment,
    kind: str,
    facts: Facts,
    now: datetime,
    winners: Winners,
) -> Outcome:
    if enrollment.status != "active":
        return Outcome(enrollment)
    if journey.consent == "marketing" and _unsubscribed(facts):
        return _exit(enrollment, UNSUBSCRIBED)
    for rule in journey.exit:
        if rule.event == kind and (rule.if_ is None or rule.if_.holds(facts, now)):
            return _exit(enrollment, rule.reason)
    step = _current(journey, enrollment)
    if step.wait is not None and kind in step.wait.restart_on:
        return Outcome(enrollment, [ScheduleTimer(step.id, _due(step, facts, now))])
    if step.wait is not None and kind in step.wait.until and _engaged(kind, facts):
        following = changed(enrollment, step_index=enrollment.step_index + 1)
        moved_on = advance(journey, following, facts, now, winners)
        return Outcome(moved_on.enrollment, [CancelTimer(), *moved_on.decisions])
    return Outcome(enrollment)


def _exit(enrollment: Enrollment, reason: str) -> Outcome:
    return Outcome(changed(enrollment, status="exited", exit_reason=reason), [CancelTimer()])


def _unsubscribed(facts: Facts) -> bool:
    return bool(lookup(facts, "profile.marketing_consent") == "unsubscribed")


def _engaged(kind: str, facts: Facts) -> bool:
    """The event is about this enrolment's last message, and that message now shows it
    (a machine open is an open event too, but leaves `opened` false)."""
    about = lookup(facts, "event.request_key")
    if about is None or about != lookup(facts, "last_message.request_key"):
        return False
    shown = "last_message.opened" if kind == EMAIL_OPENED else "last_message.clicked"
    return lookup(facts, shown) is True


def advance(
    journey: Journey,
    enrollment: Enrollment,
    facts: Facts,
    now: datetime,
    winners: Winners = NO_WINNERS,
) -> Outcome:
    """Run steps from the current one until a wait (timer scheduled) or the end."""
    try:
        return _advance(journey, enrollment, facts, now, winners)
    except DEFINITION_ERRORS as exc:
        return _failed(enrollment, exc)


def _failed(enrollment: Enrollment, exc: Exception) -> Outcome:
    reason = f"definition error: {exc}"[:EXIT_REASON_MAX_CHARS]
    return Outcome(changed(enrollment, status="failed", exit_reason=reason), [CancelTimer()])


def _advance(
    journey: Journey, enrollment: Enrollment, facts: Facts, now: datetime, winners: Winners
) -> Outcome:
    decisions: list[Decision] = []
    for _ in range(MAX_STEPS_PER_ADVANCE):
        if enrollment.step_index >= len(journey.steps):
            return Outcome(changed(enrollment, status="completed"), decisions)
        step = journey.steps[enrollment.step_index]
        if step.wait is not None:
            decisions.append(ScheduleTimer(step.id, _due(step, facts, now)))
            return Outcome(enrollment, decisions)
        if step.end:
            return Outcome(changed(enrollment, status="completed"), decisions)
        decisions.extend(_act(journey, enrollment, step, winners))
        enrollment = changed(
            enrollment, step_index=_next_index(journey, step, facts, now, enrollment.step_index)
        )
    raise ValueError(
        f"journey {journey.id} loops without a wait at step index {enrollment.step_index}"
    )


def _act(journey: Journey, enrollment: Enrollment, step: Step, winners: Winners) -> list[Decision]:
    if step.send is not None and not enrollment.holdout:
        declared = winners.get(step.id) if step.send.send_winner else None
        send, variant = _pick_variant(
            step.send, enrollment.customer_key, journey.id, step.id, declared
        )
        return [RequestMessage(step.id, send, variant)]
    if step.publish is not None:
        return [PublishDecision(step.id, step.publish)]
    return []


def _next_index(journey: Journey, step: Step, facts: Facts, now: datetime, index: int) -> int:
    if step.branch is not None:
        target = next((b.goto for b in step.branch if b.if_.holds(facts, now)), step.else_)
        return journey.index_of(target) if target else index + 1
    return journey.index_of(step.goto) if step.goto else index + 1


def _current(journey: Journey, enrollment: Enrollment) -> Step:
    return journey.steps[min(enrollment.step_index, len(journey.steps) - 1)]


def _due(step: Step, facts: Facts, now: datetime) -> datetime:
    assert step.wait is not None
    base = lookup(facts, step.wait.from_) if step.wait.from_ else now
    start = base if isinstance(base, datetime) else now
    return start + step.wait.delay


def _within(occurred: datetime, max_age: str, now: datetime) -> bool:
    return now - occurred <= parse_duration(max_age)


def _pick_variant(
    send: Send, customer_key: str, journey_id: str, step_id: str, declared: str | None = None
) -> tuple[Send, str | None]:
    """The declared winner when there is one; else the A/B split, stable per customer, so a
    redelivery or restart picks the same variant."""
    winner = next((v for v in send.variants if v.id == declared), None)
    if winner is not None:
        return _with_variant(send, winner), winner.id
    weighted = [v for v in send.variants if v.weight > 0]
    if not weighted:
        return send, None
    point = _bucket(customer_key, journey_id, step_id) / 100 * sum(v.weight for v in weighted)
    for variant in weighted:
        point -= variant.weight
        if point < 0:
            break
    return _with_variant(send, variant), variant.id


def _with_variant(send: Send, variant: Variant) -> Send:
    overrides = {
        k: v
        for k, v in (
            ("subject", variant.subject),
            ("template", variant.template),
            ("offer", variant.offer),
        )
        if v is not None
    }
    return send.model_copy(update=overrides)


def _bucket(*parts: str) -> float:
    """A stable number in [0, 100) for this customer and purpose."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100
