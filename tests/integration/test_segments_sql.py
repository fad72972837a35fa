"""A segment counted in SQL over scheduler.customers (with the purchase predictions joined)
means what the same condition means in Python (conditions.py over facts.build_facts); the
default segments' sizes, members and the daily sizes through the control plane."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.repository import BatchRepository, CustomerFacts
from services.scheduler.adapters.tables import predictions
from services.scheduler.domain.conditions import Condition
from services.scheduler.domain.segment_defaults import DEFAULT_SEGMENTS
from services.scheduler.predictions.repository import PredictionRepository
from services.scheduler.runner import JourneyCatalog, Runner
from services.scheduler.segments.api import segments_router
from services.scheduler.segments.repository import SegmentRepository
from services.scheduler.segments.service import SegmentSweeper, segment_facts
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import CartSnapshot, CategoryFacts, Line, Profile, RecentOrder
from shared.kafka import Assignment
from shared.topics import Topics

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
conditions: TypeAdapter[Condition] = TypeAdapter(Condition)

LEAVES: list[dict[str, Any]] = [
    {"field": "profile.days_since_last_order", "op": "gte", "value": 90},
    {"field": "profile.days_since_last_order", "op": "lt", "value": 30},
    # the period figures: from the recent orders as of now when the profile lists them
    {"field": "profile.orders_previous_period", "op": "gte", "value": 1},
    {"field": "profile.orders_last_period", "op": "eq", "value": 0},
    {"field": "profile.spent_previous_period", "op": "gt", "value": 50},
    {"field": "profile.days_since_registration", "op": "gt", "value": 365},
    {"field": "profile.days_until_expected_order", "op": "lte", "value": 5},
    {"field": "profile.last_order_at", "op": "within", "value": "300d"},
    {"field": "profile.registered_at", "op": "older_than", "value": "200d"},
    {"field": "profile.orders_count", "op": "gte", "value": 2},
    {"field": "profile.orders_count", "op": "in", "value": [1, 3]},
    {"field": "profile.total_spent", "op": "gt", "value": "100.5"},
    {
        "field": "profile.spent_last_period",
        "op": "lte",
        "ref": "profile.spent_previous_period",
        "times": 0.5,
    },
    {
        "field": "profile.days_since_last_order",
        "op": "gte",
        "ref": "profile.average_days_between_orders",
        "times": 0.9,
    },
    {"field": "profile.stage", "op": "eq", "value": "inactive"},
    {"field": "profile.stage", "op": "in", "value": ["new", "active"]},
    {"field": "profile.country", "op": "contains", "value": "E"},
    {"field": "profile.high_value", "op": "eq", "value": True},
    {"field": "profile.last_order_categories", "op": "contains", "value": "tea"},
    {"field": "profile.categories.tea.days_since_last_order", "op": "gte", "value": 45},
    {"field": "profile.categories.tea.spent", "op": "gt", "value": 20},
    {"field": "profile.email", "op": "exists"},
    {"field": "profile.expected_next_order_at", "op": "not_exists"},
    {"field": "cart.item_count", "op": "gt", "value": 1},
    {"field": "cart.updated_at", "op": "older_than", "value": "1h"},
    # the purchase predictions (scheduler.predictions joined in SQL)
    {"field": "profile.p_alive", "op": "lt", "value": 0.3},
    {"field": "profile.p_alive", "op": "gte", "value": "0.5"},
    {"field": "profile.expected_orders_30d", "op": "gt", "value": 0.2},
    {"field": "profile.expected_orders_90d", "op": "gte", "ref": "profile.orders_count"},
    {"field": "profile.expected_order_value", "op": "lte", "value": 40},
    {"field": "profile.predicted_next_order_at", "op": "within", "value": "20d"},
    {"field": "profile.predicted_next_order_at", "op": "exists"},
    {"field": "profile.days_until_predicted_order", "op": "lte", "value": 10},
    {"field": "profile.p_alive", "op": "not_exists"},
]


def random_condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth > 2 or rng.random() < 0.45:
        return dict(rng.choice(LEAVES))
    kind = rng.choice(["all", "any", "not"])
    if kind == "not":
        return {"not": random_condition(rng, depth + 1)}
    return {kind: [random_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


def maybe(rng: random.Random, value: Any) -> Any:
    return value if rng.random() < 0.8 else None


def customer(rng: random.Random, n: int) -> CustomerFacts:
    last = NOW - rng.randint(0, 400) * DAY - rng.randint(0, 86_399) * timedelta(seconds=1)
    orders = rng.randint(0, 4)
    period = rng.choice([30, 90])
    profile = Profile(
        key=f"shop:c:{n}",
        shop_id=rng.choice(["a", "b"]),
        email=maybe(rng, f"c{n}@example.com"),
        registered_at=maybe(rng, NOW - rng.randint(0, 900) * DAY),
        orders_count=orders,
        total_spent=Decimal(rng.randint(0, 30000)) / 100,
        last_order_at=maybe(rng, last) if orders else None,
        average_days_between_orders=maybe(rng, rng.uniform(10, 120)),
        expected_next_order_at=maybe(rng, NOW + rng.randint(-30, 30) * DAY),
        spent_last_period=Decimal(rng.randint(0, 100)),
        spent_previous_period=Decimal(rng.randint(0, 100)),
        orders_previous_period=rng.randint(0, 2),
        period_days=period,
        recent_orders=recent_orders(rng, period) if rng.random() < 0.6 else None,
        stage=maybe(rng, rng.choice(["new", "active", "inactive", "falling_asleep"])),
        country=maybe(rng, rng.choice(["DE", "FR", "ES"])),
        high_value=rng.random() < 0.1,
        last_order_categories=rng.sample(["tea", "cups", "books"], rng.randint(0, 2)),
        categories=[
            CategoryFacts(
                category="tea",
                orders=1,
                spent=Decimal(rng.randint(1, 50)),
                last_order_at=NOW - rng.randint(0, 100) * DAY,
            )
        ]
        if rng.random() < 0.5
        else [],
    )
    cart = None
    if rng.random() < 0.4:
        lines = [Line(title="x", quantity=rng.randint(1, 2), price=Decimal(5))]
        cart = CartSnapshot(
            cart_id=f"c{n}",
            lines=lines,
            updated_at=NOW - rng.randint(0, 7200) * timedelta(seconds=1),
        )
    return CustomerFacts(profile.key, n % 3, profile, cart)


def recent_orders(rng: random.Random, period: int) -> list[RecentOrder]:
    """Orders of the last periods, some exactly on a period's edge (the edges are exclusive
    at the far end: an order placed exactly one period ago is in the previous period)."""
    edges = [NOW - period * DAY, NOW - 2 * period * DAY, NOW]
    moments = [
        rng.choice(edges) if rng.random() < 0.3 else NOW - rng.randint(0, 250 * 86_400) * SECOND
        for _ in range(rng.randint(0, 4))
    ]
    return [RecentOrder(at=at, total=Decimal(rng.randint(1, 9000)) / 100) for at in sorted(moments)]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


def predicted(rng: random.Random, c: CustomerFacts) -> dict[str, Any]:
    """A fit's row for the customer (p_alive rounded as stored: 3 decimals)."""
    return {
        "customer_key": c.key,
        "shop_id": c.profile.shop_id,
        "as_of": NOW - DAY,
        "p_alive": round(rng.random(), 3),
        "orders_30d": round(rng.uniform(0, 1), 3),
        "orders_90d": round(rng.uniform(0, 3), 3),
        "next_order_at": maybe(rng, NOW + rng.randint(-40, 60) * DAY),
        "order_value": maybe(rng, round(rng.uniform(10, 80), 2)),
        "changed_at": NOW - DAY,
    }


async def stored(db: AsyncEngine, n: int) -> list[CustomerFacts]:
    """Customers, most of them with predictions (as the conditions then see them)."""
    rng = random.Random(11)
    made = [customer(rng, i) for i in range(n)]
    fitted = [predicted(rng, c) for c in made if rng.random() < 0.7]
    async with db.begin() as conn:
        await BatchRepository(conn).save_customers(made, NOW)
        await conn.execute(sa.insert(predictions), fitted)
        found = await PredictionRepository(conn).facts_for(c.key for c in made)
    return [c.with_predictions(found.get(c.key)) for c in made]


async def test_sql_counts_what_python_counts_for_random_conditions(db: AsyncEngine) -> None:
    made = await stored(db, 600)
    facts = [segment_facts(c, NOW) for c in made]
    rng = random.Random(5)
    async with db.begin() as conn:
        repo = SegmentRepository(conn)
        for _ in range(150):
            condition = conditions.validate_python(random_condition(rng))
            in_python = sum(1 for f in facts if condition.holds(f, NOW))
            assert await repo.count(repo.candidates(condition, NOW)) == in_python, condition
        # the segment timers' reads carry the same predictions the conditions were given
        read = await repo.customers([c.key for c in made])
        assert {k: c.predictions for k, c in read.items()} == {c.key: c.predictions for c in made}
        assert sum(c.predictions is not None for c in made) > len(made) / 2


async def test_default_segments_sizes_members_and_history_through_the_control_plane(
    db: AsyncEngine,
) -> None:
    made = await stored(db, 300)
    clock = ManualClock(NOW)
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(segments_router(db, clock))
    inactive = DEFAULT_SEGMENTS["inactive_90d"]
    expected = sorted(
        c.key
        for c in made
        if c.profile.shop_id == "a" and inactive.holds(segment_facts(c, NOW), NOW)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as client:
        sizes = {s["segment"]: s["size"] for s in (await client.get("/segments")).json()}
        assert set(sizes) == set(DEFAULT_SEGMENTS)
        one = (await client.get("/segments/inactive_90d", params={"shop_id": "a"})).json()
        assert one["size"] == len(expected)
        keys, after = [], ""
        while True:
            page = (
                await client.get(
                    "/segments/inactive_90d/members",
                    params={"shop_id": "a", "after": after, "limit": 7},
                )
            ).json()
            keys += [m["customer_key"] for m in page["members"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert keys == expected

        assignment = Assignment()
        assignment.partitions.update({0, 1, 2})
        sweeper = SegmentSweeper(db, Runner(JourneyCatalog(), Topics()), clock, assignment, 1.0)
        assert await sweeper.snapshot_sizes()
        assert not await sweeper.snapshot_sizes()  # once a day
        history = (await client.get("/segments/history", params={"shop_id": "a"})).json()
        on_day = {h["segment"]: h["size"] for h in history}
        assert on_day["inactive_90d"] == len(expected)
        assert {h["day"] for h in history} == {NOW.date().isoformat()}
