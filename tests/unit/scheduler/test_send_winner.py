"""The engine's A/B choice: the split until a winner is declared, then the winner for everyone
who reaches a `send_winner` step; the declared winners come in as data."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from services.scheduler.domain import engine
from services.scheduler.domain.journey import Journey, parse_journey

T0 = datetime(2022, 1, 1, tzinfo=UTC)
CUSTOMERS = [f"shop:c:{n}" for n in range(200)]


def journey(send_winner: bool = True, holdout: int = 0, wait_first: bool = False) -> Journey:
    wait = "  - id: pause\n    wait: {for: 1h}\n" if wait_first else ""
    return parse_journey(f"""
id: ab
version: 3
name: AB
trigger: {{event: shop.cart.updated.v1}}
limits: {{holdout_percent: {holdout}}}
steps:
{wait}  - id: mail
    send:
      template: reminder
      subject: Your cart
      variants:
        - {{id: plain, template: plain_reminder, subject: Plain}}
        - {{id: warm, template: warm_reminder, subject: Warm}}
      winner_by: click
      send_winner: {str(send_winner).lower()}
""")


def sent(outcome: engine.Outcome) -> list[engine.RequestMessage]:
    return [d for d in outcome.decisions if isinstance(d, engine.RequestMessage)]


def chosen(ab: Journey, winners: engine.Winners = engine.NO_WINNERS) -> Counter[str | None]:
    picks: Counter[str | None] = Counter()
    for key in CUSTOMERS:
        for request in sent(engine.enter(ab, key, {}, T0, winners)):
            picks[request.variant] += 1
    return picks


def test_before_a_winner_the_customers_are_split_between_the_variants() -> None:
    picks = chosen(journey())
    assert set(picks) == {"plain", "warm"} and min(picks.values()) > 60
    assert chosen(journey()) == picks  # stable per customer: a replay picks the same


def test_a_declared_winner_goes_to_everyone_who_enters_with_its_template_and_subject() -> None:
    ab = journey()
    assert chosen(ab, {"mail": "warm"}) == Counter({"warm": len(CUSTOMERS)})
    (request,) = sent(engine.enter(ab, CUSTOMERS[0], {}, T0, {"mail": "warm"}))
    assert (request.send.template, request.send.subject) == ("warm_reminder", "Warm")


def test_an_enrolment_that_reaches_the_step_after_the_declaration_gets_the_winner() -> None:
    ab = journey(wait_first=True)
    waiting = [engine.enter(ab, key, {}, T0).enrollment for key in CUSTOMERS]  # before
    later = T0 + timedelta(hours=1)
    requests = [
        r
        for e in waiting
        for r in sent(engine.on_timer(ab, e, "pause", {}, later, {"mail": "plain"}))
    ]
    assert len(requests) == len(CUSTOMERS)
    assert {r.variant for r in requests} == {"plain"}


def test_a_step_without_send_winner_keeps_splitting_whatever_it_is_given() -> None:
    assert set(chosen(journey(send_winner=False), {"mail": "warm"})) == {"plain", "warm"}


def test_a_winner_of_another_step_or_an_unknown_variant_changes_nothing() -> None:
    split = chosen(journey())
    assert chosen(journey(), {"other": "warm"}) == split
    assert chosen(journey(), {"mail": "gone"}) == split


def test_the_holdout_still_gets_nothing_once_a_winner_is_declared() -> None:
    ab = journey(holdout=30)
    picks = chosen(ab, {"mail": "warm"})
    assert set(picks) == {"warm"} and 100 < picks["warm"] < len(CUSTOMERS)
