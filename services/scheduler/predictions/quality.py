"""Whether a shop's order history can carry the purchase models, and a note that says how far
to trust them. Pure: decided from the summary and the fitted models.

The thresholds come from fitting BG/NBD on random CDNOW cohorts (docs/predictions.md): with
~40 or ~100 repeat buyers one fit in ten did not converge (reported as fit_failed) and the
39-week forecast of the others missed the real total by up to 41%; with ~200 every fit
converged (worst miss 32%); ~400: 24%; ~800: 22% (the full 946 miss by 12%: the model's own
under-forecast on CDNOW). Below 100 Rebound does not fit; below 400 it calls the fit rough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.scheduler.predictions.model import BgNbd, GammaGamma, Summary

MIN_REPEAT_BUYERS = 100
RELIABLE_REPEAT_BUYERS = 400
MIN_HISTORY_WEEKS = 13.0  # the oldest customer's age: a quarter, to see anyone come back
MAX_SPEND_CORRELATION = 0.3  # Gamma-Gamma assumes order value independent of frequency

Status = Literal["ok", "rough", "too_little_data", "fit_failed"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    note: str

    @property
    def fitted(self) -> bool:
        return self.status in ("ok", "rough")


def before_fit(summary: Summary) -> Verdict | None:
    """A refusal when the history cannot carry a fit; None: fit."""
    repeat_buyers = int((summary.x > 0).sum())
    oldest = float(summary.T.max()) if summary.size else 0.0
    if repeat_buyers < MIN_REPEAT_BUYERS:
        return Verdict(
            "too_little_data",
            f"{repeat_buyers} customers have ordered on more than one day; Rebound needs "
            f"{MIN_REPEAT_BUYERS}: with fewer, how often and how long customers keep buying "
            "rests on too few of them (fits fail to converge or miss by 40%), so no "
            "predictions are made rather than wrong ones.",
        )
    if oldest < MIN_HISTORY_WEEKS:
        return Verdict(
            "too_little_data",
            f"the order history covers {oldest:.1f} weeks; Rebound needs "
            f"{MIN_HISTORY_WEEKS:.0f} (a quarter) to see customers come back.",
        )
    return None


def after_fit(summary: Summary, model: BgNbd, spend: GammaGamma | None, spend_note: str) -> Verdict:
    """The fitted models, judged: how well they reproduce the history they were fitted on,
    whether order value looks independent of frequency, and how many repeat buyers there are."""
    repeat_buyers = int((summary.x > 0).sum())
    notes = [
        f"{summary.size} customers, {repeat_buyers} repeat buyers.",
        _in_sample(summary, model),
        spend_note if spend is None else _spend(summary),
    ]
    if repeat_buyers < RELIABLE_REPEAT_BUYERS:
        notes.append(
            f"Fewer than {RELIABLE_REPEAT_BUYERS} repeat buyers: shop totals may be off by up "
            "to 40%; use the figures to rank customers rather than as forecasts."
        )
        return Verdict("rough", " ".join(notes))
    return Verdict("ok", " ".join(notes))


def _in_sample(summary: Summary, model: BgNbd) -> str:
    expected = float(model.expected_purchases_at(summary.T).sum())
    actual = float(summary.x.sum())
    return (
        f"Over the history it was fitted on, the model expects {expected:,.0f} repeat "
        f"purchases where there were {actual:,.0f}."
    )


def _spend(summary: Summary) -> str:
    repeat = (summary.x > 0) & (summary.monetary > 0)
    if repeat.sum() < 3:
        return "Order values: too few repeat buyers to check the spend model."
    correlation = float(np.corrcoef(summary.x[repeat], summary.monetary[repeat])[0, 1])
    if abs(correlation) > MAX_SPEND_CORRELATION:
        return (
            f"Order value and frequency correlate ({correlation:.2f}): Gamma-Gamma assumes "
            "they do not, so expected order values lean toward the shop's average."
        )
    return f"Order value and frequency are nearly independent ({correlation:.2f}), as assumed."
