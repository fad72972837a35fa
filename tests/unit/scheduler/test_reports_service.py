"""The reports' verdicts and shapes, from figures: what a shop reads next to the numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.scheduler.adapters.winner_repository import DeclaredWinner
from services.scheduler.domain.journey import parse_journey
from services.scheduler.reports import charts
from services.scheduler.reports.repository import CohortCell, OutcomeRow, StepRow
from services.scheduler.reports.service import ab_tests, cohort_matrix, holdout_lift, lift_verdict
from services.scheduler.reports.statistics import Interval

WEEK = timedelta(days=7)


def _outcomes(treated: tuple[int, int], held: tuple[int, int]) -> list[OutcomeRow]:
    """(customers, converted) per group; each conversion is one order of 10."""
    return [
        OutcomeRow("j", holdout, n, c, Decimal(10 * c), Decimal(100 * c), 0)
        for holdout, (n, c) in ((False, treated), (True, held))
    ]


def test_a_small_shop_is_told_it_cannot_tell_yet() -> None:
    lift = holdout_lift(_outcomes((40, 4), (10, 1)), WEEK)
    assert lift.verdict.startswith("not enough customers yet to tell")
    assert lift.minimum_detectable_lift is not None and lift.minimum_detectable_lift > 0.2


def test_a_large_real_lift_is_named_with_its_interval() -> None:
    lift = holdout_lift(_outcomes((20_000, 1_600), (5_000, 250)), WEEK)  # 8% against 5%
    assert lift.verdict.startswith("the journey raises conversion: +3.0 points")
    assert lift.absolute_lift is not None and lift.absolute_lift.low > 0
    assert lift.incremental_revenue is not None and lift.incremental_revenue.low > 0
    assert "Newcombe" in lift.absolute_lift_method and "Welch" in lift.revenue_method


def test_an_empty_holdout_says_so() -> None:
    lift = holdout_lift(_outcomes((40, 4), (0, 0)), WEEK)
    assert lift.absolute_lift is None and "still empty" in lift.verdict


def test_a_large_sample_without_effect_says_no_lift_rather_than_wait() -> None:
    verdict = lift_verdict(Interval(0.001, -0.004, 0.006), mde=0.008)
    assert verdict.startswith("no lift of 0.8 points or more")


def test_the_cohort_matrix_holds_shares_of_elapsed_months_only() -> None:
    cells = [
        CohortCell(date(2021, 10, 1), None, 4),
        CohortCell(date(2021, 10, 1), 1, 2),
        CohortCell(date(2021, 10, 1), 3, 1),
        CohortCell(date(2021, 12, 1), None, 2),
    ]
    matrix = cohort_matrix(cells, 12, datetime(2022, 1, 15, tzinfo=UTC))
    assert [(r.cohort, r.customers, r.returned) for r in matrix.rows] == [
        (date(2021, 10, 1), 4, [0.5, 0.0, 0.25]),
        (date(2021, 12, 1), 2, [0.0]),
    ]


BASE = """
id: ab
version: 1
name: AB
trigger: {event: shop.cart.updated.v1}
steps:
  - id: mail
    send:
      template: t
      subject: s
"""


def test_winner_by_is_refused_without_two_variants_and_send_winner_without_winner_by() -> None:
    with pytest.raises(ValidationError, match="at least two variants"):
        parse_journey(BASE + "      winner_by: click\n")
    variants = "      variants: [{id: a}, {id: b}]\n"
    assert parse_journey(BASE + variants + "      winner_by: revenue\n").steps[0].send
    with pytest.raises(ValidationError, match="send_winner needs winner_by"):
        parse_journey(BASE + variants + "      send_winner: true\n")
    sending = parse_journey(BASE + variants + "      winner_by: click\n      send_winner: true\n")
    assert sending.steps[0].send is not None and sending.steps[0].send.send_winner
    with pytest.raises(ValidationError, match="winner_by"):
        parse_journey(BASE + variants + "      winner_by: opens\n")


def _sent(variant: str, sent: int, clicks: int) -> StepRow:
    zero = Decimal(0)
    return StepRow("ab", "mail", variant, sent, sent, 0, 0, 0, 0, clicks, 0, 0, 0, zero, zero)


def test_the_ab_section_names_the_declared_winner_and_since_when() -> None:
    variants = "      variants: [{id: a}, {id: b}]\n"
    ab = parse_journey(BASE + variants + "      winner_by: click\n      send_winner: true\n")
    rows = [_sent("a", 150, 60), _sent("b", 150, 3)]
    at = datetime(2022, 1, 3, 9, 30, tzinfo=UTC)
    declared = DeclaredWinner("ab", 1, "mail", "a", "click", {"b": 0.001}, {}, at)
    (test,) = ab_tests(ab, rows, {"mail": declared})
    assert test.winner == "a" and test.declared is not None
    assert (test.declared.variant, test.declared.declared_at) == ("a", at)
    assert test.declared.note == (
        "a declared the winner by click on 2022-01-03 09:30 UTC: everyone who reaches this "
        "step since gets it"
    )
    (undeclared,) = ab_tests(ab, rows)
    assert undeclared.winner == "a" and undeclared.declared is None
    (only_declared,) = ab_tests(ab, [], {"mail": declared})  # nothing sent in the range
    assert only_declared.declared is not None and only_declared.winner is None


def test_chart_labels_are_escaped() -> None:
    svg = charts.bars([("<script>x</script>", 3)], "sizes")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
