"""Contact limits defer instead of dropping, quiet hours move messages, priorities order them."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain.contact_policy import (
    ContactLimit,
    ContactPolicy,
    QuietHours,
    Waiting,
    at_best_hour,
    next_slot,
    plan,
)

BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
QUIET = QuietHours(time(21, 0), time(8, 0))
ONE_A_DAY = ContactPolicy(limits=(ContactLimit(1, timedelta(days=1)),), quiet=QUIET)


def _local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def test_three_mails_on_one_day_under_one_a_day_go_on_three_days_in_priority_order() -> None:
    day = _local(BERLIN, 2026, 3, 2, 9, 0)
    waiting = [
        Waiting("winback-1", day, priority=1),
        Waiting("cart-1", day + timedelta(minutes=5), priority=10),
        Waiting("cart-2", day + timedelta(minutes=10), priority=10),
    ]
    sent: list[datetime] = []
    order: list[tuple[str, datetime]] = []
    now = day + timedelta(minutes=10)
    while waiting:
        result = plan(ONE_A_DAY, BERLIN, sent, waiting, now)
        for key in result.send_now:
            order.append((key, now))
            sent.append(now)
        waiting = [w for w in waiting if w.key not in result.send_now]
        assert result.wake_at is not None or not waiting
        now = result.wake_at or now
    assert [key for key, _ in order] == ["cart-1", "cart-2", "winback-1"]
    days = [at.astimezone(BERLIN).date() for _, at in order]
    assert [(d - days[0]).days for d in days] == [0, 1, 2]
    assert all(not QUIET.contains(at.astimezone(BERLIN).time()) for _, at in order)


def test_a_deferred_message_past_its_relevance_expires_instead_of_going() -> None:
    day = _local(BERLIN, 2026, 3, 2, 9, 0)
    sent = [day]
    waiting = [Waiting("flash-sale", day, expires_at=day + timedelta(hours=12))]
    first = plan(ONE_A_DAY, BERLIN, sent, waiting, day + timedelta(minutes=1))
    assert first.send_now == () and first.held == ("flash-sale",)
    assert first.wake_at == day + timedelta(days=1)
    later = plan(ONE_A_DAY, BERLIN, sent, waiting, day + timedelta(days=1))
    assert later.expired == ("flash-sale",) and later.send_now == ()


def test_a_message_due_at_23_goes_at_8_next_morning_in_the_customers_zone() -> None:
    policy = ContactPolicy(quiet=QUIET)
    for zone in (BERLIN, TOKYO):
        due = _local(zone, 2026, 6, 10, 23, 0)
        slot = next_slot(policy, zone, [], due.astimezone(UTC)).astimezone(zone)
        assert (slot.date(), slot.time()) == (due.date() + timedelta(days=1), time(8, 0))


def test_two_in_seven_days_counts_a_rolling_week() -> None:
    policy = ContactPolicy(limits=(ContactLimit(2, timedelta(days=7)),))
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    sent = [start, start + timedelta(days=2)]
    assert next_slot(policy, BERLIN, sent, start + timedelta(days=3)) == start + timedelta(days=7)


def test_best_hour_is_the_customers_usual_opening_hour_unless_it_is_quiet() -> None:
    due = _local(BERLIN, 2026, 4, 1, 14, 30)
    assert at_best_hour(due, BERLIN, 19, QUIET) == _local(BERLIN, 2026, 4, 1, 19, 0)
    assert at_best_hour(due, BERLIN, 9, QUIET) == _local(BERLIN, 2026, 4, 2, 9, 0)
    assert at_best_hour(due, BERLIN, 23, QUIET) == due
    assert at_best_hour(due, BERLIN, None, QUIET) == due


def test_a_policy_that_can_never_be_met_is_refused() -> None:
    with pytest.raises(ValueError):
        QuietHours(time(8), time(8))
    with pytest.raises(ValueError):
        ContactLimit(0, timedelta(days=1))


def test_service_mail_the_shop_exempts_keeps_quiet_hours_but_takes_no_slot() -> None:
    day = _local(BERLIN, 2026, 3, 2, 9, 0)
    waiting = [
        Waiting("winback-1", day, priority=1),
        Waiting("cart-1", day, priority=10, counted=False),
    ]
    now_ = plan(ONE_A_DAY, BERLIN, [day - timedelta(hours=1)], waiting, day)
    assert now_.send_now == ("cart-1",) and now_.held == ("winback-1",)
    assert now_.wake_at == day + timedelta(hours=23)
    night = _local(BERLIN, 2026, 3, 2, 22, 0)
    at_night = plan(ONE_A_DAY, BERLIN, [], [Waiting("cart-2", night, counted=False)], night)
    assert at_night.send_now == ()
    assert at_night.wake_at == _local(BERLIN, 2026, 3, 3, 8, 0)
