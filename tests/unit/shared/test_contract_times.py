"""Every time on a topic is timezone-aware once read, so comparing two can never raise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared import events as ev


def _activity(occurred_at: str) -> ev.Activity:
    return ev.Activity.model_validate(
        {
            "kind": ev.CART_UPDATED,
            "source_event_id": "e1",
            "occurred_at": occurred_at,
            "profile": {"key": "s:c:1", "shop_id": "s", "email": None},
        }
    )


def test_a_time_without_offset_is_read_as_utc() -> None:
    activity = _activity("2024-10-01T10:00:00")
    assert activity.occurred_at == datetime(2024, 10, 1, 10, tzinfo=UTC)
    assert activity.occurred_at < datetime(2024, 10, 2, tzinfo=UTC)  # no TypeError


def test_a_time_with_an_offset_keeps_it() -> None:
    activity = _activity("2024-10-01T12:00:00+02:00")
    assert activity.occurred_at.utcoffset() == timedelta(hours=2)
    assert activity.occurred_at == datetime(2024, 10, 1, 10, tzinfo=UTC)


def test_the_envelope_time_is_aware_too() -> None:
    event = ev.decode(
        b'{"specversion": "1.0", "id": "1", "source": "t", "type": "x",'
        b' "time": "2024-10-01T10:00:00", "data": {}}'
    )
    assert event.time.tzinfo is not None
    assert event.time == datetime(2024, 10, 1, 10, tzinfo=UTC)
