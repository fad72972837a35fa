"""The drill's lateness breakdown: stages add up to the lateness; the right incident is blamed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import drill_lateness as dl
import pytest

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trace(**moments: float | None) -> dl.Trace:
    """A reminder due 5 s after its cart, with the given moments (seconds after the cart)."""
    given: dict[str, float | None] = {
        "acknowledged": 0.1,
        "ingested": 0.3,
        "enrolled": 0.5,
        "fired": 5.1,
        "claimed": 5.2,
        "mailed": 5.5,
    }
    given.update(moments)

    def moment(name: str) -> datetime | None:
        seconds = given[name]
        return None if seconds is None else at(seconds)

    return dl.Trace(
        "a@example.com",
        due=at(5),
        created=at(0),
        acknowledged=moment("acknowledged"),
        ingested=moment("ingested"),
        enrolled=moment("enrolled"),
        fired=moment("fired"),
        claimed=moment("claimed"),
        mailed=at(given["mailed"] or 0.0),
    )


def test_the_stages_add_up_to_the_lateness() -> None:
    late = trace(ingested=12.0, enrolled=13.0, fired=20.0, claimed=21.0, mailed=23.0)

    stages = late.stages()

    assert stages == {
        "webhook": 0.0,
        "ingest": 7.0,  # from the due moment on
        "enrol": 1.0,
        "timer": 7.0,
        "request": 1.0,
        "send": 2.0,
    }
    assert sum(stages.values()) == pytest.approx(late.lateness_s) == 18.0


def test_a_missing_moment_counts_in_the_next_stage() -> None:
    stages = trace(ingested=None, enrolled=9.0, fired=10.0, claimed=10.5, mailed=11.0).stages()

    assert stages["ingest"] == 0.0
    assert stages["enrol"] == 4.0


def test_the_incident_that_broke_the_largest_stage_before_it_fell_late_is_blamed() -> None:
    late = trace(fired=25.0, claimed=25.5, mailed=26.0)  # the timer stage: 20 s from 5 s on
    incidents = [
        dl.Incident(at(-40), "scheduler", "too early to matter"),
        dl.Incident(at(2), "scheduler", "kill -9 scheduler-1"),
        dl.Incident(at(3), "ingest", "kill -9 ingest-2"),  # the timer does not wait on ingest
        dl.Incident(at(20), "postgres", "PostgreSQL down"),  # came while it already waited
    ]

    assert dl.blame(late, incidents) == ("timer", "scheduler")
    assert dl.blame(late, incidents[2:]) == ("timer", "postgres")
    assert dl.blame(late, incidents[:1]) == ("timer", "none")
