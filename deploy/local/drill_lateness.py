"""Where the drill's reminder lateness comes from: each reminder's stages, and what broke.

Per reminder: when its webhook was acknowledged (the drill saw it), and from the database
the drill leaves behind, when the ingest consumer applied the checkout, when the scheduler
enrolled the customer, when the timer fired (the request was written), when a dispatcher
first claimed the request; and when the mail catcher got the mail. The lateness (mail minus
due) is the sum of each stage's part after the due moment:

- webhook: the checkout was acknowledged after the due moment (ingest API away, retries)
- ingest:  the ingest consumer applied it late (customer facts, customer.activity out)
- enrol:   the scheduler's consumer enrolled the customer late
- timer:   the timer fired late (the partition's owner was away)
- request: from the request written to a dispatcher claiming it (outbox, dispatcher consumer)
- send:    from the claim to the mail (SMTP, or a dispatcher killed after the claim)

A late reminder is put down to the incident (a kill -9 of a service, the PostgreSQL outage)
that held up its largest stage: among the services that stage depends on, the last incident
before that stage fell late, else the first one while it was late.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

STAGES = ("webhook", "ingest", "enrol", "timer", "request", "send")
# Which incidents can hold up each stage (PostgreSQL can hold up all of them).
DEPENDS_ON = {
    "webhook": ("ingest", "postgres"),
    "ingest": ("ingest", "postgres"),
    "enrol": ("scheduler", "postgres"),
    "timer": ("scheduler", "postgres"),
    "request": ("dispatcher", "postgres"),  # a dead scheduler's outbox: the other relays it
    "send": ("dispatcher", "postgres"),
}
LOOKBACK_S = 30.0  # an incident this long before a stage's late part began can hold it up
LATE_S = 10.0  # reminders later than this are put down to an incident


@dataclass(frozen=True)
class Incident:
    at: datetime
    kind: str  # a service name, or "postgres"
    what: str  # e.g. "kill -9 scheduler-2", "PostgreSQL down 10 s"


@dataclass(frozen=True)
class Trace:
    """One reminder's moments (UTC), in pipeline order; None where no trace was left.

    created -> acknowledged (webhook) -> ingested (ingest consumer) -> enrolled (scheduler
    consumer) -> fired (timer) -> claimed (dispatcher) -> mailed (the catcher got it).
    """

    email: str
    due: datetime
    created: datetime
    acknowledged: datetime | None
    ingested: datetime | None
    enrolled: datetime | None
    fired: datetime | None
    claimed: datetime | None
    mailed: datetime

    def _ends(self) -> list[datetime]:
        """Each stage's end; a missing moment folds its stage into the next one, and a
        moment seen before the previous one (clocks, an ack read late) counts as that one."""
        moments = [self.acknowledged, self.ingested, self.enrolled, self.fired, self.claimed]
        ends: list[datetime] = []
        last = self.created
        for moment in [*moments, self.mailed]:
            last = max(last, moment) if moment is not None else last
            ends.append(last)
        for i in range(len(moments)):
            if moments[i] is None:  # its stage ended together with the next one
                ends[i] = ends[i - 1] if i else self.created
        return ends

    def late_parts(self) -> dict[str, tuple[datetime, datetime]]:
        """Per stage, the part of it after the due moment (empty when it ended before)."""
        parts: dict[str, tuple[datetime, datetime]] = {}
        begin = self.created
        for stage, end in zip(STAGES, self._ends(), strict=True):
            late_begin = max(begin, self.due)
            parts[stage] = (late_begin, max(late_begin, end))
            begin = max(begin, end)
        return parts

    def stages(self) -> dict[str, float]:
        """Seconds each stage added to the lateness; they add up to it."""
        return {s: (b - a).total_seconds() for s, (a, b) in self.late_parts().items()}

    @property
    def lateness_s(self) -> float:
        return (self.mailed - self.due).total_seconds()


def epoch(value: str) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def blame(trace: Trace, incidents: Sequence[Incident]) -> tuple[str, str]:
    """(the stage that added most, the incident that held it up, or 'none').

    Of the incidents that stage depends on, the last one before its late part began (what was
    broken when it should have gone on), else the first one during it.
    """
    stages = trace.stages()
    stage = max(STAGES, key=lambda s: stages[s])
    begin, end = trace.late_parts()[stage]
    candidates = [
        i
        for i in incidents
        if i.kind in DEPENDS_ON[stage]
        and (begin.timestamp() - LOOKBACK_S) <= i.at.timestamp() <= end.timestamp()
    ]
    before = [i for i in candidates if i.at <= begin]
    if before:
        return stage, max(before, key=lambda i: i.at).kind
    if candidates:
        return stage, min(candidates, key=lambda i: i.at).kind
    return stage, "none"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(traces: Sequence[Trace], incidents: Sequence[Incident]) -> list[str]:
    """The lines the drill prints under its figures."""
    if not traces:
        return ["  lateness by stage       no traces (no database rows matched)"]
    per_stage = {s: [t.stages()[s] for t in traces] for s in STAGES}
    tail = sorted(traces, key=lambda t: t.lateness_s)[-max(1, len(traces) // 10) :]
    lines = ["  lateness by stage (s)  " + "".join(f"{s:>9}" for s in STAGES)]
    for label, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)):
        cells = "".join(f"{percentile(per_stage[s], q):9.1f}" for s in STAGES)
        lines.append(f"    {label:<20}{cells}")
    for label, group in (("share of all", traces), ("share, latest 10%", tail)):
        total = sum(t.lateness_s for t in group) or 1.0
        cells = "".join(f"{sum(t.stages()[s] for t in group) / total:9.0%}" for s in STAGES)
        lines.append(f"    {label:<20}{cells}")
    late = [t for t in traces if t.lateness_s > LATE_S]
    lines.append(
        f"  later than {LATE_S:.0f} s: {len(late)} of {len(traces)}, by the stage that added "
        "most and the incident before it:"
    )
    blamed = [(blame(t, incidents), t.lateness_s) for t in late]
    for (stage, kind), n in Counter(b for b, _ in blamed).most_common():
        worst = max(late_s for b, late_s in blamed if b == (stage, kind))
        lines.append(f"    {n:5d}  {stage:<8} {kind:<11} (worst {worst:.1f} s)")
    return lines
