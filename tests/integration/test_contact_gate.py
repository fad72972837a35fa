"""The contact policy across journeys against real PostgreSQL, driven by a ManualClock: held
messages go at allowed hours in priority order, one a day; what waited past its expiry is
recorded expired; quiet hours in the customer's zone; nothing lost or repeated on restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.contact_repository import ContactRepository
from services.scheduler.contact_gate import ContactGate, DueSend, Released, expired_result
from services.scheduler.contact_settings import LimitConfig, QuietConfig, ShopContactPolicy
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import MessageRequest

SHOP = "shop-1"
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
POLICY = ShopContactPolicy(
    shop_id=SHOP,
    limits=[LimitConfig(count=1, per="1d"), LimitConfig(count=2, per="7d")],
    quiet_hours=QuietConfig(**{"from": time(21), "to": time(8)}),
    time_zone="Europe/Berlin",
)
PARTITIONS = [0]  # no customer facts stored here: the customers are anyone's
ONE_A_DAY = POLICY.model_copy(update={"limits": [LimitConfig(count=1, per="1d")]})


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


def request(key: str, journey: str, customer: str = "shop-1:c:1") -> MessageRequest:
    fields: dict[str, Any] = {
        "request_key": key,
        "shop_id": SHOP,
        "customer_key": customer,
        "journey_id": journey,
        "journey_version": 1,
        "step_id": key.rsplit(":", 1)[-1],
        "template": "t",
        "subject": "s",
        "recipient": {"email": "ada@example.com"},
        "requested_at": datetime(2026, 3, 2, tzinfo=UTC),
    }
    return MessageRequest.model_validate(fields)


async def hold(engine: AsyncEngine, gate: ContactGate, *sends: DueSend) -> None:
    async with engine.begin() as conn:
        await gate.hold(ContactRepository(conn), sends, sends[0].due_at)


async def release(engine: AsyncEngine, gate: ContactGate, now: datetime) -> Released:
    async with engine.begin() as conn:
        return await gate.release(ContactRepository(conn), PARTITIONS, now, limit=100)


async def run_until(
    engine: AsyncEngine, gate: ContactGate, clock: ManualClock, until: datetime
) -> list[tuple[str, datetime]]:
    """Passes every 15 minutes, as the timer loop would; what went and when."""
    went: list[tuple[str, datetime]] = []
    while clock.now() <= until:
        released = await release(engine, gate, clock.now())
        went += [(r.request_key, clock.now()) for r in released.send]
        went += [(f"expired {r.request_key}", clock.now()) for r in released.expired]
        await clock.advance(timedelta(minutes=15))
    return went


async def test_two_journeys_three_mails_one_day_go_on_three_days_by_priority_one_expires(
    engine: AsyncEngine,
) -> None:
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)
    clock = ManualClock(monday.astimezone(UTC))
    gate = ContactGate({SHOP: ONE_A_DAY})
    minute = timedelta(minutes=1)
    await hold(
        engine,
        gate,
        DueSend(request("cart:1:reminder", "abandoned-cart"), monday, priority=100),
        DueSend(request("win:1:reason", "win-back"), monday + 5 * minute, priority=10),
        DueSend(request("cart:1:discount", "abandoned-cart"), monday + 10 * minute, priority=100),
        DueSend(
            request("win:1:last", "win-back"),
            monday + 15 * minute,
            priority=10,
            expires_after=timedelta(hours=12),
        ),
    )
    went = await run_until(engine, gate, clock, monday + timedelta(days=4))
    local = [(key, at.astimezone(BERLIN)) for key, at in went]
    assert [key for key, _ in local] == [
        "cart:1:reminder",
        "cart:1:discount",
        "expired win:1:last",
        "win:1:reason",
    ]
    days = [at.date().isoformat() for key, at in local if not key.startswith("expired")]
    assert days == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert all(8 <= at.hour < 21 for _, at in local)
    expired_at = dict(local)["expired win:1:last"]
    result = expired_result(request("win:1:last", "win-back"), expired_at)
    assert (result.data["status"], result.data["reason"]) == ("suppressed", "frequency_cap_expired")


@pytest.mark.parametrize("zone", [BERLIN, TOKYO])
async def test_a_message_due_at_23_customer_time_goes_at_8_next_day(
    engine: AsyncEngine, zone: ZoneInfo
) -> None:
    due = datetime(2026, 3, 2, 23, 0, tzinfo=zone)
    clock = ManualClock(due.astimezone(UTC))
    gate = ContactGate({SHOP: POLICY})
    send = DueSend(request("cart:9:reminder", "abandoned-cart"), due, time_zone=zone.key)
    await hold(engine, gate, send)
    went = await run_until(engine, gate, clock, due + timedelta(days=1))
    assert [(key, at.astimezone(zone)) for key, at in went] == [
        ("cart:9:reminder", datetime(2026, 3, 3, 8, 0, tzinfo=zone))
    ]


async def test_best_hour_sends_at_the_customers_usual_opening_hour(engine: AsyncEngine) -> None:
    due = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
    clock = ManualClock(due.astimezone(UTC))
    gate = ContactGate({SHOP: POLICY})
    send = DueSend(request("win:2:reason", "win-back"), due, best_hour=True, usual_hour=19)
    await hold(engine, gate, send)
    went = await run_until(engine, gate, clock, due + timedelta(days=1))
    assert [at.astimezone(BERLIN).hour for _, at in went] == [19]


async def test_a_pass_rolled_back_loses_nothing_and_a_committed_one_sends_nothing_twice(
    engine: AsyncEngine,
) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)
    gate = ContactGate({SHOP: POLICY})
    await hold(engine, gate, DueSend(request("cart:3:reminder", "abandoned-cart"), now))
    async with engine.connect() as conn:  # a crash before the commit
        transaction = await conn.begin()
        crashed = await gate.release(ContactRepository(conn), PARTITIONS, now, limit=100)
        await transaction.rollback()
    assert [r.request_key for r in crashed.send] == ["cart:3:reminder"]

    restarted = ContactGate({SHOP: POLICY})  # a new process: only the rows remain
    first = await release(engine, restarted, now)
    again = await release(engine, restarted, now + timedelta(days=1))
    assert [r.request_key for r in first.send] == ["cart:3:reminder"]
    assert again.send == [] and again.expired == []


async def add_customer(
    engine: AsyncEngine, key: str, partition: int, usual_hour: int | None, opens: int
) -> None:
    profile = {"key": key, "shop_id": SHOP, "email": None, "opens_90d": opens}
    if usual_hour is not None:
        profile["usual_open_hour"] = usual_hour
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO scheduler.customers (customer_key, shop_id, partition, profile,"
                " updated_at) VALUES (:key, :shop, :partition, CAST(:profile AS jsonb), now())"
            ),
            {"key": key, "shop": SHOP, "partition": partition, "profile": json.dumps(profile)},
        )


async def test_best_hour_without_the_customers_own_is_the_shops_from_all_opens(
    engine: AsyncEngine,
) -> None:
    due = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
    clock = ManualClock(due.astimezone(UTC))
    await add_customer(engine, "shop-1:c:2", 0, usual_hour=18, opens=5)
    await add_customer(engine, "shop-1:c:3", 0, usual_hour=12, opens=2)
    await add_customer(engine, "shop-1:c:4", 0, usual_hour=12, opens=2)
    gate = ContactGate({SHOP: POLICY.model_copy(update={"best_hour": 10})})
    send = DueSend(request("win:5:reason", "win-back", "shop-1:c:9"), due, best_hour=True)
    await hold(engine, gate, send)
    went = await run_until(engine, gate, clock, due + timedelta(days=1))
    assert [at.astimezone(BERLIN).hour for _, at in went] == [18]  # 5 opens at 18 beat 4 at 12


async def test_best_hour_of_a_shop_without_opens_is_its_configured_one(
    engine: AsyncEngine,
) -> None:
    due = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
    clock = ManualClock(due.astimezone(UTC))
    gate = ContactGate({SHOP: POLICY.model_copy(update={"best_hour": 10})})
    send = DueSend(request("win:6:reason", "win-back"), due, best_hour=True)
    await hold(engine, gate, send)
    went = await run_until(engine, gate, clock, due + timedelta(days=1))
    assert [at.astimezone(BERLIN).hour for _, at in went] == [10]


async def test_an_instance_releases_only_the_customers_of_its_partitions(
    engine: AsyncEngine,
) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)
    await add_customer(engine, "shop-1:c:7", 1, usual_hour=None, opens=0)
    gate = ContactGate({SHOP: POLICY})
    await hold(engine, gate, DueSend(request("cart:7:reminder", "cart", "shop-1:c:7"), now))
    async with engine.begin() as conn:
        other = await gate.release(ContactRepository(conn), [0], now, limit=100)
    async with engine.begin() as conn:
        owner = await gate.release(ContactRepository(conn), [1], now, limit=100)
    assert other.send == []
    assert [r.request_key for r in owner.send] == ["cart:7:reminder"]


@pytest.mark.parametrize(("service_mail", "days"), [("exempt", [0, 0, 1]), ("counted", [0, 1, 2])])
async def test_service_mail_is_exempt_from_the_limits_or_counted_as_the_shop_says(
    engine: AsyncEngine, service_mail: str, days: list[int]
) -> None:
    """A cart reminder of a `consent: none` journey beside two marketing mails, 1 a day."""
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)
    clock = ManualClock(monday.astimezone(UTC))
    gate = ContactGate({SHOP: ONE_A_DAY.model_copy(update={"service_mail": service_mail})})
    service = request("cart:5:reminder", "abandoned-cart")
    service = service.model_copy(update={"consent_required": False})
    await hold(
        engine,
        gate,
        DueSend(service, monday, priority=100),
        DueSend(request("win:5:reason", "win-back"), monday, priority=10),
        DueSend(request("win:5:last", "win-back"), monday + timedelta(minutes=1), priority=10),
    )
    went = await run_until(engine, gate, clock, monday + timedelta(days=3))
    assert [key for key, _ in went] == ["cart:5:reminder", "win:5:reason", "win:5:last"]
    assert [(at.astimezone(BERLIN).date() - monday.date()).days for _, at in went] == days
