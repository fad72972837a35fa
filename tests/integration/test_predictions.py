"""Purchase predictions end to end: the CDNOW sample's calibration period (1997-01-01 ..
1997-09-30) imported through the history import, its customers' facts carried to the scheduler
as customer.activity (ingest's own encoding, the scheduler's own consumer code), fitted in the
worker process as of 1997-09-30, reproduce Fader, Hardie & Lee (2005); the following 39 weeks
are compared with what the customers really bought. Then the control plane around it."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.activity import encoded_stage_events
from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.history_import import import_orders
from services.ingest.order_facts import StageChange
from services.ingest.profiles import grown_profiles
from services.scheduler.app import SchedulerService
from services.scheduler.predictions import model
from services.scheduler.predictions.repository import FitRepository, PredictionRepository, dsn
from services.scheduler.runner import JourneyCatalog, Runner
from services.scheduler.settings import SchedulerSettings
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import Topics
from tests.conftest import ADMIN, ADMIN_TOKEN, ROOT, Infra

# The CDNOW history (23,570 customers) is imported for real: minutes on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SAMPLE = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_sample.txt"
SHOP = "cdnow"
CALIBRATION_END = date(1997, 9, 30)
AS_OF = datetime(1997, 9, 30, tzinfo=UTC)  # T in weeks up to the end of week 39
HOLDOUT_WEEKS = 39.0  # 1997-10-01 .. 1998-06-30
REPORT = ROOT / ".local" / "test-output" / "predictions-cdnow.txt"


def sample_rows() -> list[tuple[str, date, str]]:
    rows = []
    for line in SAMPLE.read_text().splitlines():
        customer, _, day, _, dollars = line.split()
        rows.append((customer, datetime.strptime(day, "%Y%m%d").date(), dollars))
    return rows


def calibration_csv(path: Path, rows: list[tuple[str, date, str]]) -> Path:
    """The generic import format, one order per purchase row, up to the calibration's end."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_id", "order_id", "date", "total", "currency"])
        for n, (customer, day, dollars) in enumerate(rows, start=1):
            if day <= CALIBRATION_END:
                out.writerow([customer, f"{customer}-{n}", day.isoformat(), dollars, "USD"])
    return path


def defaults(shop_id: str) -> FactsSettings:
    return FactsSettings()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(AS_OF)


@pytest.fixture
async def service(
    infra: Infra, database_url: str, clock: ManualClock
) -> AsyncIterator[SchedulerService]:
    settings = SchedulerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=infra.bootstrap,
        admin_token=ADMIN_TOKEN,
        predictions_refresh_s=0,
    )
    service = SchedulerService(settings, clock)
    yield service
    await service.stop()


@pytest.fixture
async def api(service: SchedulerService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://scheduler", headers=ADMIN
    ) as client:
        yield client


async def import_and_announce(db: AsyncEngine, csv_path: Path, shop_id: str, now: datetime) -> None:
    """The history import, then each imported customer's profile as customer.activity (ingest
    publishes none for history: docs/import.md), applied by the scheduler's consumer code."""
    await import_orders(db, csv_path, shop_id, defaults, ManualClock(now))
    async with db.begin() as conn:
        keys = [
            r[0]
            for r in await conn.execute(
                text("SELECT customer_key FROM ingest.customers WHERE shop_id = :s"), {"s": shop_id}
            )
        ]
        profiles = await grown_profiles(OrderFactsRepository(conn), keys, defaults, now)
    changes = [StageChange(k, shop_id, None, p.stage or "new") for k, p in profiles.items()]
    activities = [
        (ev.payload(ev.decode(value), ev.Activity), 0)
        for _, value in encoded_stage_events(changes, profiles, {}, {}, now)
    ]
    async with db.begin() as conn:
        await Runner(JourneyCatalog(), Topics()).apply_activities(conn, activities, now)


async def test_cdnow_through_the_import_reproduces_the_published_model(
    db: AsyncEngine, api: httpx.AsyncClient, clock: ManualClock, database_url: str, tmp_path: Path
) -> None:
    rows = sample_rows()
    await import_and_announce(db, calibration_csv(tmp_path / "cdnow.csv", rows), SHOP, AS_OF)

    refreshed = await api.post(f"/predictions/{SHOP}/refresh")
    assert refreshed.status_code == 200, refreshed.text
    fit = refreshed.json()["fit"]
    assert (fit["customers"], fit["repeat_buyers"], fit["repeat_purchases"]) == (2357, 946, 2457)
    assert fit["status"] == "ok" and fit["as_of"].startswith("1997-09-30")
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert fit["bgnbd"][name] == pytest.approx(value, rel=0.01), name
    spend = fit["gamma_gamma"]
    assert (spend["p"], spend["q"], spend["gamma"]) == pytest.approx((6.25, 3.74, 15.44), rel=0.01)

    predicted, actual = holdout(database_url, fit["bgnbd"], rows)
    errors = predicted - actual
    mae, rmse = float(np.abs(errors).mean()), float(np.sqrt((errors**2).mean()))
    report = (
        f"CDNOW sample through the import, fitted as of {AS_OF.date()} (weeks):\n"
        f"  r={fit['bgnbd']['r']:.4f} alpha={fit['bgnbd']['alpha']:.4f} "
        f"a={fit['bgnbd']['a']:.4f} b={fit['bgnbd']['b']:.4f} "
        f"(published 0.243 4.414 0.793 2.426)\n"
        f"  next {HOLDOUT_WEEKS:.0f} weeks: {predicted.sum():,.0f} repeat purchases predicted, "
        f"{actual.sum():,.0f} actual ({predicted.sum() / actual.sum() - 1:+.1%}); "
        f"per customer MAE {mae:.3f}, RMSE {rmse:.3f}\n"
    )
    print(report)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report)
    # BG/NBD's known under-forecast on CDNOW (1,653 vs 1,882 in the literature's figures)
    assert predicted.sum() == pytest.approx(actual.sum(), rel=0.15)
    assert mae < 0.85

    shop = (await api.get(f"/predictions/{SHOP}")).json()
    summary = shop["summary"]
    assert summary["customers"] == 2357
    assert sum(b["customers"] for b in summary["p_alive"]) == 2357
    # 90 days is about 12.9 weeks of the 39 weeks: roughly a third of the holdout's purchases
    assert 0.2 * actual.sum() < summary["expected_orders_90d"] < 0.5 * actual.sum()
    assert summary["expected_orders_30d"] < summary["expected_orders_90d"]


def holdout(
    database_url: str, params: dict[str, float], rows: list[tuple[str, date, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per customer (the scheduler's facts) the 39-week forecast and the real purchase days."""
    with psycopg.connect(dsn(database_url), autocommit=True) as conn:
        facts = FitRepository(conn).facts(SHOP)
    summary = model.summarise_facts(
        facts.customers, facts.first_order_s, facts.last_order_s, facts.purchase_days,
        facts.spent, facts.first_day_spent, AS_OF.timestamp(),
    )  # fmt: skip
    fitted = model.BgNbd(params["r"], params["alpha"], params["a"], params["b"])
    predicted = fitted.expected_purchases(HOLDOUT_WEEKS, summary.x, summary.t_x, summary.T)
    later: dict[str, set[date]] = defaultdict(set)
    for customer, day, _ in rows:
        if day > CALIBRATION_END:
            later[f"{SHOP}:c:{customer}"].add(day)
    actual = np.array([len(later[c]) for c in summary.customers], dtype=float)
    return predicted, actual


async def test_per_customer_predictions_and_what_a_refresh_changed(
    db: AsyncEngine, api: httpx.AsyncClient, clock: ManualClock, tmp_path: Path
) -> None:
    await import_and_announce(db, calibration_csv(tmp_path / "c.csv", sample_rows()), SHOP, AS_OF)
    assert (await api.post(f"/predictions/{SHOP}/refresh")).status_code == 200

    lapsed = (await api.get(f"/predictions/{SHOP}/customers?limit=5")).json()
    assert len(lapsed) == 5 and lapsed[0]["p_alive"] <= lapsed[-1]["p_alive"] < 0.3
    key = lapsed[0]["customer_key"]
    one = (await api.get(f"/predictions/{SHOP}/customers/{key}")).json()
    assert one == lapsed[0]
    assert one["next_order_at"] is None  # lapsed: no even chance of another order
    # BG/NBD lets customers lapse only right after a purchase: no repeat, P(alive) 1.
    page = f"/predictions/{SHOP}/customers?order=p_alive_desc&limit=1000"
    top = (await api.get(page)).json() + (await api.get(page + "&offset=1000")).json()
    assert sum(c["p_alive"] == 1.0 for c in top) == 2357 - 946
    loyal = [c for c in top if 0.9 < c["p_alive"] < 1.0]  # repeat buyers, recently seen
    async with db.connect() as conn:
        facts = await PredictionRepository(conn).facts_for([key, loyal[0]["customer_key"]])
    assert facts[key]["p_alive"] == one["p_alive"]

    again = (await api.post(f"/predictions/{SHOP}/refresh")).json()  # same facts, same moment
    assert again["fit"]["status"] == "ok" and again["changed"] == 0  # nobody to re-evaluate

    await clock.advance(timedelta(days=60))  # two silent months: P(alive) of repeat buyers falls
    later_fit = (await api.post(f"/predictions/{SHOP}/refresh")).json()
    async with db.connect() as conn:
        changed = set(await PredictionRepository(conn).changed_since(SHOP, clock.now()))
    assert len(changed) == later_fit["changed"]
    later = (await api.get(f"/predictions/{SHOP}/customers/{loyal[0]['customer_key']}")).json()
    assert loyal[0]["customer_key"] in changed and later["p_alive"] < loyal[0]["p_alive"]
    assert math.isclose(len(changed), 2357, rel_tol=0.7)


async def test_a_shop_with_too_few_repeat_buyers_gets_a_reason_not_a_model(
    db: AsyncEngine, api: httpx.AsyncClient, clock: ManualClock, tmp_path: Path
) -> None:
    few = [r for r in sample_rows() if int(r[0]) <= 150]  # ~60 repeat buyers
    await import_and_announce(db, calibration_csv(tmp_path / "few.csv", few), "small", AS_OF)

    fit = (await api.post("/predictions/small/refresh")).json()["fit"]
    assert fit["status"] == "too_little_data" and fit["bgnbd"] is None
    assert "needs 100" in fit["note"]
    assert (await api.get("/predictions/small/customers")).json() == []
    assert (await api.get("/predictions/nowhere")).status_code == 404
    assert (await api.get("/predictions/small", headers={"Authorization": ""})).status_code == 401
