"""Every shipped lifecycle journey but the win-back (test_win_back_journey.py) and the abandoned
cart (test_abandoned_cart.py) through the whole system: turned on through the control plane,
a customer whose facts (shop events through the events API, or the history import) put them
in the segment at a known moment gets the first message at that moment, rendered with their
name, the products of their last category and the offer's terms and time limit; the branches
go as the file says; a customer outside the bound gets nothing.

One system for the module: each test turns its journeys on, and off again when it is done.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Infra, eventually
from tests.e2e.journeys_system import (
    CREAM,
    DARJEELING,
    DAY,
    KETTLE,
    OOLONG,
    SENCHA,
    SERUM,
    TICK,
    System,
    customers,
    engagement_arrived,
    open_mail,
    start_system,
    utc,
)

pytestmark = pytest.mark.e2e
START = utc(2025, 3, 3, 10)
SUBJECTS = {
    60: "Picked for you since your last order",
    182: "It has been six months - free shipping on us",
    365: "A year already? 15% off to welcome you back",
}
CODE = re.compile(r"with the code:\s+([A-Z2-9]{12})\s")


@pytest.fixture(scope="module")
async def system(
    infra: Infra, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    tmp: Path = tmp_path_factory.mktemp("lifecycle")
    async for running in start_system(infra, template_db, tmp, START):
        yield running


@asynccontextmanager
async def turned_on(system: System, *journey_ids: str) -> AsyncIterator[None]:
    for journey_id in journey_ids:
        assert (await system.turn(journey_id))["active"] is True
    try:
        yield
    finally:
        for journey_id in journey_ids:
            await system.turn(journey_id, on=False)


def until(moment: datetime) -> str:
    """How mail names the end of an offer."""
    return f"{moment.day} {moment:%B %Y, %H:%M} UTC"


async def nothing_for(system: System, outsiders: Sequence[int], journey_id: str) -> None:
    await system.settled()
    for n in outsiders:
        assert system.mails(n) == [], n
        assert await system.enrolments(n, journey_id) == [], n


async def first_mail_at(
    system: System, n: int, journey_id: str, moment: datetime, entered: datetime | None = None
) -> str:
    """Nothing a second before `moment`, the first message at it (entered at `entered`, by
    default then too); its text part."""
    await system.at(moment - timedelta(seconds=1))
    await system.settled()
    assert system.mails(n) == []
    await system.at(moment)
    [mail] = await system.mail_count(n, 1)
    [enrolment] = await system.enrolments(n, journey_id)
    assert datetime.fromisoformat(enrolment["entered_at"]) == (entered or moment)
    return mail.part("text/plain")


@pytest.mark.parametrize(
    ("journey_id", "days", "bound_days", "period"),
    [
        ("since-last-purchase-60-days", 60, 75, "two months"),
        ("since-last-purchase-6-months", 182, 300, "six months"),
        ("since-last-purchase-12-months", 365, 425, "a year"),
    ],
)
async def test_n_days_since_the_last_purchase_bounded_on_the_other_side(
    system: System, journey_id: str, days: int, bound_days: int, period: str
) -> None:
    base = {60: 1000, 182: 1100, 365: 1200}[days]
    inside, outside = customers(base, 2, journey_id)
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        await system.order(inside, [(SENCHA, 2)], first_name="Iris")
        await system.import_history([(outside, t0 - (bound_days + 10) * DAY, SENCHA, 1)])
        await system.update(outside, "Otto")  # opted in after the import: still out
        await system.facts_arrived(inside, orders_count=1)
        await system.facts_arrived(outside, first_name="Otto", orders_count=1)

        entry = t0 + days * DAY + TICK
        text = await first_mail_at(system, inside, journey_id, entry)
        [mail] = system.mails(inside)
        assert mail.message["Subject"] == SUBJECTS[days]
        assert "Hi Iris," in text
        assert f"It has been {period} since your last order" in text
        assert "from tea" in text
        assert DARJEELING.title in text and OOLONG.title in text and SENCHA.title not in text
        if days == 182:
            assert "Free shipping on your next order." in text
            assert f"placed by {until(entry + 7 * DAY)}" in text
        if days == 365:
            assert "15% off on your whole order with the code:" in text
            assert CODE.search(text)
            assert f"Valid until {until(entry + 10 * DAY)}" in text
        await nothing_for(system, [outside], journey_id)


async def test_win_back_per_category_writes_to_the_category_s_buyers_only(
    system: System,
) -> None:
    journey_id = "win-back-category"
    buyer, tea_only, long_ago = customers(2000, 3, journey_id)
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        await system.order(buyer, [(SERUM, 1)], first_name="Cleo")
        await system.order(tea_only, [(SENCHA, 1)], first_name="Tom")
        await system.import_history([(long_ago, t0 - 190 * DAY, SERUM, 1)])
        await system.update(long_ago, "Lou")
        for n in (buyer, tea_only):
            await system.facts_arrived(n, orders_count=1)
        await system.facts_arrived(long_ago, first_name="Lou")

        entry = t0 + 45 * DAY + TICK
        text = await first_mail_at(system, buyer, journey_id, entry)
        [mail] = system.mails(buyer)
        assert mail.message["Subject"] == "Running low? New in cosmetics, and 10% off this week"
        assert "Hi Cleo," in text and "Running low on cosmetics?" in text
        assert "10% off on your whole order with the code:" in text and CODE.search(text)
        assert f"Valid until {until(entry + 7 * DAY)}" in text
        assert CREAM.title in text and SERUM.title not in text
        await nothing_for(system, [tea_only, long_ago], journey_id)


async def test_purchases_fell_by_half_enters_when_time_alone_slides_the_periods(
    system: System,
) -> None:
    journey_id = "win-back-drop"
    dropped, steady = customers(3000, 2, journey_id)
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        for n, name in ((dropped, "Dora"), (steady, "Stan")):
            await system.order(n, [(KETTLE, 2)], first_name=name)  # 178 in the first period
        await system.at(t0 + 70 * DAY)
        await system.order(dropped, [(SENCHA, 1)])  # 19.50
        await system.order(steady, [(KETTLE, 1), (SENCHA, 1)])  # 108.50
        for n in (dropped, steady):
            await system.facts_arrived(n, orders_count=2)
        # No event at all: on day 90 the kettles slide into the previous 90 days, leaving
        # 19.50 in the last period (half of 178 or less) and 108.50 (not half).
        moment = t0 + 90 * DAY
        await system.at(moment)
        [mail] = await system.mail_count(dropped, 1)
        [enrolment] = await system.enrolments(dropped, journey_id)
        assert datetime.fromisoformat(enrolment["entered_at"]) == moment
        assert mail.message["Subject"] == "Dora, you are invited before everyone else"
        text = mail.part("text/plain")
        assert "Hi Dora," in text
        assert "Early access to our new season collection, before everyone else." in text
        assert f"Your early access is open until {until(moment + 14 * DAY)}" in text
        await system.at(moment + DAY)
        await nothing_for(system, [steady], journey_id)


async def test_personal_rhythm_keeps_warm_then_reactivates_and_reminds_the_unopened(
    system: System,
) -> None:
    keep_warm, reactivation = "rhythm-keep-warm", "win-back-personal-rhythm"
    quiet, opener, once, long_ago = customers(4000, 4, reactivation)
    async with turned_on(system, keep_warm, reactivation):
        t0 = system.clock.now()
        for n, name in ((quiet, "Quinn"), (opener, "Olga"), (once, "Uma")):
            await system.order(n, [(DARJEELING, 1)], first_name=name)
        await system.import_history(
            [(long_ago, t0 - 500 * DAY, SENCHA, 1), (long_ago, t0 - 420 * DAY, SENCHA, 1)]
        )
        await system.update(long_ago, "Lea")
        await system.at(t0 + 50 * DAY)  # every 50 days
        for n in (quiet, opener):
            await system.order(n, [(DARJEELING, 1)])
            await system.facts_arrived(n, orders_count=2, average_days_between_orders=50.0)
        await system.facts_arrived(long_ago, first_name="Lea")

        warm = t0 + 75 * DAY  # 0.5 x 50 days after the last order
        text = await first_mail_at(system, quiet, keep_warm, warm)
        assert system.subjects(quiet) == ["New arrivals we think you will like"]
        assert "Hi Quinn," in text and "in tea" in text and SENCHA.title in text
        [_] = await system.mail_count(opener, 1)

        due = t0 + 95 * DAY  # 0.9 x 50 days: overdue, reactivation
        await system.at(due - timedelta(seconds=1))
        await system.settled()
        assert len(system.mails(quiet)) == 1
        await system.at(due)
        [_, restock] = await system.mail_count(quiet, 2)
        [_, olga_restock] = await system.mail_count(opener, 2)
        [enrolment] = await system.enrolments(quiet, reactivation)
        assert datetime.fromisoformat(enrolment["entered_at"]) == due
        assert restock.message["Subject"] == "Quinn, time to restock?"
        text = restock.part("text/plain")
        assert "Your last order was 45 days ago" in text
        assert "A free sample set with your next order." in text
        assert f"placed by {until(due + 10 * DAY)}" in text
        await system.clock.advance(timedelta(hours=1))
        await open_mail(system, olga_restock)
        await engagement_arrived(system, opener, "human_opened_at", 1)

        await system.at(due + timedelta(hours=48))  # not opened: the reminder
        [*_, reminder] = await system.mail_count(quiet, 3)
        assert reminder.message["Subject"] == "Your free sample set is still waiting"
        assert f"placed by {until(due + timedelta(hours=48) + 8 * DAY)}" in reminder.part(
            "text/plain"
        )
        await system.settled()
        assert len(system.mails(opener)) == 2
        await nothing_for(system, [once, long_ago], reactivation)
        assert await system.enrolments(once, keep_warm) == []


async def test_anniversary_thanks_a_year_after_registration_not_years_after(
    system: System,
) -> None:
    journey_id = "anniversary"
    member, veteran = 5000, 5001
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        await system.register(member, "Mia")
        await system.register(veteran, "Vic", registered_at=t0 - 400 * DAY)
        for n in (member, veteran):
            await system.facts_arrived(n, marketing_consent="subscribed")
        entry = t0 + 365 * DAY + TICK
        text = await first_mail_at(system, member, journey_id, entry)
        [mail] = system.mails(member)
        assert mail.message["Subject"] == "Mia, one year together - a gift for you"
        assert f"A year ago ({t0:%B %Y}) you joined us" in text
        assert "A surprise gift from us with your next order." in text
        assert f"placed by {until(entry + 30 * DAY)}" in text
        await system.at(entry + 30 * DAY)
        assert len(system.mails(member)) == 1  # once
        await nothing_for(system, [veteran], journey_id)


async def test_registered_never_bought_reasons_then_help_and_out_at_the_first_order(
    system: System,
) -> None:
    journey_id = "registered-never-bought"
    newcomer, buyer, known = 6000, 6001, 6002
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        await system.import_history([(known, t0 - 30 * DAY, SENCHA, 1)])
        await system.facts_arrived(known, orders_count=1)
        await system.register(newcomer, "Nina")
        await system.register(buyer, "Ben")
        await system.register(known, "Kim")  # an account for a customer who has ordered
        for n in (newcomer, buyer):
            await eventually(lambda n=n: system.enrolments(n, journey_id), what="enrolled")

        text = await first_mail_at(system, newcomer, journey_id, t0 + 2 * DAY, t0)
        assert system.subjects(newcomer) == ["Nina, why customers choose us"]
        assert "Hi Nina," in text and "Free returns for 30 days" in text
        await system.mail_count(buyer, 1)
        await system.at(t0 + 3 * DAY)
        await system.order(buyer, [(OOLONG, 1)])

        async def converted() -> bool:
            found = await system.enrolments(buyer, journey_id)
            return [e["exit_reason"] for e in found] == ["converted"]

        await eventually(converted, what="the first order ended the journey")
        await system.at(t0 + 7 * DAY)
        [_, help_mail] = await system.mail_count(newcomer, 2)
        assert help_mail.message["Subject"] == (
            "Need help choosing? Free shipping on your first order"
        )
        text = help_mail.part("text/plain")
        assert "Free shipping on your next order." in text
        assert f"placed by {until(t0 + 7 * DAY + 14 * DAY)}" in text
        await system.settled()
        assert len(system.mails(buyer)) == 1
        await nothing_for(system, [known], journey_id)


async def test_post_purchase_care_then_cross_sell_from_the_order_s_category(
    system: System,
) -> None:
    journey_id = "post-purchase"
    buyer, imported = 7000, 7001
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        await system.import_history([(imported, t0 - DAY, SERUM, 1)])  # history: no journey
        await system.update(imported, "Ivy")
        await system.order(buyer, [(SERUM, 1)], first_name="Pia")
        await eventually(lambda: system.enrolments(buyer, journey_id), what="enrolled")

        text = await first_mail_at(system, buyer, journey_id, t0 + 5 * DAY, t0)
        assert system.subjects(buyer) == ["Getting the most out of your purchase"]
        assert "Hi Pia," in text
        assert "Keep creams and serums closed" in text  # the tips of the order's category
        await system.at(t0 + 19 * DAY)
        [_, cross_sell] = await system.mail_count(buyer, 2)
        assert cross_sell.message["Subject"] == "Pia, these go well with your order"
        text = cross_sell.part("text/plain")
        assert "in cosmetics" in text and CREAM.title in text and SERUM.title not in text
        await nothing_for(system, [imported], journey_id)


async def test_loyalty_threshold_close_tells_how_close_and_not_below_or_beyond(
    system: System,
) -> None:
    journey_id = "loyalty-threshold"
    close, below, beyond = 8000, 8001, 8002
    async with turned_on(system, journey_id):
        t0 = system.clock.now()
        await system.import_history(
            [(n, t0 - 20 * DAY, KETTLE, 4) for n in (close, beyond)]  # 356 spent before
            + [(below, t0 - 20 * DAY, KETTLE, 2)]
        )
        for n in (close, below, beyond):
            await system.facts_arrived(n, orders_count=1)
        await system.order(close, [(SENCHA, 3)], first_name="Lara")  # 414.50 in all
        await system.order(below, [(SENCHA, 3)], first_name="Bo")  # 236.50
        await system.order(beyond, [(KETTLE, 2)], first_name="Yan")  # 534
        [mail] = await system.mail_count(close, 1)
        [enrolment] = await system.enrolments(close, journey_id)
        assert datetime.fromisoformat(enrolment["entered_at"]) == t0
        assert mail.message["Subject"] == "You are close to your loyalty voucher"
        text = mail.part("text/plain")
        assert "Hi Lara," in text
        assert "You have spent €414.50 with us so far: only €85.50" in text
        assert "a 25 voucher (at €500.00)" in text
        await nothing_for(system, [below, beyond], journey_id)


async def test_abandoned_cart_as_shipped_reminds_then_offers_a_code_and_skips_stale_carts(
    system: System,
) -> None:
    """On from the start (no control-plane call): with marketing consent, as shipped."""
    shopper, stale = 9000, 9001
    t0 = system.clock.now()
    await system.cart(shopper, [(OOLONG, 2)], first_name="Cara")
    await system.cart(stale, [(OOLONG, 1)], first_name="Stu", updated_at=t0 - 8 * DAY)
    await eventually(lambda: system.enrolments(shopper, "abandoned-cart"), what="enrolled")

    text = await first_mail_at(system, shopper, "abandoned-cart", t0 + timedelta(hours=3), t0)
    assert system.subjects(shopper) == ["Cara, you left something in your cart"]
    assert "Tea & Co" in text and OOLONG.title in text and "€42.00" in text
    await system.at(t0 + timedelta(hours=51))
    [_, discount] = await system.mail_count(shopper, 2)
    assert discount.message["Subject"] == "Still thinking it over? Here is 10% off your cart"
    text = discount.part("text/plain")
    assert "10% off" in text and re.search(r"\n\s+[A-Z2-9]{12}\s", text)
    assert f"valid until {until(t0 + timedelta(hours=51) + 7 * DAY)}" in text
    await nothing_for(system, [stale], "abandoned-cart")
