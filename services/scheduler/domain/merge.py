"""One person, enrolled once per journey (docs/adr/0004-one-customer.md): what becomes of a
guest's enrolments when the guest is merged into an account. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.scheduler.domain.engine import Enrollment

MERGED = "merged"  # exit_reason of a guest enrolment the account already runs


@dataclass(frozen=True)
class MergePlan:
    moved: list[int]  # every enrolment of the guest: from now on the account's
    ended: list[int]  # of those, the active ones the account runs too: exited, reason merged


def plan_merge(guest: Sequence[Enrollment], account: Sequence[Enrollment]) -> MergePlan:
    """The account's own enrolment of a journey wins; the guest's continues under the account
    where the account has none. Ended enrolments move as history (re-entry rules see them)."""
    running = {e.journey_id for e in account if e.status == "active"}
    moved: list[int] = []
    ended: list[int] = []
    for enrollment in sorted(guest, key=lambda e: e.id or 0):
        assert enrollment.id is not None
        moved.append(enrollment.id)
        if enrollment.status != "active":
            continue
        if enrollment.journey_id in running:
            ended.append(enrollment.id)
        running.add(enrollment.journey_id)
    return MergePlan(moved, ended)
