"""REBOUND_SCHEDULER_CONTACT_POLICIES as an operator writes it: read, or refused with the reason."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from pydantic import ValidationError

from services.scheduler.settings import SchedulerSettings

POLICY = (
    '[{"shop_id": "shop-1", "limits": [{"count": 2, "per": "7d"}, {"count": 1, "per": "1d"}],'
    ' "quiet_hours": {"from": "21:00", "to": "08:00"}, "time_zone": "Europe/Warsaw",'
    ' "best_hour": 19, "service_mail": "counted"}]'
)


def settings(monkeypatch: pytest.MonkeyPatch, value: str) -> SchedulerSettings:
    monkeypatch.setenv("REBOUND_SCHEDULER_CONTACT_POLICIES", value)
    return SchedulerSettings()


def test_a_shops_policy_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    [shop] = settings(monkeypatch, POLICY).contact_policies
    policy = shop.policy()
    assert [(limit.count, limit.period) for limit in policy.limits] == [
        (2, timedelta(days=7)),
        (1, timedelta(days=1)),
    ]
    assert policy.quiet is not None and (policy.quiet.start, policy.quiet.end) == (
        time(21),
        time(8),
    )
    assert (shop.time_zone, shop.best_hour, shop.longest_period) == (
        "Europe/Warsaw",
        19,
        timedelta(days=7),
    )
    assert shop.counts(consent_required=False)  # service mail counted, as the shop chose


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (POLICY.replace("Europe/Warsaw", "Europe/Atlantis"), "unknown time zone"),
        (POLICY.replace('"to": "08:00"', '"to": "21:00"'), "same time"),
        (POLICY.replace('"per": "1d"', '"per": "daily"'), "per"),
        (POLICY.replace('"best_hour": 19', '"best_hour": 24'), "best_hour"),
        (POLICY.replace("counted", "sometimes"), "service_mail"),
        (POLICY[:-1] + "," + POLICY[1:], "more than one entry"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, broken: str, reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        settings(monkeypatch, broken)
