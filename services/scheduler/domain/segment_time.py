"""When a segment's condition becomes true, and stops being true, by the passing of time alone.

Every time-dependent fact is a straight line in time: `days_since_last_order` grows by one a
day from `last_order_at`, `days_until_expected_order` shrinks towards `expected_next_order_at`,
`older_than` / `within` compare a datetime's age with a duration; the last and the previous
period's orders and spend are steps, changing when an order moves from one period to the next
(domain/period_facts.py), so a leaf on them is evaluated once per step. So each leaf of a condition
holds on intervals of time (or on none, or always), and `all` / `any` / `not` are
intersection, union and complement of interval sets. From a customer's current facts this
gives every future moment they enter or leave the segment, without evaluating anyone on a
schedule. Instants are whole microseconds (PostgreSQL's resolution); intervals are closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from services.scheduler.domain.conditions import All, Any_, Condition, Facts, Leaf, lookup
from services.scheduler.domain.period_facts import PERIOD_PATHS, at_moment, changes, orders_of
from services.scheduler.domain.segment_facts import AGE_OPS, ORDERING_OPS, days_fact
from shared.clock import parse_duration

TICK = timedelta(microseconds=1)
DAY = timedelta(days=1)
# After a firing where the engine and this timeline disagree by float rounding at the
# boundary, look again this much later rather than at the same instant.
RETRY_AFTER = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Span:
    """[start, end]; end None: from start on, forever."""

    start: datetime
    end: datetime | None = None

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or moment <= self.end)


Timeline = tuple[Span, ...]  # sorted, disjoint, not touching


@dataclass(frozen=True)
class Entry:
    """The next time a customer enters the segment (None: never, on the current facts), and
    when that stay ends (None: it does not, by time alone)."""

    at: datetime | None
    leaves_at: datetime | None = None


# --- timelines ------------------------------------------------------------------------------


def timeline(condition: Condition, facts: Facts, now: datetime) -> Timeline:
    """The moments from `now` on at which the condition holds, on these facts."""
    if isinstance(condition, Leaf):
        return _leaf(condition, facts, now)
    if isinstance(condition, All):
        out: Timeline = (Span(now),)
        for part in condition.all:
            out = intersect(out, timeline(part, facts, now))
        return out
    if isinstance(condition, Any_):
        merged: Timeline = ()
        for part in condition.any:
            merged = union(merged, timeline(part, facts, now))
        return merged
    return complement(timeline(condition.not_, facts, now), now)


def next_entry(condition: Condition, facts: Facts, now: datetime) -> Entry:
    """The next moment after `now` at which the customer enters (a stay in progress at `now`
    is not an entry: its end is waited out first)."""
    for span in timeline(condition, facts, now):
        if span.start > now:
            return Entry(span.start, span.end)
    return Entry(None)


def entered_by_change(
    condition: Condition,
    before: Facts | None,
    after: Facts,
    pending: datetime | None,
    now: datetime,
) -> bool:
    """An activity changed the facts: the customer enters when the condition holds now and did
    not on the facts before (a timer already due and not yet fired counts as not having)."""
    if not condition.holds(after, now):
        return False
    was_in = before is not None and condition.holds(before, now)
    return not was_in or (pending is not None and pending <= now)


def on_timer(condition: Condition, facts: Facts, now: datetime) -> tuple[bool, Entry]:
    """A segment timer fell due: whether the customer is in now, and when to look next."""
    holds = condition.holds(facts, now)
    following = next_entry(condition, facts, now)
    if not holds and holds_by_timeline(condition, facts, now):
        # The engine's float days and this timeline disagree at the boundary by rounding.
        return False, Entry(now + RETRY_AFTER, following.leaves_at)
    return holds, following


def holds_by_timeline(condition: Condition, facts: Facts, now: datetime) -> bool:
    spans = timeline(condition, facts, now)
    return bool(spans) and spans[0].contains(now)


def _leaf(leaf: Leaf, facts: Facts, now: datetime) -> Timeline:
    if leaf.field in PERIOD_PATHS or leaf.ref in PERIOD_PATHS:
        return _stepwise(leaf, facts, now)
    moving = days_fact(leaf.field)
    if leaf.op in AGE_OPS:
        return _age(leaf, lookup(facts, leaf.field), now)
    if moving is None or leaf.op not in ORDERING_OPS:
        return (Span(now),) if leaf.holds(facts, now) else ()
    anchor = lookup(facts, moving[0])
    days = _threshold_days(leaf, facts)
    if not isinstance(anchor, datetime) or days is None:
        return ()
    try:
        return _clip(_ordering(leaf.op, anchor, days, moving[1]), now)
    except OverflowError:  # a threshold beyond the calendar: as of now, forever the same
        return (Span(now),) if leaf.holds(facts, now) else ()


def _stepwise(leaf: Leaf, facts: Facts, now: datetime) -> Timeline:
    """A leaf on the period figures: constant between the moments an order changes period."""
    profile = facts.get("profile")
    orders = orders_of(profile) if isinstance(profile, Mapping) else None
    if orders is None or not isinstance(profile, Mapping):  # figures as published: they stay
        return (Span(now),) if leaf.holds(facts, now) else ()
    moments = [now, *changes(orders, int(profile.get("period_days") or 90), now)]
    ends: list[datetime | None] = [m - TICK for m in moments[1:]]
    return _normal(
        [
            Span(start, end)
            for start, end in zip(moments, [*ends, None], strict=True)
            if leaf.holds(at_moment(facts, start), start)
        ]
    )


def _age(leaf: Leaf, moment: Any, now: datetime) -> Timeline:
    if not isinstance(moment, datetime):
        return ()
    limit = parse_duration(str(leaf.value))
    if leaf.op == "older_than":  # now - moment > limit
        return _clip((Span(moment + limit + TICK),), now)
    return _clip((Span(moment, moment + limit),), now)  # 0 <= now - moment <= limit


def _ordering(op: str, anchor: datetime, days: Decimal, direction: int) -> Timeline:
    """days_since = (t - anchor) / 1 day (direction 1) or days_until = (anchor - t) / 1 day."""
    edge = anchor + direction * _duration(days)
    rising = (op in ("gt", "gte")) == (direction == 1)  # true from the edge on
    strict = op in ("gt", "lt")
    if rising:
        return (Span(edge + TICK if strict else edge),)
    return (Span(datetime.min.replace(tzinfo=anchor.tzinfo), edge - TICK if strict else edge),)


def _threshold_days(leaf: Leaf, facts: Facts) -> Decimal | None:
    if leaf.ref is None:
        return _number(leaf.value)
    other = _number(lookup(facts, leaf.ref))
    return None if other is None else other * Decimal(str(leaf.times))


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _duration(days: Decimal) -> timedelta:
    micros = int((days * 86_400_000_000).to_integral_value())
    return timedelta(microseconds=micros)


# --- interval algebra -----------------------------------------------------------------------


def _clip(spans: Timeline, now: datetime) -> Timeline:
    out = []
    for span in spans:
        if span.end is not None and span.end < now:
            continue
        out.append(Span(max(span.start, now), span.end))
    return tuple(out)


def intersect(a: Timeline, b: Timeline) -> Timeline:
    out: list[Span] = []
    for x in a:
        for y in b:
            start = max(x.start, y.start)
            end = _min_end(x.end, y.end)
            if end is None or start <= end:
                out.append(Span(start, end))
    return _normal(out)


def union(a: Timeline, b: Timeline) -> Timeline:
    return _normal([*a, *b])


def complement(spans: Timeline, now: datetime) -> Timeline:
    out: list[Span] = []
    cursor: datetime | None = now
    for span in spans:
        if cursor is not None and span.start > cursor:
            out.append(Span(cursor, span.start - TICK))
        cursor = None if span.end is None else span.end + TICK
    if cursor is not None:
        out.append(Span(cursor))
    return tuple(out)


def _normal(spans: list[Span]) -> Timeline:
    """Sorted, with overlapping or touching spans merged."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        if out and (out[-1].end is None or span.start <= out[-1].end + TICK):
            last = out[-1]
            end = None if last.end is None or span.end is None else max(last.end, span.end)
            out[-1] = Span(last.start, end)
        else:
            out.append(span)
    return tuple(out)


def _min_end(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
