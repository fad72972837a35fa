"""The order facts win-back needs, kept per customer from the stored aggregates plus each new
order (flat cost per order), and the figures that depend on "now", derived when read.

Stored (OrderFacts): counts, spend, first and last order, the orders of the last two periods
(`recent`, pruned to two periods before the newest order), per-category aggregates, the
categories of the last order, and the purchase days (distinct UTC days with an order, and the
spend of the first one) that the scheduler's purchase predictions count as repeat purchases.
Derived (derive()): average order value, rhythm, expected next order, the last and previous
period, days since the last order, the lifecycle stage.
See docs/adr/0002-customer-facts.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Literal

from shared.events import Line

Stage = Literal[
    "new", "active", "repeat_buyer", "one_time_buyer", "falling_asleep", "inactive", "high_value"
]
DAY = timedelta(days=1)


@dataclass(frozen=True)
class FactsSettings:
    """Per shop: the period of the rolling figures and the lifecycle thresholds."""

    period_days: int = 90
    active_days: int = 30
    falling_asleep_days: int = 50
    inactive_days: int = 90
    high_value_spend: Decimal | None = None  # None: the shop's top `high_value_share` by spend
    high_value_share: float = 0.10
    # The top share means nothing among a handful of buyers (one of three is not "top 10 %"):
    # below this many buyers only `high_value_spend` makes anyone high value.
    high_value_min_buyers: int = 50
    time_zone: str = "UTC"

    @cached_property
    def stage_days(self) -> tuple[int, ...]:
        """The days after the last order at which time alone can move the stage."""
        return tuple(sorted({self.active_days, self.falling_asleep_days, self.inactive_days}))

    @property
    def keep(self) -> timedelta:
        """How far back `recent` must reach for the last and the previous period."""
        return 2 * self.period_days * DAY


@dataclass(frozen=True)
class PlacedOrder:
    """What the facts take from one non-cancelled order: when, how much, spend per category."""

    customer_key: str
    placed_at: datetime
    total: Decimal
    category_spend: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class CategoryFacts:
    category: str
    orders: int
    spent: Decimal
    first_order_at: datetime
    last_order_at: datetime

    @property
    def average_days_between(self) -> float | None:
        return _average_days(self.orders, self.first_order_at, self.last_order_at)


@dataclass(frozen=True)
class OrderFacts:
    orders: int = 0
    spent: Decimal = Decimal(0)
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    recent: tuple[tuple[datetime, Decimal], ...] = ()  # (placed_at, total), oldest first
    last_categories: tuple[str, ...] = ()
    categories: Mapping[str, CategoryFacts] = field(default_factory=dict)
    # Distinct UTC days with an order (the literature's "transactions": Fader, Hardie & Lee
    # count several orders on one day once); None: unknown after an out-of-order order that
    # only the full history can place, so the caller recounts (apply_orders rebuilds).
    purchase_days: int | None = 0
    first_day_spent: Decimal = Decimal(0)  # spend of the first purchase day


# --- stored: one order at a time ------------------------------------------------------------


def add_order(facts: OrderFacts, order: PlacedOrder, keep: timedelta) -> OrderFacts:
    """The facts with one more order. Orders may arrive out of time order (an import after
    live orders): every figure is a sum, a min or a max, so the result does not depend on it."""
    last = facts.last_order_at
    newest = last is None or order.placed_at >= last
    return OrderFacts(
        orders=facts.orders + 1,
        spent=facts.spent + order.total,
        first_order_at=_min(facts.first_order_at, order.placed_at),
        last_order_at=order.placed_at if newest else last,
        recent=_recent(facts.recent, order, keep),
        last_categories=_last_categories(facts, order, newest),
        categories=_add_categories(facts.categories, order),
        purchase_days=_purchase_days(facts, order, keep),
        first_day_spent=_first_day_spent(facts, order),
    )


def _purchase_days(facts: OrderFacts, order: PlacedOrder, keep: timedelta) -> int | None:
    """One more day unless the order's day already had one. Known days: the first, the last
    and those of `recent` (every order within `keep` before the last); an earlier day after
    the first cannot be told from the aggregates: None."""
    if facts.first_order_at is None or facts.last_order_at is None:
        return 1
    if facts.purchase_days is None:
        return None
    day = _day(order.placed_at)
    first, last = _day(facts.first_order_at), _day(facts.last_order_at)
    if day > last or day < first:  # the common case (orders arrive in time order): no scan
        return facts.purchase_days + 1
    if day in {first, last} or any(_day(at) == day for at, _ in facts.recent):
        return facts.purchase_days
    if day > _day(facts.last_order_at - keep):
        return facts.purchase_days + 1
    return None


def _first_day_spent(facts: OrderFacts, order: PlacedOrder) -> Decimal:
    if facts.first_order_at is None:
        return order.total
    day, first = _day(order.placed_at), _day(facts.first_order_at)
    if day == first:
        return facts.first_day_spent + order.total
    return order.total if day < first else facts.first_day_spent


def _day(moment: datetime) -> date:
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).date()


def rebuild(orders: Iterable[PlacedOrder], keep: timedelta) -> OrderFacts:
    """The facts from a customer's complete list of non-cancelled orders (after a cancel)."""
    facts = OrderFacts()
    for order in sorted(orders, key=lambda o: o.placed_at):
        facts = add_order(facts, order, keep)
    return facts


def _recent(
    recent: tuple[tuple[datetime, Decimal], ...], order: PlacedOrder, keep: timedelta
) -> tuple[tuple[datetime, Decimal], ...]:
    entry = (order.placed_at, order.total)
    if not recent or order.placed_at >= recent[-1][0]:  # in time order: no sort
        merged: tuple[tuple[datetime, Decimal], ...] = (*recent, entry)
    else:
        merged = tuple(sorted((*recent, entry), key=lambda r: r[0]))
    # Older than two periods before the newest order is older than two periods before now.
    horizon = merged[-1][0] - keep
    if merged[0][0] > horizon:
        return merged
    return tuple(r for r in merged if r[0] > horizon)


def _last_categories(facts: OrderFacts, order: PlacedOrder, newest: bool) -> tuple[str, ...]:
    cats = tuple(sorted(order.category_spend))
    if not newest:
        return facts.last_categories
    if order.placed_at == facts.last_order_at:  # two orders at the same moment: both count
        return tuple(sorted({*facts.last_categories, *cats}))
    return cats


def _add_categories(
    known: Mapping[str, CategoryFacts], order: PlacedOrder
) -> Mapping[str, CategoryFacts]:
    if not order.category_spend:
        return known
    out = dict(known)
    for name, spend in order.category_spend.items():
        old = out.get(name)
        out[name] = (
            CategoryFacts(name, 1, spend, order.placed_at, order.placed_at)
            if old is None
            else CategoryFacts(
                name,
                old.orders + 1,
                old.spent + spend,
                min(old.first_order_at, order.placed_at),
                max(old.last_order_at, order.placed_at),
            )
        )
    return out


def _min(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


def _average_days(orders: int, first: datetime | None, last: datetime | None) -> float | None:
    if orders < 2 or first is None or last is None:
        return None
    return (last - first) / DAY / (orders - 1)


# --- derived: as of "now" -------------------------------------------------------------------


@dataclass(frozen=True)
class Derived:
    average_order_value: Decimal | None
    average_days_between_orders: float | None
    expected_next_order_at: datetime | None
    days_since_last_order: int | None
    orders_last_period: int
    spent_last_period: Decimal
    orders_previous_period: int
    spent_previous_period: Decimal
    high_value: bool
    stage: Stage


def derive(
    facts: OrderFacts, now: datetime, settings: FactsSettings, high_value_from: Decimal | None
) -> Derived:
    """Everything that depends on `now`; `high_value_from` is the shop's spend threshold
    (its setting, else the top-share cut the stage sweep computed), None: nobody yet."""
    last, previous = _periods(facts.recent, now, settings.period_days * DAY)
    avg_days = _average_days(facts.orders, facts.first_order_at, facts.last_order_at)
    high = is_high_value(facts, high_value_from)
    return Derived(
        average_order_value=(facts.spent / facts.orders) if facts.orders else None,
        average_days_between_orders=avg_days,
        expected_next_order_at=(
            facts.last_order_at + avg_days * DAY
            if avg_days is not None and facts.last_order_at
            else None
        ),
        days_since_last_order=_days_since(facts.last_order_at, now),
        orders_last_period=last[0],
        spent_last_period=last[1],
        orders_previous_period=previous[0],
        spent_previous_period=previous[1],
        high_value=high,
        stage=stage(facts, now, settings, high),
    )


def is_high_value(facts: OrderFacts, high_value_from: Decimal | None) -> bool:
    return high_value_from is not None and facts.orders > 0 and facts.spent >= high_value_from


def _periods(
    recent: Iterable[tuple[datetime, Decimal]], now: datetime, period: timedelta
) -> tuple[tuple[int, Decimal], tuple[int, Decimal]]:
    """Orders and spend in (now - period, now] and in the period before it, in one pass."""
    start, middle = now - 2 * period, now - period
    last_n, last_spent, previous_n, previous_spent = 0, Decimal(0), 0, Decimal(0)
    for at, total in recent:
        if middle < at <= now:
            last_n, last_spent = last_n + 1, last_spent + total
        elif start < at <= middle:
            previous_n, previous_spent = previous_n + 1, previous_spent + total
    return (last_n, last_spent), (previous_n, previous_spent)


def _days_since(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else max(0, (now - moment) // DAY)


def stage(facts: OrderFacts, now: datetime, settings: FactsSettings, high_value: bool) -> Stage:
    """The lifecycle stage, first rule that holds: never ordered -> new; nothing for
    `inactive_days` -> inactive; for `falling_asleep_days` -> falling_asleep; high spend ->
    high_value; one order, younger than `active_days` -> new; ordered within `active_days` ->
    active; one order -> one_time_buyer; else repeat_buyer (between active and falling asleep)."""
    days = _days_since(facts.last_order_at, now)
    if days is None:
        return "new"
    if days >= settings.inactive_days:
        return "inactive"
    if days >= settings.falling_asleep_days:
        return "falling_asleep"
    if high_value:
        return "high_value"
    if days < settings.active_days:
        return "new" if facts.orders == 1 else "active"
    return "one_time_buyer" if facts.orders == 1 else "repeat_buyer"


def next_stage_change_at(
    facts: OrderFacts, now: datetime, settings: FactsSettings
) -> datetime | None:
    """When time alone next moves the stage (the sweep's due time); None: it never will."""
    if facts.last_order_at is None:
        return None
    for days in settings.stage_days:
        at = facts.last_order_at + days * DAY
        if at > now:
            return at
    return None


def high_value_cut(spends: list[Decimal], share: float, min_buyers: int = 1) -> Decimal | None:
    """The spend from which a customer is in the top `share` of buyers (None: fewer buyers than
    `min_buyers`, or none). The SQL of the stage sweep (`compute_high_value`) does the same."""
    if not spends or len(spends) < min_buyers:
        return None
    ranked = sorted(spends, reverse=True)
    return ranked[max(0, int(len(ranked) * share + 0.5) - 1)]


# --- engagement and time zone ---------------------------------------------------------------


def usual_hour(local_open_hours: Iterable[int]) -> int | None:
    """The hour of day (customer's local time) they open mail most often; ties: the earliest."""
    counts: dict[int, int] = {}
    for hour in local_open_hours:
        counts[hour] = counts.get(hour, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda h: (-counts[h], h))


# The main countries' zone (the most populous zone where a country has several). A customer
# elsewhere, or without an address, gets the shop's time zone.
COUNTRY_ZONES: dict[str, str] = {
    "AT": "Europe/Vienna", "AU": "Australia/Sydney", "BE": "Europe/Brussels",
    "BR": "America/Sao_Paulo", "CA": "America/Toronto", "CH": "Europe/Zurich",
    "CN": "Asia/Shanghai", "CZ": "Europe/Prague", "DE": "Europe/Berlin",
    "DK": "Europe/Copenhagen", "ES": "Europe/Madrid", "FI": "Europe/Helsinki",
    "FR": "Europe/Paris", "GB": "Europe/London", "GR": "Europe/Athens",
    "HU": "Europe/Budapest", "IE": "Europe/Dublin", "IN": "Asia/Kolkata", "IT": "Europe/Rome",
    "JP": "Asia/Tokyo", "KR": "Asia/Seoul", "MX": "America/Mexico_City",
    "NL": "Europe/Amsterdam", "NO": "Europe/Oslo", "NZ": "Pacific/Auckland",
    "PL": "Europe/Warsaw", "PT": "Europe/Lisbon", "RO": "Europe/Bucharest",
    "SE": "Europe/Stockholm", "SG": "Asia/Singapore", "SK": "Europe/Bratislava",
    "TR": "Europe/Istanbul", "UA": "Europe/Kyiv", "US": "America/New_York",
    "ZA": "Africa/Johannesburg",
}  # fmt: skip


def time_zone(explicit: str | None, country: str | None, shop_zone: str) -> str:
    """The customer's zone: what the platform says, else their country's, else the shop's."""
    if explicit:
        return explicit
    return COUNTRY_ZONES.get((country or "").upper(), shop_zone)


def with_orders(facts: OrderFacts, orders: Sequence[PlacedOrder], keep: timedelta) -> OrderFacts:
    blank = facts.orders == 0 and facts.first_order_at is None and not facts.categories
    if blank and orders and _in_time_order(orders):
        return from_orders(orders, keep)
    for order in orders:
        facts = add_order(facts, order, keep)
    return facts


def _in_time_order(orders: Sequence[PlacedOrder]) -> bool:
    previous = orders[0].placed_at
    for o in orders:
        if o.placed_at < previous:
            return False
        previous = o.placed_at
    return True


def from_orders(orders: Sequence[PlacedOrder], keep: timedelta) -> OrderFacts:
    """A first customer's facts from their orders, oldest first, in one pass: the same as
    adding them one by one (the history import's common case, a customer at a time)."""
    first, last = orders[0].placed_at, orders[-1].placed_at
    first_day, horizon = _day(first), last - keep
    days: set[date] = set()
    first_day_spent = Decimal(0)
    categories: dict[str, CategoryFacts] = {}
    last_categories: set[str] = set()
    for o in orders:
        day = _day(o.placed_at)
        days.add(day)
        if day == first_day:
            first_day_spent += o.total
        if o.placed_at == last:
            last_categories.update(o.category_spend)
        for name, spend in o.category_spend.items():
            old = categories.get(name)
            categories[name] = (
                CategoryFacts(name, 1, spend, o.placed_at, o.placed_at)
                if old is None
                else CategoryFacts(name, old.orders + 1, old.spent + spend, old.first_order_at,
                                   o.placed_at)
            )  # fmt: skip
    return OrderFacts(
        orders=len(orders),
        spent=sum((o.total for o in orders), Decimal(0)),
        first_order_at=first,
        last_order_at=last,
        recent=tuple((o.placed_at, o.total) for o in orders if o.placed_at > horizon),
        last_categories=tuple(sorted(last_categories)),
        categories=categories,
        purchase_days=len(days),
        first_day_spent=first_day_spent,
    )


# --- from stored orders ---------------------------------------------------------------------


def placed(
    customer_key: str, placed_at: datetime, total: Decimal, lines: Iterable[Line]
) -> PlacedOrder:
    """An order as the facts see it: lines without a category add to no category."""
    spend: dict[str, Decimal] = {}
    for line in lines:
        if line.category:
            spend[line.category] = spend.get(line.category, Decimal(0)) + line.price * line.quantity
    return PlacedOrder(customer_key, placed_at, total, spend)


def daily_units(
    orders: Iterable[tuple[str, datetime, Iterable[Line]]],
) -> dict[tuple[str, str, date], int]:
    """Units sold per (shop, product, UTC day): what "best sellers" is ranked by."""
    units: dict[tuple[str, str, date], int] = {}
    for shop_id, at, lines in orders:
        for line in lines:
            if line.product_id:
                key = (shop_id, line.product_id, at.date())
                units[key] = units.get(key, 0) + line.quantity
    return units


def high_value_from(settings: FactsSettings, shop_cut: Decimal | None) -> Decimal | None:
    """The shop's own threshold wins over the top-share cut."""
    return settings.high_value_spend if settings.high_value_spend is not None else shop_cut
