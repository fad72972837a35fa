"""New orders into the order facts: the one path both the live consumer and the history import
take, in sets (a handful of statements per batch), with the pure rules of
domain/customer_facts.py in between. The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.ingest.adapters.order_facts_repository import (
    FactsWrite,
    OrderFactsRepository,
    StoredFacts,
)
from services.ingest.domain import customer_facts as cf
from services.ingest.domain.facts import OrderRow
from shared import events as ev

SettingsFor = Callable[[str], cf.FactsSettings]


@dataclass(frozen=True)
class StageChange:
    customer_key: str
    shop_id: str
    previous: str | None
    stage: str


async def with_categories(repo: OrderFactsRepository, orders: Sequence[OrderRow]) -> list[OrderRow]:
    """Lines without a category take their product's from the catalog."""
    wanted = {
        (o.shop_id, line.product_id)
        for o in orders
        for line in o.lines
        if line.category is None and line.product_id
    }
    known = await repo.product_categories(wanted)
    if not known:
        return list(orders)
    return [
        replace(o, lines=[_categorised(o.shop_id, line, known) for line in o.lines]) for o in orders
    ]


def _categorised(shop_id: str, line: ev.Line, known: dict[tuple[str, str], str]) -> ev.Line:
    if line.category is not None or not line.product_id:
        return line
    category = known.get((shop_id, line.product_id))
    return line if category is None else line.model_copy(update={"category": category})


async def apply_orders(
    repo: OrderFactsRepository,
    new_orders: Sequence[OrderRow],
    rebuild_keys: Iterable[str],
    settings_for: SettingsFor,
    now: datetime,
) -> list[StageChange]:
    """Add orders seen for the first time to their customers' facts; customers in
    `rebuild_keys` (an order of theirs was cancelled) are recomputed from their orders."""
    counted = [o for o in new_orders if o.status != "cancelled"]
    rebuild = set(rebuild_keys)
    keys = {o.customer_key for o in counted} | rebuild
    if not keys:
        return []
    stored = await repo.load(keys)
    by_key: dict[str, list[cf.PlacedOrder]] = {}
    for o in counted:
        by_key.setdefault(o.customer_key, []).append(
            cf.placed(o.customer_key, o.placed_at, o.total_price, o.lines)
        )
    writes, changes = await grow_facts(repo, stored, by_key, rebuild, settings_for, now)
    await repo.save(writes)
    await repo.add_sales(cf.daily_units((o.shop_id, o.placed_at, o.lines) for o in counted))
    return changes


async def grow_facts(
    repo: OrderFactsRepository,
    stored: Mapping[str, StoredFacts],
    by_key: Mapping[str, Sequence[cf.PlacedOrder]],
    rebuild_keys: Iterable[str],
    settings_for: SettingsFor,
    now: datetime,
) -> tuple[list[FactsWrite], list[StageChange]]:
    """The `stored` customers' facts with their new orders (`by_key`) added, or recomputed
    from their stored orders (`rebuild_keys`, and whoever only that can count); the writes
    for the caller to save, and the stage changes. The history import takes this path too."""
    rebuild = set(rebuild_keys)
    grown = {
        key: cf.with_orders(old.facts, by_key.get(key, ()), settings_for(old.shop_id).keep)
        for key, old in stored.items()
        if key not in rebuild
    }
    # Purchase days only the full history can count (an old order arrived late): rare, so
    # those customers take the cancellation's rebuild path.
    rebuild |= {key for key, facts in grown.items() if facts.purchase_days is None}
    history = await repo.counted_orders(rebuild & stored.keys())
    await repo.forget_categories(rebuild & stored.keys())
    writes: list[FactsWrite] = []
    changes: list[StageChange] = []
    for key, old in stored.items():
        settings = settings_for(old.shop_id)
        if key in rebuild:
            facts = cf.rebuild(history.get(key, ()), settings.keep)
            touched = frozenset(facts.categories)
        else:
            facts = grown[key]
            touched = frozenset(c for o in by_key.get(key, ()) for c in o.category_spend)
        write, change = _staged(key, old, facts, touched, settings, now)
        writes.append(write)
        if change:
            changes.append(change)
    return writes, changes


def _staged(
    key: str,
    old: StoredFacts,
    facts: cf.OrderFacts,
    touched: frozenset[str],
    settings: cf.FactsSettings,
    now: datetime,
) -> tuple[FactsWrite, StageChange | None]:
    high = cf.is_high_value(facts, cf.high_value_from(settings, old.high_value_cut))
    stage = cf.stage(facts, now, settings, high)  # as derive() has it, without the rest
    due = cf.next_stage_change_at(facts, now, settings)
    write = FactsWrite(key, facts, stage, due, touched)
    # A customer nobody staged yet counts as new (they had not ordered).
    changed = (old.stage or "new") != stage
    return write, StageChange(key, old.shop_id, old.stage, stage) if changed else None


async def sweep_stages(
    repo: OrderFactsRepository, keys: Sequence[str], settings_for: SettingsFor, now: datetime
) -> list[StageChange]:
    """Customers (claimed by the caller) whose stage time alone has moved: stored again with
    their next due time; the changes, for customer.activity."""
    stored = await repo.load(keys)
    writes: list[FactsWrite] = []
    changes: list[StageChange] = []
    for key, old in stored.items():
        settings = settings_for(old.shop_id)
        write, change = _staged(key, old, old.facts, frozenset(), settings, now)
        writes.append(write)
        if change:
            changes.append(change)
    await repo.save(writes)
    return changes
