"""The engagement loop through all three services: what the customer does with a caught mail
(open, click, one-click unsubscribe) comes back and moves the journey. All parts real; time is
a ManualClock the test drives.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from mailcatcher import CaughtMail, MailStore
from pydantic import SecretStr

from services.dispatcher.app import DispatcherService
from services.scheduler.domain.journey import parse_journey
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import MESSAGE_REQUESTS, Topics
from shared.tracking import Claims, Link, TokenSigner, TrackingKey
from tests.conftest import Infra, eventually, read_topic
from tests.e2e.system import System, add_journeys, running_system
from tests.unit.ingest.deliveries import API_TOKEN, CHECKOUT_CUSTOMER_ID, delivery

pytestmark = pytest.mark.e2e
KEYS = [TrackingKey(kid="k1", secret=SecretStr("e" * 40))]
RECOVERY_URL = (
    "https://checkout.local/548380009/checkouts/123123123/recover?key=example-secret-token"
)
BROWSER = {"user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/140.0"}
OPENED_BRANCH = """
id: opened-branch
version: 1
name: Branch on the open
consent: none
trigger: {event: shop.cart.updated.v1, if: {field: cart.item_count, op: gt, value: 0}}
steps:
  - id: first
    send: {template: abandoned_cart_reminder, subject: "First"}
  - id: wait
    wait: {for: 48h}
  - id: opened
    branch:
      - if: {field: last_message.human_opened, op: eq, value: true}
        goto: after-open
    else: no-open
  - id: after-open
    send: {template: abandoned_cart_reminder, subject: "You opened it"}
    goto: done
  - id: no-open
    send: {template: abandoned_cart_reminder, subject: "You missed it"}
  - id: done
    end: true
"""


@pytest.fixture(params=["opened-branch"])
def journey(request: pytest.FixtureRequest) -> str:
    if request.param == "abandoned-cart":
        return (DEFAULT_JOURNEYS_DIR / "abandoned-cart.yaml").read_text()
    return OPENED_BRANCH


@pytest.fixture
async def system(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
    journey: str,
) -> AsyncIterator[System]:
    await add_journeys(database_url, clock, [parse_journey(journey)])
    async with running_system(
        infra, database_url, topics, clock, mail, tracking_keys=KEYS
    ) as system:
        yield system


def urls(mail: CaughtMail, kind: str) -> list[str]:
    return [
        u.rstrip(".")
        for u in re.findall(
            rf"http://127\.0\.0\.1:\d+/{kind}/[A-Za-z0-9_.-]+", mail.part("text/html")
        )
    ]


async def first_mail(system: System) -> CaughtMail:
    assert (await system.post(delivery("checkouts.create"))).status_code == 200
    await eventually(lambda: len(system.mail.messages) == 1, what="the first mail")
    return system.mail.messages[0]


async def second_subject(system: System) -> str:
    await system.clock.advance(timedelta(hours=48))
    await eventually(lambda: len(system.mail.messages) == 2, what="the second mail")
    return str(system.mail.messages[1].message["Subject"])


@pytest.mark.parametrize("fetch_pixel", [True, False])
async def test_the_pixel_of_the_caught_mail_drives_the_opened_branch(
    system: System, fetch_pixel: bool
) -> None:
    mail = await first_mail(system)
    [pixel] = urls(mail, "t/o")
    if fetch_pixel:
        await system.clock.advance(timedelta(hours=1))  # a person, not a scanner at delivery
        async with httpx.AsyncClient() as client:
            response = await client.get(pixel, headers=BROWSER)
        assert response.headers["content-type"] == "image/gif"

        async def opened() -> bool:
            rows = await system.sql(
                "SELECT count(*) FROM scheduler.message_engagement"
                " WHERE human_opened_at IS NOT NULL"
            )
            return int(rows[0][0]) == 1

        await eventually(opened, what="the open to reach the scheduler")
    expected = "You opened it" if fetch_pixel else "You missed it"
    assert await second_subject(system) == expected


async def test_the_click_url_redirects_to_the_original_link_and_an_altered_one_is_404(
    system: System,
) -> None:
    mail = await first_mail(system)
    [click] = urls(mail, "t/c")
    assert RECOVERY_URL not in mail.part("text/html")  # the link itself is not in the mail
    token = click.rsplit("/", 1)[1]
    claims = TokenSigner(KEYS).verify(token, "click")
    assert claims.link is not None
    never_had = Claims("click", claims.message, Link(7, claims.link.count, "https://evil.example"))
    async with httpx.AsyncClient() as client:
        response = await client.get(click)
        assert response.status_code == 302
        assert response.headers["location"] == RECOVERY_URL
        altered = click[:-5] + ("A" if click[-5] != "A" else "B") + click[-4:]
        bad = await client.get(altered)
        assert bad.status_code == 404 and "location" not in bad.headers
        forged_index = click.replace(token, TokenSigner(KEYS).sign(never_had))
        assert (await client.get(forged_index)).status_code == 404

    async def clicked() -> bool:
        rows = await system.sql("SELECT clicked_links FROM ingest.messages")
        return rows == [([response.headers["location"]],)]

    await eventually(clicked, what="exactly one click recorded")


@pytest.mark.parametrize("journey", ["abandoned-cart"], indirect=True)
async def test_one_click_unsubscribe_stops_the_second_reminder_and_a_get_changes_nothing(
    system: System,
) -> None:
    await _first_reminder_to_a_subscriber(system)
    header = str(system.mail.messages[0].message["List-Unsubscribe"])
    assert (
        str(system.mail.messages[0].message["List-Unsubscribe-Post"])
        == "List-Unsubscribe=One-Click"
    )
    unsubscribe = header.strip("<>")
    async with httpx.AsyncClient() as client:
        assert (await client.get(unsubscribe)).status_code == 200
        await asyncio.sleep(0.3)
        assert await _consent(system) == "subscribed"  # a GET alone changes nothing
        one_click = await client.post(unsubscribe, content=b"List-Unsubscribe=One-Click")
        assert one_click.status_code == 200
    await eventually(lambda: _consent_is(system, "unsubscribed"), what="consent unsubscribed")
    await eventually(lambda: _exited(system), what="the journey exited")
    await system.clock.advance(timedelta(hours=48))
    await system.scheduler.timers.fire_due()
    await asyncio.sleep(0.3)
    assert len(system.mail.messages) == 1


@pytest.mark.parametrize("journey", ["abandoned-cart"], indirect=True)
async def test_a_reminder_queued_before_the_unsubscribe_is_recorded_suppressed_not_sent(
    system: System,
) -> None:
    """The second reminder is already on message.requests (the dispatcher is down) when the
    customer unsubscribes: once the dispatcher is back it refuses it, never sends it."""
    await _first_reminder_to_a_subscriber(system)
    unsubscribe = str(system.mail.messages[0].message["List-Unsubscribe"]).strip("<>")

    async def recorded() -> bool:
        return await system.messages() == [("sent", None)]

    await eventually(recorded, what="the first reminder recorded sent")
    await system.dispatcher.stop()
    await system.clock.advance(timedelta(hours=48))
    await system.scheduler.timers.fire_due()
    requests = system.topics.name(MESSAGE_REQUESTS)

    async def queued() -> bool:
        return len(await read_topic(system.infra.bootstrap, requests)) == 2

    await eventually(queued, what="the second reminder queued")
    async with httpx.AsyncClient() as client:
        one_click = await client.post(unsubscribe, content=b"List-Unsubscribe=One-Click")
        assert one_click.status_code == 200
    system.dispatcher = DispatcherService(system.dispatcher.settings, system.clock)
    await system.dispatcher.start()

    async def refused() -> bool:
        return await system.messages() == [("sent", None), ("suppressed", "unsubscribed")]

    await eventually(refused, 30, "the queued reminder refused")
    assert len(system.mail.messages) == 1


async def _first_reminder_to_a_subscriber(system: System) -> None:
    assert (await system.post(delivery("checkouts.create"))).status_code == 200
    await eventually(lambda: system.timers(), what="the reminder timer")
    consent = {
        "type": ev.CONSENT_CHANGED,
        "id": "consent-1",
        "data": {"customer": {"id": CHECKOUT_CUSTOMER_ID}, "state": "subscribed"},
    }
    async with httpx.AsyncClient() as client:
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        response = await client.post(f"{system.ingest_url}/events", json=consent, headers=auth)
        assert response.status_code == 202, response.text
    await eventually(lambda: _scheduler_sees_consent(system), what="consent in the scheduler")
    await system.clock.advance(timedelta(hours=3))
    await eventually(lambda: len(system.mail.messages) == 1, what="the first reminder")


async def _consent(system: System) -> str | None:
    rows = await system.sql("SELECT marketing_consent FROM ingest.customers")
    return None if not rows else str(rows[0][0])


async def _consent_is(system: System, state: str) -> bool:
    return await _consent(system) == state


async def _exited(system: System) -> bool:
    rows = await system.sql("SELECT status, exit_reason FROM scheduler.enrollments")
    return [tuple(r) for r in rows] == [("exited", "unsubscribed")]


async def _scheduler_sees_consent(system: System) -> bool:
    rows = await system.sql("SELECT profile->>'marketing_consent' FROM scheduler.customers")
    return [r[0] for r in rows] == ["subscribed"]
