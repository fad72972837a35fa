"""The shipped win-back (services/scheduler/journeys/win-back.yaml) through the whole system:
turned on through the control plane, customers enter 90 days after their last order with no
event at all, every 48-hour branch goes by what they did with the caught mail (the pixel, a
click, an order), the silent get a goodbye and are sunset: no marketing mail until they order.

One system for the module; the clock moves from moment to moment of the sequence, so the
months it covers pass in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Infra, eventually
from tests.e2e.journeys_system import (
    DARJEELING,
    DAY,
    KETTLE,
    OOLONG,
    SENCHA,
    TICK,
    System,
    click_mail,
    customers,
    engagement_arrived,
    in_holdout,
    key_of,
    open_mail,
    start_system,
    utc,
)

pytestmark = pytest.mark.e2e
H48 = timedelta(hours=48)
START = utc(2025, 1, 6, 9)


@pytest.fixture(scope="module")
async def system(
    infra: Infra, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    tmp: Path = tmp_path_factory.mktemp("win-back")
    async for running in start_system(infra, template_db, tmp, START):
        yield running


async def test_win_back_reason_offer_last_chance_branches_goodbye_and_sunset(
    system: System,
) -> None:
    silent, opener, clicker, buyer, early = customers(100, 5, "win-back")
    holdout = next(n for n in range(100, 200) if in_holdout(n, "win-back", 10))
    far = 190  # left long ago: its last order, from the history import, is 310 days old
    answer = await system.turn("win-back")
    assert answer["active"] is True
    names = {silent: "Ada", opener: "Bea", clicker: "Cy", buyer: "Dan", early: "Eve"}
    names[holdout] = "Hal"
    t0 = system.clock.now()
    for n, name in names.items():
        await system.order(n, [(DARJEELING, 2)], first_name=name)
    await system.import_history([(far, t0 - 310 * DAY, KETTLE, 1)])
    await system.update(far, "Flo")  # opted in and named later: still out of the window
    for n in names:
        await system.facts_arrived(n, orders_count=1)
    await system.facts_arrived(far, first_name="Flo", orders_count=1)

    await system.at(t0 + 60 * DAY)
    await system.order(early, [(SENCHA, 1)])  # orders again: not inactive on day 90
    await system.facts_arrived(early, orders_count=2)

    entry = t0 + 90 * DAY + TICK  # 90 days since the last order, to the microsecond
    await system.at(entry - timedelta(seconds=1))
    await system.settled()
    assert all(system.mails(n) == [] for n in names)
    await system.at(entry)
    reasons = {n: (await system.mail_count(n, 1))[0] for n in (silent, opener, clicker, buyer)}
    for n, mail in reasons.items():
        [enrolment] = await system.enrolments(n, "win-back")
        assert datetime.fromisoformat(enrolment["entered_at"]) == entry
        assert mail.message["Subject"] == f"{names[n]}, new in your favourite category"
        text = mail.part("text/plain")
        assert f"Hi {names[n]}," in text
        assert "in tea" in text  # their last purchased category
        assert SENCHA.title in text and OOLONG.title in text  # tea they have not bought
        assert DARJEELING.title not in text and KETTLE.title not in text
    assert system.mails(early) == [] and system.mails(far) == []
    assert system.mails(holdout) == []
    [held_out] = await system.enrolments(holdout, "win-back")
    assert held_out["holdout"] is True  # enrolled, measured, never mailed
    assert await system.enrolments(far) == []

    # 48 hours on: the opened reason leads to the offer, the unopened one is sent again.
    for n in (opener, clicker, buyer):
        await system.clock.advance(timedelta(hours=1))  # a person, not a scanner at delivery
        await open_mail(system, reasons[n])
    for n in (opener, clicker, buyer):
        await engagement_arrived(system, n, "human_opened_at", 1)
    await system.at(entry + H48)
    [_, again] = await system.mail_count(silent, 2)
    assert again.message["Subject"] == "Picked for you: what is new since your last order"
    assert "Hi Ada," in again.part("text/plain")
    offers = {n: (await system.mail_count(n, 2))[1] for n in (opener, clicker, buyer)}
    for n, offer in offers.items():
        assert offer.message["Subject"] == "Free shipping on your next order, this week only"
        text = offer.part("text/plain")
        assert f"Hi {names[n]}," in text
        assert "Free shipping on your next order." in text
        ends = entry + H48 + 7 * DAY
        assert f"placed by {ends.day} {ends:%B %Y, %H:%M} UTC" in text  # its time limit
        assert "No code needed" in text

    # The buyer orders within the 48 hours: out, converted; nothing more for them.
    await system.at(entry + H48 + 10 * timedelta(hours=1))
    await system.order(buyer, [(OOLONG, 1)])
    await open_mail(system, offers[opener])
    await engagement_arrived(system, opener, "human_opened_at", 2)

    async def converted() -> bool:
        found = await system.enrolments(buyer, "win-back")
        return [(e["status"], e["exit_reason"]) for e in found] == [("exited", "converted")]

    await eventually(converted, what="the buyer's order ended the win-back")

    # Day +4: the unopened offer leads to the last chance, the opened one to the survey.
    await system.at(entry + 2 * H48)
    [*_, survey] = await system.mail_count(opener, 3)
    assert survey.message["Subject"] == "Can we ask you one quick question?"
    [*_, last_chance] = await system.mail_count(clicker, 3)
    assert last_chance.message["Subject"] == "Last chance: free shipping ends in 48 hours"
    ends = entry + 2 * H48 + H48
    assert f"placed by {ends.day} {ends:%B %Y, %H:%M} UTC" in last_chance.part("text/plain")
    [*_, offer] = await system.mail_count(silent, 3)  # after the resend: the offer
    assert offer.message["Subject"] == "Free shipping on your next order, this week only"
    await system.clock.advance(timedelta(hours=2))
    await click_mail(system, last_chance)
    await engagement_arrived(system, clicker, "clicked_at", 1)

    await system.at(entry + 3 * H48)
    await system.mail_count(clicker, 3)  # clicked the last chance: done, no goodbye
    [*_, silent_last] = await system.mail_count(silent, 4)
    assert silent_last.message["Subject"] == "Last chance: free shipping ends in 48 hours"

    await system.at(entry + 4 * H48)  # never reacted: goodbye, then the sunset
    [*_, goodbye] = await system.mail_count(silent, 5)
    assert goodbye.message["Subject"] == "Should we stop writing to you?"
    assert "Hi Ada," in goodbye.part("text/plain")
    assert "stop sending" in goodbye.part("text/plain")
    await system.settled()
    assert len(system.mails(opener)) == 3 and len(system.mails(buyer)) == 2
    assert system.mails(early) == [] and system.mails(far) == []
    for n in (silent, opener, clicker):
        [done] = await system.enrolments(n, "win-back")
        assert done["status"] == "completed"

    # Sunset: the six-month journey, turned on now, writes to the others but not to Ada...
    await system.turn("since-last-purchase-6-months")
    for n in (silent, opener):
        await system.timers_placed("since-last-purchase-6-months", n)
    six_months = t0 + 182 * DAY + TICK
    await system.at(six_months)
    await system.mail_count(opener, 4)
    await system.settled()
    assert len(system.mails(silent)) == 5

    async def suppressed() -> bool:
        found = await system.outcomes(silent, "since-last-purchase-6-months")
        return found == [("hello", "suppressed", "sunset")]

    await eventually(suppressed, what="Ada's six-month mail suppressed by the sunset")
    # ... until she orders again: the next win-back reaches her.
    await system.at(six_months + DAY)
    await system.order(silent, [(SENCHA, 1)])
    await system.facts_arrived(silent, orders_count=2)
    await system.at(six_months + DAY + 90 * DAY + TICK)
    [*_, back] = await system.mail_count(silent, 6)
    assert back.message["Subject"] == "Ada, new in your favourite category"
    assert key_of(silent) in {e["customer_key"] for e in await system.enrolments(silent)}
