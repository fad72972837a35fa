"""Sunset against the real broker and PostgreSQL: customer.sunset.v1 stops a customer's
marketing mail (suppressed / sunset) until an order or an opt-in later than it; whichever of
the two topics is read first, the later fact wins. Service mail still goes out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from mailcatcher import MailStore
from sqlalchemy import text

from shared import events as ev
from shared.clock import ManualClock
from shared.kafka import HEADERS
from shared.topics import CUSTOMER_ACTIVITY, ENGAGEMENT_RESULTS, Topics
from tests.conftest import Infra, eventually
from tests.integration.test_dispatcher_service import SHOP, Harness, message_request

pytestmark = pytest.mark.integration
SUNSET_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
AFTER = SUNSET_AT + timedelta(days=1)


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
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


def key_of(email: str) -> str:
    return f"{SHOP}:e:{email}"


async def sunset(
    harness: Harness, email: str, at: datetime = SUNSET_AT, key: str | None = None
) -> None:
    data = ev.CustomerSunset(
        shop_id=SHOP,
        customer_key=key_of(email),
        journey_id="win-back",
        journey_version=1,
        step_id="sunset",
        sunset_at=at,
    )
    id_ = f"sunset-{email}"
    await publish(harness, ENGAGEMENT_RESULTS, ev.CUSTOMER_SUNSET, id_, at, data, key)


async def activity(
    harness: Harness, email: str, kind: str, at: datetime, consent: str = "subscribed"
) -> None:
    profile = ev.Profile(
        key=key_of(email), shop_id=SHOP, email=email, marketing_consent=consent, orders_count=1
    )
    id_ = f"{kind}-{email}"
    data = ev.Activity(kind=kind, source_event_id=id_, occurred_at=at, profile=profile)
    await publish(harness, CUSTOMER_ACTIVITY, ev.CUSTOMER_ACTIVITY, id_, at, data, key_of(email))


async def publish(
    harness: Harness,
    topic: str,
    type_: str,
    id_: str,
    at: datetime,
    data: ev.Contract,
    key: str | None = None,
) -> None:
    subject = key or str(getattr(data, "customer_key", ""))
    event = ev.make_event(
        type=type_, source="tests", id=id_, time=at, subject=subject, shop_id=SHOP, data=data
    )
    await harness.producer.send_and_wait(
        harness.topics.name(topic), ev.encode(event), key=subject.encode(), headers=HEADERS
    )


async def sunset_rows(harness: Harness, email: str) -> int:
    async with harness.engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT count(*) FROM dispatcher.suppressions "
                "WHERE kind = 'customer' AND value = :k AND reason = 'sunset'"
            ),
            {"k": key_of(email)},
        )
    return int(found or 0)


async def outcome(harness: Harness, request_key: str) -> tuple[str, str | None]:
    async def decided() -> bool:
        row = await harness.row(request_key)
        return row is not None and row["status"] in ("sent", "suppressed", "failed")

    await eventually(decided, what=f"{request_key} decided")
    row = await harness.row(request_key)
    assert row is not None
    return row["status"], row["reason"]


async def test_a_sunset_customer_gets_no_marketing_mail_until_they_order_again(
    harness: Harness,
) -> None:
    await sunset(harness, "ada@example.com")
    await eventually(lambda: _has_sunset(harness, "ada@example.com"), what="sunset recorded")

    await harness.send(message_request("promo", email="ada@example.com", requested_at=AFTER))
    care = message_request(
        "care", email="ada@example.com", consent_required=False, requested_at=AFTER
    )
    await harness.send(care)

    assert await outcome(harness, "promo") == ("suppressed", "sunset")
    assert await outcome(harness, "care") == ("sent", None)  # service mail is not marketing
    await activity(harness, "ada@example.com", ev.ORDER_PLACED, SUNSET_AT + timedelta(days=3))
    await eventually(lambda: _no_sunset(harness, "ada@example.com"), what="sunset lifted")
    later = SUNSET_AT + timedelta(days=4)
    await harness.send(message_request("after-order", email="ada@example.com", requested_at=later))
    assert await outcome(harness, "after-order") == ("sent", None)
    assert len(harness.mails_to("ada@example.com")) == 2


async def test_an_order_read_before_an_older_sunset_still_wins(harness: Harness) -> None:
    await activity(harness, "bob@example.com", ev.ORDER_PLACED, SUNSET_AT + timedelta(minutes=1))
    await eventually(lambda: _reengaged(harness, "bob@example.com"), what="the order read")
    await sunset(harness, "bob@example.com")  # decided before the order, read after it
    # Behind it on the same partition: once this one is recorded, Bob's sunset was read.
    await sunset(harness, "cy@example.com", key=key_of("bob@example.com"))
    await eventually(lambda: _has_sunset(harness, "cy@example.com"), what="later sunset")

    assert await sunset_rows(harness, "bob@example.com") == 0
    await harness.send(message_request("bob-promo", email="bob@example.com", requested_at=AFTER))
    assert await outcome(harness, "bob-promo") == ("sent", None)


async def test_an_opt_in_lifts_a_sunset_and_an_older_order_does_not(harness: Harness) -> None:
    await activity(harness, "dee@example.com", ev.ORDER_PLACED, SUNSET_AT - timedelta(days=99))
    await sunset(harness, "dee@example.com")
    await eventually(lambda: _has_sunset(harness, "dee@example.com"), what="sunset recorded")
    await harness.send(message_request("dee-1", email="dee@example.com", requested_at=AFTER))
    assert await outcome(harness, "dee-1") == ("suppressed", "sunset")

    later = SUNSET_AT + timedelta(days=10)
    await activity(harness, "dee@example.com", ev.CONSENT_CHANGED, later, consent="subscribed")
    await eventually(lambda: _no_sunset(harness, "dee@example.com"), what="opt-in lifted it")
    after_opt_in = later + timedelta(days=1)
    await harness.send(message_request("dee-2", email="dee@example.com", requested_at=after_opt_in))
    assert await outcome(harness, "dee-2") == ("sent", None)


async def test_the_goodbye_decided_with_the_sunset_goes_out_even_if_the_sunset_is_read_first(
    harness: Harness,
) -> None:
    await sunset(harness, "eve@example.com")
    await eventually(lambda: _has_sunset(harness, "eve@example.com"), what="sunset recorded")
    goodbye = message_request("eve-goodbye", email="eve@example.com", requested_at=SUNSET_AT)
    await harness.send(goodbye)  # requested in the pass that sunset her
    assert await outcome(harness, "eve-goodbye") == ("sent", None)
    after = SUNSET_AT + timedelta(seconds=1)
    await harness.send(message_request("eve-promo", email="eve@example.com", requested_at=after))
    assert await outcome(harness, "eve-promo") == ("suppressed", "sunset")


async def _has_sunset(harness: Harness, email: str) -> bool:
    return await sunset_rows(harness, email) == 1


async def _no_sunset(harness: Harness, email: str) -> bool:
    return await sunset_rows(harness, email) == 0


async def _reengaged(harness: Harness, email: str) -> bool:
    async with harness.engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM dispatcher.reengagements WHERE customer_key = :k"),
            {"k": key_of(email)},
        )
    return bool(found)
