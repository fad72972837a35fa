"""Entry times computed from the facts agree with the condition evaluated at those moments."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from services.scheduler.domain.conditions import Condition
from services.scheduler.domain.facts import build_facts
from services.scheduler.domain.journey import parse_journey
from services.scheduler.domain.segment_facts import SegmentError, check_segment
from services.scheduler.domain.segment_time import (
    Entry,
    entered_by_change,
    holds_by_timeline,
    next_entry,
    on_timer,
)
from shared.events import CategoryFacts, Profile

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
conditions: TypeAdapter[Condition] = TypeAdapter(Condition)


def cond(data: Any) -> Condition:
    return conditions.validate_python(data)


def facts(now: datetime = NOW, **profile: Any) -> dict[str, Any]:
    return build_facts("t", now, Profile(key="k", shop_id="s", email=None, **profile), None, now)


INACTIVE_90 = cond({"field": "profile.days_since_last_order", "op": "gte", "value": 90})
WIN_BACK = cond(
    {
        "all": [
            {"field": "profile.days_since_last_order", "op": "gte", "value": 90},
            {"field": "profile.last_order_at", "op": "within", "value": "300d"},
        ]
    }
)


def test_ninety_days_since_the_last_order_is_entered_at_last_order_plus_ninety_days() -> None:
    last = NOW - 20 * DAY
    entry = next_entry(INACTIVE_90, facts(last_order_at=last), NOW)
    assert entry == Entry(last + 90 * DAY, None)
    assert INACTIVE_90.holds(facts(entry.at, last_order_at=last), entry.at)  # type: ignore[arg-type]


def test_a_bounded_window_says_when_the_stay_ends_and_is_never_entered_after_it() -> None:
    last = NOW - 20 * DAY
    assert next_entry(WIN_BACK, facts(last_order_at=last), NOW) == Entry(
        last + 90 * DAY, last + 300 * DAY
    )
    after = last + 301 * DAY
    assert next_entry(WIN_BACK, facts(after, last_order_at=last), after) == Entry(None)


def test_a_stay_in_progress_is_no_entry() -> None:
    last = NOW - 100 * DAY
    assert holds_by_timeline(WIN_BACK, facts(last_order_at=last), NOW)
    assert next_entry(WIN_BACK, facts(last_order_at=last), NOW) == Entry(None)
    # without an upper bound a stay never ends, so there is no next entry either
    assert next_entry(INACTIVE_90, facts(last_order_at=last), NOW) == Entry(None)


def test_a_new_order_moves_the_entry() -> None:
    old = next_entry(INACTIVE_90, facts(last_order_at=NOW - 80 * DAY), NOW).at
    new = next_entry(INACTIVE_90, facts(last_order_at=NOW), NOW).at
    assert (old, new) == (NOW + 10 * DAY, NOW + 90 * DAY)


def test_conditions_time_cannot_change_have_no_timer() -> None:
    repeat = cond({"field": "profile.orders_count", "op": "gte", "value": 2})
    assert next_entry(repeat, facts(orders_count=1), NOW) == Entry(None)
    never_ordered = facts()  # no last order: days since it never grows
    assert next_entry(INACTIVE_90, never_ordered, NOW) == Entry(None)


def test_strict_comparisons_enter_just_after_the_threshold() -> None:
    last = NOW - DAY
    older = cond({"field": "profile.last_order_at", "op": "older_than", "value": "30d"})
    at = next_entry(older, facts(last_order_at=last), NOW).at
    assert at == last + 30 * DAY + timedelta(microseconds=1)
    assert not older.holds(facts(last_order_at=last), last + 30 * DAY)
    assert at is not None and older.holds(facts(last_order_at=last), at)


def test_the_customers_own_rhythm_and_the_expected_order() -> None:
    rhythm = cond(
        {
            "field": "profile.days_since_last_order",
            "op": "gte",
            "ref": "profile.average_days_between_orders",
            "times": 0.9,
        }
    )
    last = NOW - DAY
    assert next_entry(
        rhythm, facts(last_order_at=last, average_days_between_orders=50), NOW
    ).at == (last + 45 * DAY)
    due_soon = cond({"field": "profile.days_until_expected_order", "op": "lte", "value": 5})
    expected = NOW + 30 * DAY
    assert (
        next_entry(due_soon, facts(expected_next_order_at=expected), NOW).at == expected - 5 * DAY
    )


def test_a_category_has_its_own_clock() -> None:
    cosmetics = cond(
        {"field": "profile.categories.cosmetics.days_since_last_order", "op": "gte", "value": 45}
    )
    last = NOW - 10 * DAY
    category = CategoryFacts(category="cosmetics", orders=2, spent=Decimal(30), last_order_at=last)
    assert next_entry(cosmetics, facts(categories=[category]), NOW).at == last + 45 * DAY


def test_not_turns_a_window_into_its_outside() -> None:
    registered = NOW - 360 * DAY
    not_this_year = cond(
        {"not": {"field": "profile.registered_at", "op": "within", "value": "365d"}}
    )
    entry = next_entry(not_this_year, facts(registered_at=registered), NOW)
    assert entry.at == registered + 365 * DAY + timedelta(microseconds=1)


FELL_BY_HALF = cond(  # the shipped win-back-drop.yaml's segment
    {
        "all": [
            {"field": "profile.orders_previous_period", "op": "gte", "value": 1},
            {
                "field": "profile.spent_last_period",
                "op": "lte",
                "ref": "profile.spent_previous_period",
                "times": 0.5,
            },
        ]
    }
)


def orders(*placed: tuple[datetime, int]) -> list[dict[str, Any]]:
    return [{"at": at, "total": Decimal(total)} for at, total in placed]


def test_purchases_fall_by_half_when_an_order_slides_into_the_previous_period() -> None:
    """100 spent 120 days ago, 100 spent 20 days ago (90-day periods): no drop now. On day 60
    the old order leaves both periods (nothing to fall from); on day 70 the recent one moves
    into the previous period with nothing after it: fell by half, until it leaves on day 160."""
    recent = orders((NOW - 120 * DAY, 100), (NOW - 20 * DAY, 100))
    now_facts = facts(recent_orders=recent, spent_last_period=Decimal(100))
    assert now_facts["profile"]["spent_previous_period"] == Decimal(100)  # as of now
    entry = next_entry(FELL_BY_HALF, now_facts, NOW)
    assert entry == Entry(NOW + 70 * DAY, NOW + 160 * DAY - timedelta(microseconds=1))
    assert entry.at is not None
    assert not FELL_BY_HALF.holds(facts(entry.at - MICRO, recent_orders=recent), entry.at - MICRO)
    assert FELL_BY_HALF.holds(facts(entry.at, recent_orders=recent), entry.at)


def test_period_figures_without_the_orders_stay_as_published() -> None:
    published = facts(orders_previous_period=1, spent_previous_period=Decimal(80))
    assert next_entry(FELL_BY_HALF, published, NOW) == Entry(None)
    assert holds_by_timeline(FELL_BY_HALF, published, NOW)


MICRO = timedelta(microseconds=1)


def test_an_activity_enters_only_when_it_makes_the_condition_true() -> None:
    stage = cond({"field": "profile.stage", "op": "eq", "value": "inactive"})
    before, after = facts(stage="falling_asleep"), facts(stage="inactive")
    assert entered_by_change(stage, before, after, None, NOW)
    assert not entered_by_change(stage, after, after, None, NOW)  # already in: no entry
    assert entered_by_change(stage, after, after, NOW - DAY, NOW)  # a missed timer entry


def test_a_timer_that_meets_the_engine_one_tick_early_looks_again_soon() -> None:
    last = NOW - 90 * DAY
    holds, following = on_timer(INACTIVE_90, facts(last_order_at=last), NOW)
    assert holds and following == Entry(None)


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ({"field": "profile.days_since_last_order", "op": "eq", "value": 90}, "changes with time"),
        ({"field": "profile.last_order_at", "op": "gt", "value": "2024-01-01"}, "time fact"),
        ({"field": "profile.orders_count", "op": "older_than", "value": "3d"}, "number fact"),
        ({"field": "profile.high_value", "op": "eq", "value": "yes"}, "not true or false"),
        ({"field": "event.kind", "op": "eq", "value": "x"}, "about the customer"),
        ({"field": "profile.avg_days", "op": "gt", "value": 1}, "profile.avg_days is not a fact"),
        (
            {
                "field": "profile.orders_count",
                "op": "gt",
                "ref": "profile.days_since_registration",
            },
            "cannot be the reference",
        ),
        ({"field": "profile.days_since_last_order", "op": "gt", "value": "soon"}, "not a number"),
        ({"field": "profile.categories.tea", "op": "exists"}, "categories.<name>"),
        ({"field": "profile.opens_90d", "op": "gte", "value": 1}, "cannot compute"),
        (
            {
                "field": "profile.days_since_last_order",
                "op": "gte",
                "ref": "profile.orders_last_period",
            },
            "period figure cannot bound a time fact",
        ),
    ],
)
def test_segments_whose_entry_cannot_be_computed_are_refused_naming_the_fact(
    segment: dict[str, Any], message: str
) -> None:
    with pytest.raises(SegmentError, match=message):
        check_segment(cond(segment))
    with pytest.raises(ValidationError, match=message):
        parse_journey(
            "id: j\nversion: 1\nname: J\nsteps: [{id: a, end: true}]\n"
            f"trigger: {{segment: {segment!r}}}".replace("'", '"')
        )


LEAVES: list[dict[str, Any]] = [
    {"field": "profile.days_since_last_order", "op": "gte", "value": 30},
    {"field": "profile.days_since_last_order", "op": "lt", "value": 90},
    {"field": "profile.days_since_registration", "op": "gt", "value": 365},
    {"field": "profile.last_order_at", "op": "within", "value": "200d"},
    {"field": "profile.registered_at", "op": "older_than", "value": "100d"},
    {"field": "profile.days_until_expected_order", "op": "lte", "value": 3},
    {"field": "profile.orders_count", "op": "gte", "value": 2},
    {"field": "profile.orders_previous_period", "op": "gte", "value": 1},
    {"field": "profile.orders_last_period", "op": "eq", "value": 0},
    {
        "field": "profile.spent_last_period",
        "op": "lte",
        "ref": "profile.spent_previous_period",
        "times": 0.5,
    },
]


def random_condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth > 2 or rng.random() < 0.4:
        return dict(rng.choice(LEAVES))
    kind = rng.choice(["all", "any", "not"])
    if kind == "not":
        return {"not": random_condition(rng, depth + 1)}
    return {kind: [random_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


def random_order(rng: random.Random) -> tuple[datetime, int]:
    return NOW - rng.randint(-20, 200) * DAY - rng.randint(0, 23) * HOUR, rng.randint(1, 99)


def test_the_timeline_agrees_with_the_condition_at_every_hour_of_a_year() -> None:
    rng = random.Random(7)
    for _ in range(60):
        condition = cond(random_condition(rng))
        profile = {
            "last_order_at": NOW - rng.randint(0, 400) * DAY,
            "registered_at": NOW - rng.randint(0, 800) * DAY,
            "expected_next_order_at": NOW + rng.randint(-30, 60) * DAY,
            "orders_count": rng.randint(1, 3),
            "recent_orders": orders(*sorted(random_order(rng) for _ in range(rng.randint(0, 4)))),
        }
        at = NOW
        entries = []
        while True:
            entry = next_entry(condition, facts(at, **profile), at)
            if entry.at is None:
                break
            entries.append(entry.at)
            at = entry.at
        moments = [NOW + timedelta(hours=h * 7) for h in range(0, 1300)]
        truth = [condition.holds(facts(m, **profile), m) for m in moments]
        starts = {
            m
            for prev, m, now in zip([True, *truth], moments, truth, strict=False)
            if now and not prev
        }
        # every entry seen on the hourly grid is predicted within the preceding hours
        for seen in starts:
            assert any(seen - timedelta(hours=7) < e <= seen for e in entries), (condition, seen)
