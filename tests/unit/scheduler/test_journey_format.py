"""The journey format rejects what cannot run and can express every scenario shops ask for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.scheduler.domain.conditions import Leaf
from services.scheduler.domain.journey import parse_journey

JOURNEYS = Path(__file__).parents[3] / "services" / "scheduler" / "journeys"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


DEMO = JOURNEYS.parents[2] / "deploy" / "local" / "demo-journeys"


@pytest.mark.parametrize(
    "path",
    sorted([*JOURNEYS.glob("**/*.yaml"), *DEMO.glob("*.yaml")]),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_every_shipped_definition_is_valid(path: Path) -> None:
    assert parse_journey(path.read_text()).steps


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("steps: [{id: a, wait: {for: 3h}, send: {template: t, subject: s}}]", "exactly one"),
        ("steps: [{id: a, goto: nowhere, end: true}]", "unknown step"),
        ("steps: [{id: a, wait: {for: soon}}]", "String should match pattern"),
        ("steps: [{id: a, end: true}, {id: a, end: true}]", "unique"),
        (
            "steps: [{id: a, branch: [{if: {field: wallet.size, op: gt, value: 1}, goto: a}]}]",
            "facts start with",
        ),
        ("steps: [{id: a, send: {template: t, subject: s, send_at: noon}}]", "send_at"),
        ("steps: [{id: a, send: {template: t, subject: s, expires_after: 2 days}}]", "pattern"),
        ("steps: [{id: a, send: {template: t, subject: s, send_time: 9}}]", "Extra inputs"),
        ("priority: -1\nsteps: [{id: a, end: true}]", "greater than or equal"),
        (
            "steps: [{id: a, send: {template: t, subject: s, offer: {kind: discount_code}}}]",
            "needs valid_for",
        ),
        (
            "steps: [{id: a, send: {template: t, subject: s, "
            "offer: {kind: discount_code, value: lots, valid_for: 7d}}}]",
            "pattern",
        ),
    ],
)
def test_broken_definitions_say_what_is_wrong(broken: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_journey(f"id: j\nversion: 1\nname: J\ntrigger: {{event: x}}\n{broken}\n")


def test_every_scenario_ships_off_except_the_abandoned_cart() -> None:
    shipped = {p.stem: parse_journey(p.read_text()) for p in JOURNEYS.glob("*.yaml")}
    assert {
        "abandoned-cart",
        "win-back",
        "win-back-personal-rhythm",
        "rhythm-keep-warm",
        "win-back-drop",
        "win-back-category",
        "registered-never-bought",
        "anniversary",
        "since-last-purchase-60-days",
        "since-last-purchase-6-months",
        "since-last-purchase-12-months",
        "post-purchase",
        "loyalty-threshold",
    } == set(shipped)
    assert [j.id for j in shipped.values() if j.active] == ["abandoned-cart"]
    assert all(stem == j.id for stem, j in shipped.items())


def test_personal_rhythm_compares_with_the_customers_own_interval() -> None:
    rule = Leaf(
        field="profile.days_since_last_order",
        op="gte",
        ref="profile.avg_days_between_orders",
        times=0.9,
    )
    assert rule.holds(
        {"profile": {"days_since_last_order": 46, "avg_days_between_orders": 50}}, NOW
    )
    assert not rule.holds(
        {"profile": {"days_since_last_order": 44, "avg_days_between_orders": 50}}, NOW
    )
    assert not rule.holds({"profile": {"days_since_last_order": 44}}, NOW)


def test_bounded_windows_use_durations() -> None:
    recent = Leaf(field="profile.last_order_at", op="within", value="300d")
    assert recent.holds({"profile": {"last_order_at": datetime(2025, 6, 1, tzinfo=UTC)}}, NOW)
    assert not recent.holds({"profile": {"last_order_at": datetime(2024, 1, 1, tzinfo=UTC)}}, NOW)


CONTACT_FIELDS = (
    "id: j\nversion: 1\nname: J\npriority: 100\ntrigger: {event: x}\nsteps:\n"
    "  - {id: a, send: {template: t, subject: s, send_at: best_hour, expires_after: 2d}}\n"
)


def test_contact_fields_parse_and_a_wrong_one_is_refused() -> None:
    journey = parse_journey(CONTACT_FIELDS)
    send = journey.steps[0].send
    assert journey.priority == 100
    assert send is not None and send.send_at == "best_hour"
    assert send.expiry is not None and send.expiry.days == 2
    with pytest.raises(ValidationError, match="send_at"):
        parse_journey(CONTACT_FIELDS.replace("best_hour", "noon"))


def test_imported_history_triggers_no_journey() -> None:
    # Nobody gets "you left your cart" for an order of 2019 (docs/import.md).
    with pytest.raises(ValidationError, match="imported history starts no event-triggered"):
        parse_journey(
            "id: j\nversion: 1\nname: J\ntrigger: {event: customer.history.imported.v1}\n"
            "steps: [{id: a, end: true}]\n"
        )
