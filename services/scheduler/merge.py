"""customer.merged.v1 in the scheduler (docs/adr/0004-one-customer.md): a guest merged into an
account is enrolled once per journey, and activity still travelling under the guest key is
applied to the account. Runs in the activity batch's transaction, before the runner."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.merge_repository import Canonical, Merge, MergeRepository
from services.scheduler.domain.merge import MERGED, plan_merge
from shared.events import CUSTOMER_MERGED_KIND, Activity, CartSnapshot, Profile

Batch = list[tuple[Activity, int]]  # each activity with the partition it came from


async def join_customers(
    conn: AsyncConnection, batch: Sequence[tuple[Activity, int]], now: datetime
) -> Batch:
    """Apply the batch's merges; returns the batch with merged guest keys re-keyed."""
    repo = MergeRepository(conn)
    merges = _merges(batch)
    if merges:
        await _merge(repo, merges, now)
    return await _rekeyed(repo, batch)


def _merges(batch: Sequence[tuple[Activity, int]]) -> list[Merge]:
    """One per guest key; the partition is the account key's, on which the activity came."""
    found: dict[str, Merge] = {}
    for activity, partition in batch:
        merged = activity.merged
        if activity.kind == CUSTOMER_MERGED_KIND and merged is not None:
            found.setdefault(
                merged.merged_key,
                Merge(merged.merged_key, merged.surviving_key, partition, merged.merged_at),
            )
    return [found[k] for k in sorted(found)]


async def _merge(repo: MergeRepository, merges: Sequence[Merge], now: datetime) -> None:
    await repo.add_aliases(merges)
    keys = sorted({m.guest_key for m in merges} | {m.account_key for m in merges})
    enrollments = await repo.enrollments_for_update(keys)
    ended: list[int] = []
    for merge in merges:
        plan = plan_merge(
            [e for e in enrollments if e.customer_key == merge.guest_key],
            [e for e in enrollments if e.customer_key == merge.account_key],
        )
        ended += plan.ended
    await repo.end(ended, MERGED, now)
    await repo.move(merges, now)


async def _rekeyed(repo: MergeRepository, batch: Sequence[tuple[Activity, int]]) -> Batch:
    """Activity published under a guest key before the merge (its partition is not ordered
    against the account's) is applied as the account's, with the account's facts."""
    guests = sorted({a.profile.key for a, _ in batch if _guest(a.profile)})
    canonical = await repo.canonical(guests)
    if not canonical:
        return list(batch)
    latest = _latest_facts(batch)
    out: Batch = []
    for activity, partition in batch:
        found = canonical.get(activity.profile.key)
        if found is None:
            out.append((activity, partition))
        else:
            out.append((_as_account(activity, found, latest), found.partition))
    return out


def _guest(profile: Profile) -> bool:
    return profile.key.startswith(f"{profile.shop_id}:e:")


def _latest_facts(
    batch: Sequence[tuple[Activity, int]],
) -> dict[str, tuple[Profile, CartSnapshot | None]]:
    """The accounts' facts as this batch's merges carried them (not stored until the runner)."""
    return {a.profile.key: (a.profile, a.cart) for a, _ in batch if a.kind == CUSTOMER_MERGED_KIND}


def _as_account(
    activity: Activity,
    account: Canonical,
    latest: dict[str, tuple[Profile, CartSnapshot | None]],
) -> Activity:
    if account.key in latest:
        profile, cart = latest[account.key]
    elif account.profile is not None:
        profile, cart = account.profile, account.cart
    else:
        profile, cart = activity.profile.model_copy(update={"key": account.key}), activity.cart
    return activity.model_copy(update={"profile": profile, "cart": cart})
