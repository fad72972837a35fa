"""python -m rebound import orders FILE --shop SHOP: a shop's order history into the facts.

Reads REBOUND_INGEST_DATABASE_URL and REBOUND_INGEST_SHOPS (for the shop's facts settings),
like the ingest service. Shows progress bars (the file read: rows, rows/s, ETA; then the facts
applied: orders/s); rejected rows are listed with their line number and reason after the
import, which does not stop for them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.domain.history_csv import RowError
from services.ingest.history_import import (
    IMPORT_SESSIONS,
    ImportReport,
    count_rows,
    import_orders,
)
from services.ingest.history_publish import publish_imported
from services.ingest.settings import IngestSettings, facts_settings_for
from shared.clock import SystemClock
from shared.db import make_engine
from shared.kafka import Publisher, make_producer
from shared.topics import CUSTOMER_ACTIVITY, Topics

import_cli = typer.Typer(help="Import a shop's history into the facts.", no_args_is_help=True)
SHOWN_REJECTIONS = 50


class PerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "rows")
        return Text(f"- {unit}/s" if speed is None else f"{speed:,.0f} {unit}/s")


@import_cli.command("orders")
def orders_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The CSV file.")],
    shop: Annotated[str, typer.Option("--shop", help="Rebound's id of the shop.")],
    publish: Annotated[
        bool,
        typer.Option(
            help="Publish the changed customers' facts (customer.history.imported.v1) so "
            "segment journeys see them; needs REBOUND_INGEST_KAFKA_BOOTSTRAP_SERVERS."
        ),
    ] = True,
) -> None:
    """Import orders from Shopify's orders export or the generic CSV (docs/import.md).
    Running it again adds nothing; no journey is triggered by imported orders."""
    console = Console(stderr=True)
    try:
        report = asyncio.run(_run(file, shop, console, publish))
    except RowError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    _summary(report, console)
    if report.rejected:
        raise typer.Exit(1)


async def _run(file: Path, shop: str, console: Console, publish: bool) -> ImportReport:
    settings = IngestSettings()
    engine = make_engine(settings.database_url, pool_size=IMPORT_SESSIONS)
    try:
        report = await _import(engine, file, shop, console, settings)
        if publish and report.customers:
            sent = await _publish(engine, settings, report)
            console.print(f"{sent} customers' facts published for segment journeys")
        return report
    finally:
        await engine.dispose()


async def _publish(engine: AsyncEngine, settings: IngestSettings, report: ImportReport) -> int:
    producer = make_producer(settings.kafka_bootstrap_servers, settings.kafka_client_id)
    await producer.start()
    try:
        return await publish_imported(
            engine,
            Publisher(producer, "ingest"),
            Topics(settings.topic_prefix).name(CUSTOMER_ACTIVITY),
            report.customers,
            facts_settings_for(settings.shops),
            SystemClock().now(),
        )
    finally:
        await producer.stop()


async def _import(
    engine: AsyncEngine, file: Path, shop: str, console: Console, settings: IngestSettings
) -> ImportReport:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        PerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        return await import_orders(
            engine,
            file,
            shop,
            facts_settings_for(settings.shops),
            SystemClock(),
            progress=Bars(progress, file.name, count_rows(file)),
        )


class Bars:
    """Two bars: the file read (rows), then the facts applied (orders)."""

    def __init__(self, progress: Progress, name: str, rows: int) -> None:
        self._progress = progress
        self._read = progress.add_task(f"reading {name}", total=rows, unit="rows")
        self._applied: TaskID | None = None

    def read(self, rows: int) -> None:
        self._progress.update(self._read, completed=rows)

    def applied(self, orders: int, total: int) -> None:
        if self._applied is None:
            self._applied = self._progress.add_task("applying", total=total, unit="orders")
        self._progress.update(self._applied, completed=orders)


def _summary(report: ImportReport, console: Console) -> None:
    for rejected in report.rejected[:SHOWN_REJECTIONS]:
        console.print(f"line {rejected.line}: {rejected.reason}", markup=False, highlight=False)
    hidden = len(report.rejected) - SHOWN_REJECTIONS
    if hidden > 0:
        console.print(f"... and {hidden} more rejected rows")
    console.print(
        f"{report.rows} rows: {report.orders} orders, {report.new_orders} new, "
        f"{report.orders - report.new_orders} already imported, "
        f"{len(report.rejected)} rows rejected"
    )
