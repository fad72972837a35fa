"""Declares A/B winners for `send_winner` steps: every `interval_s` of the clock, the same test
the reports run (service.ab_verdict: mSPRT on the step's `winner_by`) over all the messages of
each active journey version, and a winner is recorded only when that test declares one.

A recorded winner is never replaced (the engine sends it to everyone who reaches the step
afterwards). The read is a report's: it runs on the control plane's pool in a read-only
transaction with a statement timeout, never on a connection the timer loop waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.winner_repository import (
    DeclaredWinner,
    Version,
    WinnerRepository,
)
from services.scheduler.domain.journey import Journey
from services.scheduler.journeys.repository import JourneyRepository
from services.scheduler.reports.repository import ReportsRepository, StepRow
from services.scheduler.reports.service import ab_verdict, judged_variant
from shared import metrics
from shared.clock import Clock
from shared.logging import get_logger

log = get_logger(__name__)
SERVICE = "scheduler"


@dataclass(frozen=True)
class _Candidate:
    """A send_winner step of an active journey version that has no winner yet."""

    journey_id: str
    version: int
    step_id: str
    metric: str

    @property
    def of(self) -> Version:
        return self.journey_id, self.version


@dataclass
class WinnerDeclarer:
    engine: AsyncEngine  # the control plane's own pool
    clock: Clock
    interval_s: float
    looked_at: datetime | None = None  # the clock time of the last pass that completed

    async def run(self) -> None:
        """Runs forever under the service's Loops; a failed pass is tried again next interval."""
        while True:
            try:
                await self.declare_due()
            except Exception as exc:  # the database is away or the read timed out
                metrics.ERRORS.labels(SERVICE, "ab_winners").inc()
                log.warning("ab_winner_pass_failed", error=repr(exc))
            await self.clock.sleep(self.interval_s)

    async def declare_due(self) -> list[DeclaredWinner]:
        """One pass: the winners it recorded (none when no test declares one yet)."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            repo = ReportsRepository(conn)
            await repo.read_only()
            stored = await JourneyRepository().all_versions(conn)
            known = await WinnerRepository(conn).of_versions([(j.id, j.version) for j, _ in stored])
            candidates = [c for j, active in stored if active for c in _candidates(j, known)]
            rows = await repo.variants_of(sorted({c.of for c in candidates}))
        verdicts = [_declare(c, rows.get(c.of, []), now) for c in candidates]
        recorded = [w for w in verdicts if w is not None and await self._record(w)]
        self.looked_at = now
        return recorded

    async def _record(self, winner: DeclaredWinner) -> bool:
        async with self.engine.begin() as conn:
            declared = await WinnerRepository(conn).record(winner)
        if declared:
            log.info(
                "ab_winner_declared",
                journey_id=winner.journey_id,
                journey_version=winner.journey_version,
                step_id=winner.step_id,
                variant=winner.variant,
                metric=winner.metric,
            )
        return declared


def _candidates(journey: Journey, known: dict[Version, dict[str, str]]) -> list[_Candidate]:
    declared = known.get((journey.id, journey.version), {})
    return [
        _Candidate(journey.id, journey.version, step.id, step.send.winner_by)
        for step in journey.steps
        if step.send is not None
        and step.send.send_winner
        and step.send.winner_by is not None
        and step.id not in declared
    ]


def _declare(candidate: _Candidate, rows: list[StepRow], now: datetime) -> DeclaredWinner | None:
    """A winner when the reports' test over the step's variants declares one; else None."""
    mine = [r for r in rows if r.step_id == candidate.step_id]
    verdict = ab_verdict(mine, candidate.metric)
    if verdict.winner is None:
        return None
    return DeclaredWinner(
        journey_id=candidate.journey_id,
        journey_version=candidate.version,
        step_id=candidate.step_id,
        variant=verdict.winner,
        metric=candidate.metric,
        p_values=verdict.p_values,
        figures={str(r.variant): _figures(r, candidate.metric) for r in mine},
        declared_at=now,
    )


def _figures(row: StepRow, metric: str) -> dict[str, float]:
    """What the test saw of one variant: messages sent, successes, and the mean it compared."""
    seen = judged_variant(row, metric)
    rate = seen.successes / seen.n if seen.n else 0.0
    mean = seen.value.mean if metric == "revenue" and seen.value is not None else rate
    return {"sent": seen.n, "successes": seen.successes, "mean": mean}
