"""The dispatcher's side of the engagement loop against a real SMTP server, broker and database:
signed mail, hard bounces and unsubscribes that stop later (even already queued) requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from mailcatcher import MailStore
from pydantic import SecretStr

from services.dispatcher.shops import ShopMailConfig
from shared import events as ev
from shared.clock import ManualClock
from shared.kafka import HEADERS
from shared.topics import EMAIL_EVENTS, Topics
from shared.tracking import TrackingKey
from tests.conftest import Infra, eventually
from tests.integration.test_dispatcher_service import SHOP, Harness, message_request

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures" / "dkim"
KEYS = [TrackingKey(kid="k1", secret=SecretStr("d" * 40))]
SHOP_MAIL = ShopMailConfig(
    shop_id=SHOP,
    sender_name="Demo Shop",
    sender_address="hello@shop.example",
    footer_address="Demo Shop, 1 Main St, Springfield",
    public_base_url="https://t.shop.example",
    dkim_selector="rb1",
    dkim_domain="shop.example",
    dkim_private_key_file=FIXTURES / "test-only-private.pem",
)


@pytest.fixture
async def harness(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
) -> AsyncIterator[Harness]:
    store, port = mail
    h = Harness(infra, database_url, topics, clock, store, port)
    await h.start(shops=[SHOP_MAIL], tracking_keys=KEYS)
    try:
        yield h
    finally:
        await h.stop()


def dns(name: bytes, timeout: int = 5) -> bytes:
    if name != b"rb1._domainkey.shop.example.":
        return b""
    return b"v=DKIM1; k=rsa; p=" + (FIXTURES / "test-only-public.b64").read_bytes().strip()


async def test_the_dkim_signature_of_a_caught_mail_verifies(harness: Harness) -> None:
    await harness.send(message_request("signed"))
    await eventually(lambda: harness.mails_to("signed@example.com"), what="the mail")
    [caught] = harness.mails_to("signed@example.com")
    assert dkim.verify(caught.raw, dnsfunc=dns)
    message = caught.message
    assert str(message["From"]) == "Demo Shop <hello@shop.example>"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert "Demo Shop, 1 Main St, Springfield" in caught.part("text/plain")
    assert "/t/c/" in caught.part("text/html") and "/t/o/" in caught.part("text/html")


async def test_a_550_at_rcpt_suppresses_the_next_message(harness: Harness) -> None:
    harness.store.reject_recipients.add("gone@example.com")
    await harness.send(message_request("first", email="gone@example.com"))
    await eventually(lambda: _status(harness, "first", "failed"), what="the refused mail")
    await harness.send(message_request("second", email="gone@example.com"))
    await eventually(lambda: _status(harness, "second", "suppressed"), what="the next one")
    row = await harness.row("second")
    assert row is not None and row["reason"] == "hard_bounce"
    assert harness.store.messages == []


async def test_a_request_queued_before_the_unsubscribe_is_suppressed(harness: Harness) -> None:
    request = message_request("queued", email="ada@example.com")  # consent: still subscribed
    unsubscribed = ev.EmailUnsubscribed(
        request_key="earlier",
        shop_id=SHOP,
        customer_key=request.customer_key,
        journey_id="abandoned-cart",
        step_id="reminder",
        sent_at=datetime(2022, 1, 1, tzinfo=UTC),
        unsubscribed_at=datetime(2022, 1, 1, 1, tzinfo=UTC),
        method="one_click",
    )
    event = ev.make_event(
        type=ev.EMAIL_UNSUBSCRIBED,
        source="tests",
        id="unsub-1",
        time=unsubscribed.unsubscribed_at,
        subject=request.customer_key,
        shop_id=SHOP,
        data=unsubscribed,
    )
    await harness.producer.send_and_wait(
        harness.topics.name(EMAIL_EVENTS),
        ev.encode(event),
        key=request.customer_key.encode(),
        headers=HEADERS,
    )
    await eventually(lambda: _suppressions(harness), what="the suppression recorded")
    await harness.send(request)
    await eventually(lambda: _status(harness, "queued", "suppressed"), what="the decision")
    row = await harness.row("queued")
    assert row is not None and row["reason"] == "unsubscribed"
    assert harness.mails_to("ada@example.com") == []


async def _status(harness: Harness, key: str, status: str) -> bool:
    row = await harness.row(key)
    return row is not None and row["status"] == status


async def _suppressions(harness: Harness) -> bool:
    from sqlalchemy import text

    async with harness.engine.connect() as conn:
        return bool((await conn.execute(text("SELECT 1 FROM dispatcher.suppressions"))).first())
