"""One customer, not two (docs/adr/0004-one-customer.md): a guest, keyed by e-mail, and the
account with the same e-mail in the same shop are one person under the account's key.

Pure rules: which events link a guest key to an account, how a batch's events are re-keyed
through the stored aliases, and the customer.merged.v1 activity. The SQL that stores aliases
and moves a guest's history is in adapters/identity_repository.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.ingest.domain.activity import OpenCart, activity_event
from services.ingest.domain.facts import ShopEventIn
from shared import events as ev


@dataclass(frozen=True)
class Link:
    """An event named both an account and an e-mail: the e-mail's guest key is that account."""

    shop_id: str
    email: str  # trimmed and lowercased, as in the guest key
    guest_key: str
    account_key: str
    event_id: str  # the first event of the batch that named the two


@dataclass(frozen=True)
class Alias:
    """A stored alias: where a guest key's events go, and whether a stored guest was merged."""

    canonical_key: str
    merged_at: datetime | None = None
    merged_by: str | None = None  # the event whose application merged the stored guest


def guest_key(shop_id: str, email: str) -> str:
    return ev.customer_key(shop_id, None, email)


def is_guest_key(shop_id: str, key: str | None) -> bool:
    return key is not None and key.startswith(f"{shop_id}:e:")


def links(events: Iterable[ShopEventIn]) -> list[Link]:
    """Each guest key named by an account event of the batch, linked to the first such account.

    An e-mail already linked keeps its account (the first account wins, see the ADR)."""
    found: dict[str, Link] = {}
    for event in events:
        customer = _customer(event.data)
        if customer is None or not customer.id or not customer.email or not event.customer_key:
            continue
        email = customer.email.strip().lower()
        key = guest_key(event.shop_id, email)
        found.setdefault(key, Link(event.shop_id, email, key, event.customer_key, event.event_id))
    return list(found.values())


def _customer(data: ev.Contract) -> ev.Customer | None:
    customer = getattr(data, "customer", None)
    return customer if isinstance(customer, ev.Customer) else None


def identity_keys(events: Iterable[ShopEventIn], found: Iterable[Link]) -> list[str]:
    """The guest keys a batch touches, sorted: the locks it takes, always in the same order."""
    keys = {e.customer_key for e in events if is_guest_key(e.shop_id, e.customer_key)}
    return sorted({k for k in keys if k} | {link.guest_key for link in found})


def resolve(events: Sequence[ShopEventIn], aliases: Mapping[str, Alias]) -> list[ShopEventIn]:
    """The events with every aliased guest key replaced by its account's key."""
    return [
        replace(e, customer_key=alias.canonical_key)
        if e.customer_key and (alias := aliases.get(e.customer_key))
        else e
        for e in events
    ]


def merged_links(found: Iterable[Link], aliases: Mapping[str, Alias]) -> list[Link]:
    """The batch's links made by the event that merged a stored guest into that account: a
    redelivery of that event announces the merge again, under the same id, so a publish lost
    after the commit is repaired (other events of the account announce nothing)."""
    out = []
    for link in found:
        alias = aliases.get(link.guest_key)
        if alias and alias.merged_by == link.event_id and alias.canonical_key == link.account_key:
            out.append(link)
    return out


def merged_activities(
    found: Iterable[Link],
    aliases: Mapping[str, Alias],
    profiles: Mapping[str, ev.Profile],
    carts: Mapping[str, OpenCart],
    now: datetime,
) -> list[tuple[str, ev.CloudEvent]]:
    """customer.merged.v1 activity per merged link, keyed by the surviving (account) key."""
    out: list[tuple[str, ev.CloudEvent]] = []
    for link in found:
        profile = profiles.get(link.account_key)
        merged_at = aliases[link.guest_key].merged_at
        if profile is None or merged_at is None:
            continue
        source_id = ev.stable_event_id("merged", link.guest_key, link.account_key)
        data = ev.Activity.model_construct(
            kind=ev.CUSTOMER_MERGED_KIND,
            source_event_id=source_id,
            occurred_at=merged_at,
            profile=profile,
            cart=None if (cart := carts.get(link.account_key)) is None else cart.snapshot(),
            merged=ev.CustomerMerged(
                shop_id=link.shop_id,
                email=link.email,
                surviving_key=link.account_key,
                merged_key=link.guest_key,
                merged_at=merged_at,
            ),
        )
        out.append((link.account_key, activity_event(data, link.account_key, link.shop_id, now)))
    return out
