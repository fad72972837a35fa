"""What becomes of a guest's enrolments when the guest is merged into an account."""

from __future__ import annotations

from datetime import UTC, datetime

from services.scheduler.domain.engine import Enrollment, Status
from services.scheduler.domain.merge import plan_merge

AT = datetime(2022, 1, 1, tzinfo=UTC)


def _enrollment(id: int, journey: str, key: str, status: Status = "active") -> Enrollment:
    return Enrollment(journey, 1, key, AT, status=status, id=id)


def test_the_guest_enrolment_continues_under_the_account_when_the_account_has_none() -> None:
    plan = plan_merge([_enrollment(1, "abandoned-cart", "g")], [_enrollment(2, "win-back", "a")])
    assert (plan.moved, plan.ended) == ([1], [])


def test_the_account_keeps_its_own_enrolment_and_the_guests_ends() -> None:
    guest = [_enrollment(1, "abandoned-cart", "g"), _enrollment(3, "welcome", "g")]
    plan = plan_merge(guest, [_enrollment(2, "abandoned-cart", "a")])
    assert (plan.moved, plan.ended) == ([1, 3], [1])


def test_ended_enrolments_move_as_history_and_never_end_again() -> None:
    guest = [_enrollment(1, "welcome", "g", "completed")]
    plan = plan_merge(guest, [_enrollment(2, "welcome", "a")])
    assert (plan.moved, plan.ended) == ([1], [])
