"""Every table of the three service schemas, as the database catalog lists them, is covered by
erasure, export and the guest/account merge (docs/privacy.md, docs/adr/0004-one-customer.md).

A customer (an account with a merged guest) and another customer get a row in every table that
names a customer, straight through SQL; the three services' privacy repositories then export
and erase the first. The catalog decides what is checked: a table added later with a customer
key and no row here, or without one and not classified below, fails the test, so no new table
escapes erasure or export silently. The end-to-end path (webhooks, broker, confirmations) is
tests/e2e/test_privacy.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.adapters.privacy_repository import DispatcherPrivacyRepository
from services.ingest.adapters import identity_repository
from services.ingest.adapters.privacy_repository import IngestPrivacyRepository
from services.scheduler.adapters import merge_repository
from services.scheduler.adapters.privacy_repository import SchedulerPrivacyRepository
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import PrivacyRequest
from shared.privacy import ExportData, PrivacyStore

pytestmark = pytest.mark.integration
SCHEMAS = ("ingest", "scheduler", "dispatcher")
SHOP = "cov-shop"
EMAIL, FIRST, LAST = "miralda.quenby@privacy.example", "Miralda", "Quenby"
ACCOUNT, GUEST = f"{SHOP}:c:42", f"{SHOP}:e:{EMAIL}"
OTHER_EMAIL, OTHER = "tobias.fenwick@privacy.example", f"{SHOP}:c:77"

# Tables without a customer key, each with how the person's data in it is reached.
BY_NAME = {  # the privacy repositories handle these by name (erased and exported)
    "ingest.customer_aliases": "guest and account, with the address",
    "ingest.order_lines": "through the order",
    "scheduler.customer_aliases": "guest and account",
    "scheduler.timers": "through the enrolment",
    "scheduler.message_requests": "through the enrolment",
    "scheduler.message_engagement": "through the message request",
    "scheduler.message_results": "through the message request",
    "scheduler.outbox": "keyed by the customer key (the request inside names the address)",
    "dispatcher.suppressions": "the customer key or the address as the value",
}
NOT_PERSONAL = {  # nothing in them names or describes one person
    "ingest.alembic_version",
    "ingest.processed_events",  # event ids
    "ingest.products",
    "ingest.product_sales",  # units per product and day
    "ingest.shop_stats",
    "scheduler.alembic_version",
    "scheduler.ab_winners",  # per journey step and variant
    "scheduler.journey_enrolment_counts",
    "scheduler.journeys",
    "scheduler.prediction_fits",  # a shop's model parameters
    "scheduler.privacy_requests",  # hashes only, the evidence of the request
    "scheduler.privacy_parts",  # assembled exports: deleted when their customer is erased
    "scheduler.processed_activities",
    "scheduler.segment_backfills",
    "scheduler.segment_sizes",  # counts per segment and day
    "scheduler.segment_sweeps",
    "dispatcher.alembic_version",
    "dispatcher.redactions",  # hashes of erased subjects, with the time
}
# Columns of kept (pseudonymised) rows that are personal data by name, and who blanks them.
PERSONAL_COLUMN = re.compile(
    r"email|name|phone|address|street|city|zip|postcode|country|locale|time_zone|subject|body"
    r"|recipient|(^|_)ip(_|$)|agent|url"
)
BLANKED = {
    "dispatcher.messages.email",
    "dispatcher.messages.subject",
    "ingest.carts.recovery_url",
}
# Tables the merge leaves under the guest key on purpose (docs/adr/0004-one-customer.md).
NOT_MERGED = {
    "scheduler.segment_timers",  # a guest's pending entry finds no customer when due and goes
}

_SEED = """
INSERT INTO ingest.customers (customer_key, shop_id, customer_id, email, first_name, last_name,
    country, time_zone, locale, orders_count, total_spent, updated_at)
    VALUES (:key, :shop, :id, :email, :first, :last, 'DE', 'Europe/Berlin', 'de', 1, 30, :t);
INSERT INTO ingest.customer_categories VALUES (:key, 'tea', :shop, 1, 30, :t, :t);
INSERT INTO ingest.engagement VALUES (:key, :t, :t, NULL);
INSERT INTO ingest.orders (shop_id, order_id, customer_key, total_price, status, placed_at,
    updated_at) VALUES (:shop, :order, :key, 30, 'paid', :t, :t);
INSERT INTO ingest.order_lines (shop_id, order_id, line_no, title, quantity, price)
    VALUES (:shop, :order, 1, 'Teapot', 1, 30);
INSERT INTO ingest.carts (shop_id, cart_id, customer_key, lines, total_price, recovery_url,
    updated_at, status) VALUES (:shop, :cart, :guest, '[{"title": "Teapot"}]', 30,
    'https://shop.example/cart?for=' || :email, :t, 'open');
INSERT INTO ingest.messages (request_key, shop_id, customer_key, journey_id, step_id, sent_at)
    VALUES (:rk, :shop, :key, 'abandoned-cart', 'reminder', :t);
INSERT INTO ingest.conversions (shop_id, order_id, request_key, customer_key, touch, touched_at,
    ordered_at, revenue) VALUES (:shop, :order, :rk, :key, 'click', :t, :t, 30);
INSERT INTO ingest.coupons (shop_id, code_key, code, request_key, customer_key, journey_id,
    step_id, issued_at, expires_at) VALUES (:shop, :code, :code, :rk, :key, 'win-back', 'offer',
    :t, :t);
INSERT INTO ingest.customer_aliases (alias_key, shop_id, email, canonical_key, created_at)
    VALUES (:guest, :shop, :email, :key, :t);
INSERT INTO scheduler.customers (customer_key, shop_id, partition, profile, cart, updated_at)
    VALUES (:key, :shop, 0, CAST(:profile AS jsonb), '{"cart_id": "c"}', :t);
INSERT INTO scheduler.customer_aliases VALUES (:guest, :key, 0, :t);
INSERT INTO scheduler.enrollments (journey_id, journey_version, customer_key, partition, status,
    step_index, holdout, entered_at, updated_at)
    VALUES ('abandoned-cart', 1, :key, 0, 'active', 0, false, :t, :t);
INSERT INTO scheduler.timers (enrollment_id, partition, step_id, due_at)
    SELECT id, 0, 'reminder', :t FROM scheduler.enrollments WHERE customer_key = :key;
INSERT INTO scheduler.message_requests (request_key, enrollment_id, step_id, requested_at)
    SELECT :rk, id, 'reminder', :t FROM scheduler.enrollments WHERE customer_key = :key;
INSERT INTO scheduler.message_engagement (request_key, sent_at, clicked_at) VALUES (:rk, :t, :t);
INSERT INTO scheduler.message_results (request_key, status, occurred_at) VALUES (:rk, 'sent', :t);
INSERT INTO scheduler.outbox (topic, key, value, created_at)
    VALUES ('message.requests', :key, convert_to(:profile, 'UTF8'), :t);
INSERT INTO scheduler.contact_queue (request_key, shop_id, customer_key, priority, due_at,
    time_zone, request, check_at)
    VALUES (:rk || '-held', :shop, :key, 1, :t, 'Europe/Berlin', CAST(:profile AS jsonb), :t);
INSERT INTO scheduler.contact_log VALUES (:rk, :shop, :key, :t);
INSERT INTO scheduler.customer_orders VALUES (:shop, :order, :key, 30, :t);
INSERT INTO scheduler.predictions (customer_key, shop_id, as_of, p_alive, orders_30d, orders_90d,
    changed_at) VALUES (:key, :shop, :t, 0.5, 0.1, 0.2, :t);
INSERT INTO scheduler.segment_timers (journey_id, customer_key, partition, due_at)
    VALUES ('vip', :guest, 0, :t);
INSERT INTO dispatcher.messages (request_key, shop_id, customer_key, journey_id, step_id, email,
    subject, status, created_at, updated_at)
    VALUES (:rk, :shop, :key, 'abandoned-cart', 'reminder', :email, :first || ', your cart',
    'sent', :t, :t);
INSERT INTO dispatcher.coupons (shop_id, code, source, request_key, customer_key, issued_at)
    VALUES (:shop, :code, 'generated', :rk, :key, :t);
INSERT INTO dispatcher.reengagements VALUES (:shop, :key, :t);
INSERT INTO dispatcher.suppressions VALUES (:shop, 'customer', :key, 'unsubscribed', :t),
    (:shop, 'address', :email, 'bounced', :t)
"""


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


def _stores(db: AsyncEngine, clock: ManualClock) -> dict[str, PrivacyStore]:
    return {
        "ingest": IngestPrivacyRepository(db),
        "scheduler": SchedulerPrivacyRepository(db, clock),
        "dispatcher": DispatcherPrivacyRepository(db, clock),
    }


async def _seed(db: AsyncEngine, clock: ManualClock) -> None:
    people = (
        ("42", ACCOUNT, GUEST, EMAIL, FIRST, LAST),
        ("77", OTHER, f"{SHOP}:e:{OTHER_EMAIL}", OTHER_EMAIL, "Tobias", "Fenwick"),
    )
    async with db.begin() as conn:
        for n, key, guest, email, first, last in people:
            profile = {"key": key, "email": email, "first_name": first, "last_name": last}
            params = {
                "shop": SHOP,
                "key": key,
                "guest": guest,
                "id": n,
                "email": email,
                "first": first,
                "last": last,
                "order": f"o-{n}",
                "cart": f"cart-{n}",
                "rk": f"abandoned-cart:{n}:reminder",
                "code": f"SAVE-{n}",
                "profile": orjson.dumps(profile).decode(),
                "t": clock.now(),
            }
            for statement in _SEED.split(";\n"):
                await conn.execute(sa.text(statement), params)


async def _catalog(db: AsyncEngine) -> dict[str, set[str]]:
    """schema.table -> its columns, for every base table of the three schemas."""
    async with db.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT c.table_schema || '.' || c.table_name, c.column_name"
                " FROM information_schema.columns c JOIN information_schema.tables t"
                " USING (table_schema, table_name)"
                " WHERE t.table_type = 'BASE TABLE' AND c.table_schema = ANY(:schemas)"
            ),
            {"schemas": list(SCHEMAS)},
        )
        tables: dict[str, set[str]] = {}
        for table, column in rows:
            tables.setdefault(table, set()).add(column)
    return tables


async def _count(db: AsyncEngine, query: str, **params: Any) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(sa.text(query), params)).scalar_one())


async def _holding(db: AsyncEngine, tables: list[str], needle: str) -> list[str]:
    """The tables any of whose rows holds `needle` in any column, bytes read as UTF-8 too."""
    found = []
    for table in tables:
        schema, name = table.split(".")
        binary = await _binary_columns(db, schema, name)
        texts = ["t::text ILIKE :pattern"]
        texts += [f"convert_from(t.{c}, 'UTF8') ILIKE :pattern" for c in binary]
        query = f'SELECT count(*) FROM "{schema}"."{name}" t WHERE {" OR ".join(texts)}'
        if await _count(db, query, pattern=f"%{needle}%"):
            found.append(table)
    return found


async def _binary_columns(db: AsyncEngine, schema: str, table: str) -> list[str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns WHERE data_type = 'bytea'"
                " AND table_schema = :schema AND table_name = :table"
            ),
            {"schema": schema, "table": table},
        )
        return [str(r[0]) for r in rows]


def _request(request_id: str, clock: ManualClock) -> PrivacyRequest:
    """What Shopify's customers/redact or data_request gives: the account and its address."""
    return PrivacyRequest(
        request_id=request_id,
        shop_id=SHOP,
        scope="customer",
        customer_keys=[ACCOUNT],
        emails=[EMAIL],
        origin="shopify",
        requested_at=clock.now(),
    )


async def test_every_table_of_every_schema_is_known_to_erasure_and_export(db: AsyncEngine) -> None:
    catalog = await _catalog(db)
    keyed = {t for t, columns in catalog.items() if "customer_key" in columns}
    unknown = set(catalog) - keyed - set(BY_NAME) - NOT_PERSONAL
    assert unknown == set(), (
        "tables without a customer key that no privacy repository knows: erase and export "
        "them in services/<service>/adapters/privacy_repository.py and list them in BY_NAME, "
        "or in NOT_PERSONAL if nothing in them is about one person"
    )
    assert set(BY_NAME) | NOT_PERSONAL <= set(catalog), "a listed table is gone: unlist it"
    personal = {
        f"{t}.{c}"
        for t in keyed
        for c in catalog[t]
        if PERSONAL_COLUMN.search(c) and c not in ("customer_key", "shop_id")
    }
    deleted_or_blanked = BLANKED | {
        f"{t}.{c}" for t in _DELETED_TABLES for c in catalog.get(t, set())
    }
    assert personal - deleted_or_blanked == set(), (
        "columns that look personal in rows erasure keeps: blank them in the service's "
        "privacy repository and add them to BLANKED"
    )


# Kept for the reports, reached through an order, enrolment or message request.
_KEPT_BY_LINK = {
    "ingest.order_lines",
    "scheduler.message_requests",
    "scheduler.message_engagement",
    "scheduler.message_results",
}
_DELETED_TABLES = {
    "ingest.customers",
    "ingest.customer_categories",
    "ingest.engagement",
    "scheduler.customers",
    "scheduler.contact_queue",
    "scheduler.segment_timers",
}


async def test_an_export_holds_every_table_that_names_the_customer_and_nobody_else(
    db: AsyncEngine, clock: ManualClock
) -> None:
    await _seed(db, clock)
    catalog = await _catalog(db)
    seeded = await _tables_naming(db, catalog, ACCOUNT, GUEST)
    keyed = {t for t, columns in catalog.items() if "customer_key" in columns}
    assert keyed - seeded == set(), "a table with a customer key has no row in _SEED: add one"

    exported: dict[str, ExportData] = {}
    for service, store in _stores(db, clock).items():
        exported[service] = await store.export(_request(f"export-{service}", clock))
    tables = {f"{s}.{t}" for s, data in exported.items() for t, rows in data.items() if rows}
    expected = keyed | (set(BY_NAME) - {"scheduler.outbox"})  # outbox: in flight, not held
    assert expected - tables == set(), "tables with the customer's data missing from the export"
    document = orjson.dumps(exported).decode()
    assert EMAIL in document and FIRST in document
    assert OTHER not in document and OTHER_EMAIL not in document


async def _tables_naming(db: AsyncEngine, catalog: dict[str, set[str]], *keys: str) -> set[str]:
    named = set()
    for table, columns in catalog.items():
        if "customer_key" in columns:
            schema, name = table.split(".")
            query = f'SELECT count(*) FROM "{schema}"."{name}" WHERE customer_key = ANY(:keys)'
            if await _count(db, query, keys=list(keys)):
                named.add(table)
    return named


async def test_after_an_erasure_no_table_holds_the_customer_and_every_row_count_stays(
    db: AsyncEngine, clock: ManualClock
) -> None:
    await _seed(db, clock)
    tables = await _catalog(db)
    catalog = sorted(tables)
    keyed = {t for t, columns in tables.items() if "customer_key" in columns}
    kept = keyed - _DELETED_TABLES | _KEPT_BY_LINK
    counts = {t: await _count(db, f"SELECT count(*) FROM {t}") for t in sorted(kept)}

    for service, store in _stores(db, clock).items():
        await store.redact(_request(f"redact-{service}", clock))

    for needle in (EMAIL, FIRST, LAST, ACCOUNT, GUEST):
        assert await _holding(db, catalog, needle) == [], needle
    for needle in (OTHER_EMAIL, OTHER, "Fenwick"):
        assert await _holding(db, catalog, needle) != [], needle
    after = {t: await _count(db, f"SELECT count(*) FROM {t}") for t in sorted(kept)}
    assert after == counts  # what the reports count stays, under a pseudonym
    keys = "SELECT count(DISTINCT customer_key) FROM ingest.orders"
    assert await _count(db, keys) == 2  # one pseudonym for the erased customer


async def test_every_table_with_a_customer_key_is_merged_from_guest_to_account(
    db: AsyncEngine,
) -> None:
    """A guest merged into an account leaves no row under the guest key in a table the merge
    forgot (docs/adr/0004-one-customer.md): each is named by the merge's statements."""
    catalog = await _catalog(db)
    statements = {
        "ingest": " ".join(identity_repository._MERGE),
        "scheduler": " ".join(
            str(v) for k, v in vars(merge_repository).items() if k.isupper() or k[1:].isupper()
        ),
    }
    unmerged = {
        table
        for table, columns in catalog.items()
        if "customer_key" in columns
        and table.split(".")[0] in statements
        and not re.search(rf"\b{re.escape(table)}\b", statements[table.split(".")[0]])
    }
    assert unmerged - NOT_MERGED == set(), (
        "tables keyed by customer that the guest/account merge does not move: move them in "
        "services/ingest/adapters/identity_repository.py or "
        "services/scheduler/adapters/merge_repository.py"
    )
