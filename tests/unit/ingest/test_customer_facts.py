"""The order facts' pure rules: flat per-order updates, figures derived as of "now", stages,
time zones, the history CSV layouts and the Shopify product mapping."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.ingest.domain import customer_facts as cf
from services.ingest.domain import shopify
from services.ingest.domain.history_csv import OrderReader, parse_time
from services.ingest.settings import ShopConfig
from shared import events as ev
from tests.unit.ingest.deliveries import fixture_body

NOW = datetime(2024, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SETTINGS = cf.FactsSettings()


def order(days_ago: float, total: str, **categories: str) -> cf.PlacedOrder:
    spend = {name: Decimal(v) for name, v in categories.items()}
    return cf.PlacedOrder("k", NOW - days_ago * DAY, Decimal(total), spend)


def facts(*orders: cf.PlacedOrder) -> cf.OrderFacts:
    return cf.with_orders(cf.OrderFacts(), orders, SETTINGS.keep)


def test_rhythm_average_and_expected_next_order() -> None:
    derived = cf.derive(
        facts(order(100, "10"), order(60, "20"), order(20, "30")), NOW, SETTINGS, None
    )

    assert derived.average_order_value == Decimal(20)
    assert derived.average_days_between_orders == 40
    assert derived.expected_next_order_at == NOW + 20 * DAY
    assert derived.days_since_last_order == 20


def test_last_and_previous_period_follow_now_without_new_orders() -> None:
    f = facts(order(200, "5"), order(120, "40"), order(100, "60"), order(10, "50"))

    today = cf.derive(f, NOW, SETTINGS, None)
    later = cf.derive(f, NOW + 85 * DAY, SETTINGS, None)

    assert (today.orders_last_period, today.spent_last_period) == (1, Decimal(50))
    assert (today.orders_previous_period, today.spent_previous_period) == (2, Decimal(100))
    assert (later.orders_last_period, later.orders_previous_period) == (0, 1)


def test_the_recent_orders_kept_stay_within_two_periods() -> None:
    f = facts(*(order(d, "1") for d in range(0, 1000, 10)))

    assert len(f.recent) == 18  # 180 days back, every 10 days, the newest one counted
    assert f.orders == 100


def test_orders_in_any_order_give_the_same_facts() -> None:
    orders = [order(90, "10", tea="10"), order(30, "5", cups="5"), order(60, "7", tea="7")]

    results = {
        (
            f.orders,
            f.spent,
            f.first_order_at,
            f.last_order_at,
            f.recent,
            f.last_categories,
            tuple(sorted(f.categories.items())),
        )
        for f in (facts(*p) for p in itertools.permutations(orders))
    }

    assert len(results) == 1
    f = facts(*orders)
    assert f.last_categories == ("cups",)
    tea = f.categories["tea"]
    assert (tea.orders, tea.spent, tea.average_days_between) == (2, Decimal(17), 30)


def test_purchase_days_count_orders_on_one_day_once_in_any_order() -> None:
    # Two orders on the same day (10:00 and 23:00 UTC), then two later days: 3 purchase days;
    # the first day's spend is what Gamma-Gamma leaves out of the repeat orders' average.
    morning = NOW.replace(hour=10) - 200 * DAY
    orders = [
        cf.PlacedOrder("k", morning, Decimal(10)),
        cf.PlacedOrder("k", morning.replace(hour=23), Decimal(5)),
        order(100, "20"),
        order(20, "30"),
    ]
    for permutation in itertools.permutations(orders):
        f = facts(*permutation)
        if f.purchase_days is None:  # an old day arrived after `recent` moved past it
            f = cf.rebuild(permutation, SETTINGS.keep)
        assert (f.purchase_days, f.first_day_spent) == (3, Decimal(15))


def test_a_late_order_before_the_recent_window_asks_for_a_recount() -> None:
    f = facts(order(400, "10"), order(10, "10"))
    assert f.purchase_days == 2
    assert cf.add_order(f, order(300, "5"), SETTINGS.keep).purchase_days is None
    assert cf.add_order(f, order(500, "5"), SETTINGS.keep).purchase_days == 3  # a new first
    assert cf.add_order(f, order(100, "5"), SETTINGS.keep).purchase_days == 3  # within recent
    assert cf.rebuild([order(400, "10"), order(300, "5"), order(10, "1")], SETTINGS.keep) == (
        cf.rebuild([order(10, "1"), order(300, "5"), order(400, "10")], SETTINGS.keep)
    )


@pytest.mark.parametrize(
    ("orders", "days_later", "stage"),
    [
        ((), 0, "new"),
        ((5,), 0, "new"),
        ((5,), 30, "one_time_buyer"),
        ((40, 5), 0, "active"),
        ((60, 35), 0, "repeat_buyer"),
        ((60, 35), 20, "falling_asleep"),
        ((60, 35), 60, "inactive"),
    ],
)
def test_stage_moves_with_time(orders: tuple[int, ...], days_later: int, stage: str) -> None:
    f = facts(*(order(d, "10") for d in orders))

    assert cf.stage(f, NOW + days_later * DAY, SETTINGS, high_value=False) == stage


def test_high_value_until_falling_asleep_and_the_next_change_is_due() -> None:
    f = facts(order(40, "500"), order(10, "500"))

    assert cf.derive(f, NOW, SETTINGS, Decimal(800)).stage == "high_value"
    assert cf.derive(f, NOW, SETTINGS, Decimal(2000)).stage == "active"
    assert cf.next_stage_change_at(f, NOW, SETTINGS) == NOW + 20 * DAY
    assert cf.next_stage_change_at(f, NOW + 90 * DAY, SETTINGS) is None
    assert cf.high_value_cut([Decimal(n) for n in range(1, 101)], 0.10) == Decimal(91)


def test_the_top_share_needs_enough_buyers_a_shop_threshold_does_not() -> None:
    three = [Decimal(10), Decimal(20), Decimal(900)]

    assert cf.high_value_cut(three, 0.10, SETTINGS.high_value_min_buyers) is None
    assert cf.high_value_cut([Decimal(n) for n in range(1, 51)], 0.10, 50) == Decimal(46)
    with_threshold = cf.FactsSettings(high_value_spend=Decimal(500))
    assert cf.high_value_from(with_threshold, None) == Decimal(500)
    assert cf.high_value_from(SETTINGS, None) is None


def test_time_zone_explicit_then_country_then_shop() -> None:
    assert cf.time_zone("Asia/Tokyo", "DE", "UTC") == "Asia/Tokyo"
    assert cf.time_zone(None, "de", "UTC") == "Europe/Berlin"
    assert cf.time_zone(None, None, "Europe/Prague") == "Europe/Prague"
    assert cf.usual_hour([9, 20, 9, 20, 7]) == 9


def test_shopify_export_rows_become_orders_with_their_lines() -> None:
    header = [
        "Name",
        "Email",
        "Financial Status",
        "Paid at",
        "Created at",
        "Currency",
        "Total",
        "Lineitem quantity",
        "Lineitem name",
        "Lineitem price",
        "Lineitem sku",
        "Cancelled at",
    ]
    rows = [
        [
            "#1001",
            "Ada@Example.com",
            "paid",
            "",
            "2024-01-15 10:23:45 -0500",
            "EUR",
            "30.00",
            "2",
            "Tea",
            "10.00",
            "TEA",
            "",
        ],
        ["#1001", "Ada@Example.com", "", "", "", "", "", "1", "Cup", "10.00", "CUP", ""],
        [
            "#1002",
            "bob@example.com",
            "voided",
            "",
            "2024-01-16 08:00:00 +0100",
            "EUR",
            "9.00",
            "1",
            "Mug",
            "9.00",
            "MUG",
            "2024-01-17 08:00:00 +0100",
        ],
    ]
    reader = OrderReader("s1", header)

    found = list(reader.feed(enumerate(rows, 2)))
    last = reader.close()

    [first] = found
    assert first.customer_key == "s1:e:ada@example.com"
    assert first.placed_at == datetime(2024, 1, 15, 15, 23, 45, tzinfo=UTC)
    assert [(line.title, line.quantity) for line in first.lines] == [("Tea", 2), ("Cup", 1)]
    assert last is not None and last.status == "cancelled"


def test_dates_the_import_reads() -> None:
    assert parse_time("19970101") == datetime(1997, 1, 1, tzinfo=UTC)
    assert parse_time("2024-01-15T10:00:00+02:00") == datetime(2024, 1, 15, 8, tzinfo=UTC)


def test_shopify_product_webhooks_map_to_the_catalog_contract() -> None:
    kind, product = shopify.to_canonical("products/update", fixture_body("products.update"))
    _, deleted = shopify.to_canonical("products/delete", fixture_body("products.delete"))

    assert kind == ev.PRODUCT_UPDATED
    assert isinstance(product, ev.ProductUpdated)
    assert (product.title, product.category, product.price, product.available) == (
        "Example T-Shirt",
        "Shirts",
        Decimal("19.99"),
        True,
    )
    assert product.tags == ["example", "mens", "t-shirt"]
    assert isinstance(deleted, ev.ProductDeleted)
    assert deleted.product_id == product.product_id


def test_a_new_customers_history_in_one_pass_equals_adding_its_orders_one_by_one() -> None:
    rng = random.Random(8)
    for _ in range(2_000):
        orders = sorted(
            (
                cf.PlacedOrder(
                    "k",
                    NOW - rng.choice([rng.randrange(800 * 24), rng.randrange(48), 5]) * HOUR,
                    Decimal(rng.randrange(1, 100)),
                    {c: Decimal(rng.randrange(1, 50)) for c in rng.sample("abc", rng.randrange(3))},
                )
                for _ in range(rng.randrange(1, 9))
            ),
            key=lambda o: o.placed_at,
        )
        one_by_one = cf.OrderFacts()
        for o in orders:
            one_by_one = cf.add_order(one_by_one, o, SETTINGS.keep)

        assert cf.from_orders(orders, SETTINGS.keep) == one_by_one


def test_a_shops_own_thresholds_move_the_stage() -> None:
    shop = ShopConfig(
        shop_id="s", active_days=10, falling_asleep_days=20, inactive_days=40,
        high_value_min_buyers=5,
    ).facts_settings()  # fmt: skip
    f = facts(order(60, "10"), order(15, "10"))

    assert shop.high_value_min_buyers == 5
    assert cf.stage(f, NOW, shop, high_value=False) == "repeat_buyer"  # 15 days: past 10
    assert cf.stage(f, NOW, SETTINGS, high_value=False) == "active"  # the default 30
    assert cf.next_stage_change_at(f, NOW, shop) == NOW + 5 * DAY
    assert cf.stage(f, NOW + 5 * DAY, shop, high_value=False) == "falling_asleep"
    assert cf.stage(f, NOW + 25 * DAY, shop, high_value=False) == "inactive"
