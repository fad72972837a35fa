"""When a marketing message may go: contact limits across journeys, quiet hours, best hour.

Pure: the caller passes the customer's time zone, what was already sent to them and what
waits, and gets back what goes now, what is no longer relevant, and when to look again.
A message over a limit is never dropped: it waits for the next free slot, unless its step said
when it stops being relevant (`expires_after`). Several waiting for one slot go by priority
(the shop orders its journeys), then by when they fell due, so one customer's messages keep
their order within a priority.

Limits are rolling windows ("at most 2 in 7 days" looks at any 7 x 24 h), which also implies
the calendar reading ("1 a day" never puts two on one date). A message that is not counted
(service mail the shop exempts from its limits) still keeps quiet hours but takes no slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

# A search for the next allowed moment never looks further than this (a policy that can
# never be met, e.g. quiet hours covering the whole day, is refused when it is loaded).
HORIZON = timedelta(days=366)


@dataclass(frozen=True)
class ContactLimit:
    count: int
    period: timedelta

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= timedelta(0):
            raise ValueError("a contact limit needs count >= 1 and a positive period")


@dataclass(frozen=True)
class QuietHours:
    """Nothing is sent from `start` to `end` local time; wraps midnight when start > end."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("quiet hours from and to the same time leave no moment to send")

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class ContactPolicy:
    limits: tuple[ContactLimit, ...] = ()
    quiet: QuietHours | None = None


@dataclass(frozen=True)
class Waiting:
    """A message that fell due (at `due_at`) and waits for a slot."""

    key: str
    due_at: datetime
    priority: int = 0  # higher goes first
    expires_at: datetime | None = None
    counted: bool = True  # takes a slot of the limits (marketing mail)


@dataclass(frozen=True)
class Plan:
    send_now: tuple[str, ...]
    expired: tuple[str, ...]
    wake_at: datetime | None  # when to look again for what still waits
    held: tuple[str, ...] = field(default=())


def plan(
    policy: ContactPolicy,
    zone: ZoneInfo,
    sent: Sequence[datetime],
    waiting: Sequence[Waiting],
    now: datetime,
) -> Plan:
    """What goes now, what expired, and when the next slot opens for the rest."""
    expired = tuple(w.key for w in waiting if w.expires_at is not None and w.expires_at <= now)
    queue = sorted(
        (w for w in waiting if w.key not in expired and w.due_at <= now),
        key=lambda w: (-w.priority, w.due_at, w.key),
    )
    history = list(sent)
    quiet_now = _leave_quiet_hours(policy.quiet, zone, now) != now
    going: list[str] = []
    held: list[Waiting] = []
    for waiting_one in queue:
        if quiet_now or (waiting_one.counted and not _allowed(policy, zone, history, now)):
            held.append(waiting_one)
            continue
        going.append(waiting_one.key)
        if waiting_one.counted:
            history.append(now)
    later = [w.due_at for w in waiting if w.due_at > now and w.key not in expired]
    kinds = {w.counted: w for w in held}  # one held message of each kind says when
    wake = later + [_slot_for(w, policy, zone, history, now) for w in kinds.values()]
    return Plan(tuple(going), expired, min(wake, default=None), tuple(w.key for w in held))


def _slot_for(
    waiting: Waiting, policy: ContactPolicy, zone: ZoneInfo, sent: Sequence[datetime], now: datetime
) -> datetime:
    if waiting.counted:
        return next_slot(policy, zone, sent, now)
    return _leave_quiet_hours(policy.quiet, zone, now)


def next_slot(
    policy: ContactPolicy, zone: ZoneInfo, sent: Sequence[datetime], after: datetime
) -> datetime:
    """The first moment at or after `after` outside quiet hours and within every limit."""
    candidate = after
    deadline = after + HORIZON
    while candidate < deadline:
        moved = _leave_quiet_hours(policy.quiet, zone, candidate)
        moved = _wait_for_limits(policy.limits, sent, moved)
        if moved == candidate:
            return candidate
        candidate = moved
    raise ValueError("no moment within a year satisfies this contact policy")


def at_best_hour(
    due_at: datetime, zone: ZoneInfo, best_hour: int | None, quiet: QuietHours | None
) -> datetime:
    """`send_at: best_hour`: the first time at or after `due_at` at the customer's usual
    opening hour (local), unless that hour is quiet; without a known hour, when it fell due."""
    if best_hour is None:
        return due_at
    local = due_at.astimezone(zone)
    target = local.replace(hour=best_hour, minute=0, second=0, microsecond=0)
    if target < local:
        target = _add_local_days(target, 1)
    if quiet is not None and quiet.contains(target.timetz().replace(tzinfo=None)):
        return due_at
    return target.astimezone(due_at.tzinfo)


def _allowed(policy: ContactPolicy, zone: ZoneInfo, sent: Sequence[datetime], at: datetime) -> bool:
    return next_slot(policy, zone, sent, at) == at


def _leave_quiet_hours(quiet: QuietHours | None, zone: ZoneInfo, at: datetime) -> datetime:
    if quiet is None:
        return at
    local = at.astimezone(zone)
    if not quiet.contains(local.time()):
        return at
    end = local.replace(
        hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0, fold=0
    )
    if end <= local:
        end = _add_local_days(end, 1)
    return end.astimezone(at.tzinfo)


def _wait_for_limits(
    limits: Sequence[ContactLimit], sent: Sequence[datetime], at: datetime
) -> datetime:
    """Later than `at` when a limit is full: when its oldest send in the window ages out."""
    for limit in limits:
        window = sorted(s for s in sent if at - limit.period < s <= at)
        if len(window) >= limit.count:
            return window[len(window) - limit.count] + limit.period
    return at


def _add_local_days(local: datetime, days: int) -> datetime:
    """The same wall-clock time `days` later (across a DST change, still that hour)."""
    naive = local.replace(tzinfo=None) + timedelta(days=days)
    zone = local.tzinfo
    assert zone is not None
    return naive.replace(tzinfo=zone)
