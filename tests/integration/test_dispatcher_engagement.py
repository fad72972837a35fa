"""The dispatcher's side of the engagement loop against a real SMTP server, broker and database:
signed mail, hard bounces and unsubscribes that stop later (even already queued) requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from mailcatcher import MailStore
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import text

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


async def unsubscribe(harness: Harness, request: ev.MessageRequest) -> None:
    """The customer of `request` unsubscribes, from an earlier mail; acknowledged by the broker
    (the moment the unsubscribe page says it is done)."""
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
        id=f"unsub-{request.request_key}",
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


async def test_a_request_queued_before_the_unsubscribe_is_suppressed(harness: Harness) -> None:
    request = message_request("queued", email="ada@example.com")  # consent: still subscribed
    await unsubscribe(harness, request)
    await eventually(lambda: _suppressions(harness), what="the suppression recorded")
    await harness.send(request)
    await eventually(lambda: _status(harness, "queued", "suppressed"), what="the decision")
    row = await harness.row("queued")
    assert row is not None and row["reason"] == "unsubscribed"
    assert harness.mails_to("ada@example.com") == []


async def test_a_request_handled_while_the_suppressions_consumer_lags_waits_for_it(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    mail: tuple[MailStore, int],
) -> None:
    """The request is on message.requests before the unsubscribe, the unsubscribe is
    acknowledged before the dispatcher starts, and the suppressions consumer cannot store it
    (its table is locked): the request must wait for it, then be refused, never sent."""
    store, port = mail
    harness = Harness(infra, database_url, topics, clock, store, port)
    request = message_request("raced", email="bo@example.com")
    waits_before = _barrier_waits()
    try:
        await harness.start_clients()
        async with harness.engine.connect() as locker:
            await locker.execute(text("LOCK TABLE dispatcher.suppressions IN EXCLUSIVE MODE"))
            await harness.send(request)
            await unsubscribe(harness, request)
            await harness.start_service(
                shops=[SHOP_MAIL], tracking_keys=KEYS, suppressions_wait_s=0.3
            )
            await eventually(lambda: _barrier_waits() > waits_before, what="the request held back")
            assert await harness.row("raced") is None
            await locker.rollback()  # the suppressions consumer can store the unsubscribe now
        await eventually(lambda: _status(harness, "raced", "suppressed"), what="the decision")
        row = await harness.row("raced")
        assert row is not None and row["reason"] == "unsubscribed"
        assert harness.mails_to("bo@example.com") == []
    finally:
        await harness.stop()


def _barrier_waits() -> float:
    return REGISTRY.get_sample_value("rebound_dispatcher_suppression_waits_total") or 0.0


async def _status(harness: Harness, key: str, status: str) -> bool:
    row = await harness.row(key)
    return row is not None and row["status"] == status


async def _suppressions(harness: Harness) -> bool:
    async with harness.engine.connect() as conn:
        return bool((await conn.execute(text("SELECT 1 FROM dispatcher.suppressions"))).first())
