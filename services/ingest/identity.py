"""A batch's shop events under one key per person, in the caller's transaction: guest keys
locked, new aliases stored, events re-keyed, stored guests merged into their accounts
(docs/adr/0004-one-customer.md). Email events are re-keyed the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.ingest.adapters.identity_repository import IdentityRepository
from services.ingest.domain import identity as rules
from services.ingest.domain.engagement import EmailEventIn
from services.ingest.domain.facts import ShopEventIn


@dataclass(frozen=True)
class Joined:
    events: list[ShopEventIn]  # re-keyed: every aliased guest key replaced by its account's
    merged: list[rules.Link] = field(default_factory=list)  # guests merged by this batch
    announce: list[rules.Link] = field(default_factory=list)  # customer.merged.v1 to publish
    aliases: dict[str, rules.Alias] = field(default_factory=dict)

    @property
    def merged_accounts(self) -> set[str]:
        """Accounts whose order facts must be rebuilt from their (now joined) orders."""
        return {link.account_key for link in self.merged}


async def lock_identities(
    repo: IdentityRepository, events: Sequence[ShopEventIn]
) -> list[rules.Link]:
    """First statement of the batch, so every transaction takes these locks before any row.
    Returns the batch's links, for join_identities."""
    found = rules.links(events)
    await repo.lock(rules.identity_keys(events, found))
    return found


async def join_identities(
    repo: IdentityRepository,
    events: Sequence[ShopEventIn],
    now: datetime,
    found: list[rules.Link] | None = None,
) -> Joined:
    """`found`: the events' links as lock_identities returned them (else computed here)."""
    found = rules.links(events) if found is None else found
    keys = rules.identity_keys(events, found)
    if not keys:
        return Joined(list(events))
    await repo.add(found, now)
    aliases = await repo.aliases(keys)
    pending = [
        link
        for link in found
        if aliases[link.guest_key].canonical_key == link.account_key
        and aliases[link.guest_key].merged_at is None
    ]
    merged = await repo.merge(pending, now)
    for link in merged:
        aliases[link.guest_key] = replace(
            aliases[link.guest_key], merged_at=now, merged_by=link.event_id
        )
    return Joined(
        rules.resolve(events, aliases), merged, rules.merged_links(found, aliases), aliases
    )


async def resolve_email_events(
    repo: IdentityRepository, events: Sequence[EmailEventIn]
) -> list[EmailEventIn]:
    """E-mail events about a message sent to a guest since merged land on the account."""
    keys = sorted({e.data.customer_key for e in events if _guest(e)})
    if not keys:
        return list(events)
    await repo.lock(keys)
    aliases = await repo.aliases(keys)
    return [
        replace(e, data=e.data.model_copy(update={"customer_key": alias.canonical_key}))
        if (alias := aliases.get(e.data.customer_key)) is not None
        else e
        for e in events
    ]


def _guest(event: EmailEventIn) -> bool:
    return rules.is_guest_key(event.data.shop_id, event.data.customer_key)
