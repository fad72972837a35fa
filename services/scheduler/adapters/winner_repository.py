"""The declared A/B winners (scheduler.ab_winners): recorded once per journey version and send
step, never replaced, and read in one statement by the runner (which variant later entrants
get) and by the reports (which variant won, and since when)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# ON CONFLICT DO NOTHING: a winner once declared stays, whatever a later look at the data says
# (and two engine instances declaring at once record one row).
_RECORD = text("""
    INSERT INTO scheduler.ab_winners (journey_id, journey_version, step_id, variant, metric,
        p_values, figures, declared_at)
    VALUES (:journey_id, :journey_version, :step_id, :variant, :metric,
        CAST(:p_values AS jsonb), CAST(:figures AS jsonb), :declared_at)
    ON CONFLICT (journey_id, journey_version, step_id) DO NOTHING
""")

_OF_VERSIONS = text("""
    SELECT w.journey_id, w.journey_version, w.step_id, w.variant
    FROM scheduler.ab_winners w
    JOIN unnest(CAST(:ids AS text[]), CAST(:versions AS int[])) AS v(journey_id, version)
        ON v.journey_id = w.journey_id AND v.version = w.journey_version
""")

_ALL = text("""
    SELECT journey_id, journey_version, step_id, variant, metric, p_values, figures, declared_at
    FROM scheduler.ab_winners
""")


@dataclass(frozen=True)
class DeclaredWinner:
    journey_id: str
    journey_version: int
    step_id: str
    variant: str
    metric: str
    p_values: dict[str, float]  # the winner against each other variant
    figures: dict[str, dict[str, float]]  # variant -> sent, successes, mean (at declaration)
    declared_at: datetime


Version = tuple[str, int]


class WinnerRepository:
    """Callers own the transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def record(self, winner: DeclaredWinner) -> bool:
        """True when this call declared it; False when a winner was already recorded."""
        result = await self.conn.execute(
            _RECORD,
            {
                "journey_id": winner.journey_id,
                "journey_version": winner.journey_version,
                "step_id": winner.step_id,
                "variant": winner.variant,
                "metric": winner.metric,
                "p_values": orjson.dumps(winner.p_values).decode(),
                "figures": orjson.dumps(winner.figures).decode(),
                "declared_at": winner.declared_at,
            },
        )
        return bool(result.rowcount)

    async def of_versions(self, versions: Sequence[Version]) -> dict[Version, dict[str, str]]:
        """Per journey version, step id -> the winning variant (what the engine is given)."""
        if not versions:
            return {}
        rows = await self.conn.execute(
            _OF_VERSIONS,
            {"ids": [v[0] for v in versions], "versions": [v[1] for v in versions]},
        )
        out: dict[Version, dict[str, str]] = {}
        for r in rows:
            out.setdefault((r.journey_id, r.journey_version), {})[r.step_id] = r.variant
        return out

    async def all(self) -> list[DeclaredWinner]:
        return [_winner(r._mapping) for r in await self.conn.execute(_ALL)]


def _winner(row: Any) -> DeclaredWinner:
    return DeclaredWinner(**dict(row))
