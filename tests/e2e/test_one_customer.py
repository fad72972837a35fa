"""A guest who checks out and then registers with the same e-mail is one customer, through all
three services: both carts are theirs, they are enrolled once and get one reminder, in
whichever order the events come, and a redelivered guest checkout changes nothing
(docs/adr/0004-one-customer.md). Real PostgreSQL, broker and SMTP; a ManualClock.
"""

# The System fixture is test_abandoned_cart's, imported by name; its parameters redefine it.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import eventually
from tests.e2e.system import System
from tests.e2e.test_abandoned_cart import journey_consent, system  # noqa: F401
from tests.unit.ingest.deliveries import SHOP_ID, Delivery
from tests.unit.ingest.guest_deliveries import (
    ACCOUNT_CART,
    ACCOUNT_KEY,
    EMAIL,
    GUEST_CART,
    GUEST_KEY,
    account_checkout,
    guest_checkout,
    registration,
)

pytestmark = pytest.mark.e2e
START = datetime(2022, 1, 1, tzinfo=UTC)  # the clock's start and the guest cart's last change
ACCOUNT_CART_AT = START + timedelta(minutes=30)
REMINDER_DUE = ACCOUNT_CART_AT + timedelta(hours=3)  # restarted by the newest cart
Check = Callable[[], Awaitable[bool]]


async def _send(system: System, d: Delivery, settled: Check, what: str) -> None:
    assert (await system.post(d)).status_code == 200
    await eventually(settled, what=what)


async def _enrollments(system: System) -> list[tuple[str, str, str | None]]:
    rows = await system.sql(
        "SELECT customer_key, status, exit_reason FROM scheduler.enrollments ORDER BY id"
    )
    return [(r[0], r[1], r[2]) for r in rows]


def _enrolled(system: System, key: str) -> Check:
    async def check() -> bool:
        return await _enrollments(system) == [(key, "active", None)]

    return check


def _aliased(system: System) -> Check:
    async def check() -> bool:
        return bool(await system.sql("SELECT 1 FROM ingest.customer_aliases"))

    return check


def _reminder_due_at(system: System, due: datetime) -> Check:
    async def check() -> bool:
        return [r[0] for r in await system.sql("SELECT due_at FROM scheduler.timers")] == [due]

    return check


async def _guest_then_account(system: System) -> None:
    await _send(system, guest_checkout(), _enrolled(system, GUEST_KEY), "guest enrolled")
    await _send(system, registration(), _enrolled(system, ACCOUNT_KEY), "enrolment moved")


async def _account_then_guest(system: System) -> None:
    await _send(system, registration(), _aliased(system), "the account's alias")
    await _send(system, guest_checkout(), _enrolled(system, ACCOUNT_KEY), "account enrolled")


async def _one_customer(system: System) -> dict[str, Any]:
    """What the three services hold about the shopper, key by key."""
    return {
        "ingest": [
            (r[0], r[1].strip().lower(), r[2])
            for r in await system.sql(
                "SELECT customer_key, email, first_name FROM ingest.customers "
                f"WHERE shop_id = '{SHOP_ID}'"
            )
        ],
        "carts": [
            tuple(r)
            for r in await system.sql(
                "SELECT cart_id, customer_key, status FROM ingest.carts ORDER BY 1"
            )
        ],
        "enrollments": await _enrollments(system),
        "scheduler": [
            r[0] for r in await system.sql("SELECT customer_key FROM scheduler.customers")
        ],
        "mail": sorted(m.recipients[0].lower() for m in system.mail.messages),
        "dispatched": sorted(
            tuple(r)
            for r in await system.sql("SELECT customer_key, status FROM dispatcher.messages")
        ),
    }


ONE_CUSTOMER = {
    "ingest": [(ACCOUNT_KEY, EMAIL, "Ada")],
    "carts": [(ACCOUNT_CART, ACCOUNT_KEY, "open"), (GUEST_CART, ACCOUNT_KEY, "open")],
    "enrollments": [(ACCOUNT_KEY, "active", None)],
    "scheduler": [ACCOUNT_KEY],
    "mail": [EMAIL],
    "dispatched": [(ACCOUNT_KEY, "sent")],
}


@pytest.mark.parametrize("arrival", [_guest_then_account, _account_then_guest])
async def test_a_guest_who_registers_is_one_customer_enrolled_once_with_one_reminder(
    system: System, arrival: Callable[[System], Awaitable[None]]
) -> None:
    await arrival(system)
    await system.clock.advance(ACCOUNT_CART_AT - START)
    newest = account_checkout(updated_at=ACCOUNT_CART_AT.isoformat())
    await _send(system, newest, _reminder_due_at(system, REMINDER_DUE), "the wait restarted")

    await system.clock.advance(REMINDER_DUE - ACCOUNT_CART_AT)
    await eventually(lambda: len(system.mail.messages) == 1, what="the reminder")
    await asyncio.sleep(0.3)  # let any (wrong) second reminder travel
    assert await _one_customer(system) == ONE_CUSTOMER

    # Shopify delivers the guest checkout once more: the same event, nothing changes.
    assert (await system.post(guest_checkout())).status_code == 200
    await asyncio.sleep(0.5)
    await system.scheduler.timers.fire_due()
    assert await _one_customer(system) == ONE_CUSTOMER
    reminder = system.mail.messages[0]
    assert "IPod Nano - 8GB" in reminder.part("text/plain")
