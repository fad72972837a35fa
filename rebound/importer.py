"""python -m rebound import orders FILE --shop SHOP: a shop's order history into the facts.

Reads REBOUND_INGEST_DATABASE_URL and REBOUND_INGEST_SHOPS (for the shop's facts settings),
like the ingest service. Shows a progress bar (rows, rows/s, ETA); rejected rows are listed
with their line number and reason after the import, which does not stop for them.
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
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from services.ingest.domain.history_csv import RowError
from services.ingest.history_import import ImportReport, count_rows, import_orders
from services.ingest.settings import IngestSettings, facts_settings_for
from shared.clock import SystemClock
from shared.db import make_engine

import_cli = typer.Typer(help="Import a shop's history into the facts.", no_args_is_help=True)
SHOWN_REJECTIONS = 50


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- rows/s" if speed is None else f"{speed:,.0f} rows/s")


@import_cli.command("orders")
def orders_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The CSV file.")],
    shop: Annotated[str, typer.Option("--shop", help="Rebound's id of the shop.")],
) -> None:
    """Import orders from Shopify's orders export or the generic CSV (docs/import.md).
    Running it again adds nothing; no journey is triggered by imported orders."""
    console = Console(stderr=True)
    try:
        report = asyncio.run(_run(file, shop, console))
    except RowError as exc:
        console.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    _summary(report, console)
    if report.rejected:
        raise typer.Exit(1)


async def _run(file: Path, shop: str, console: Console) -> ImportReport:
    settings = IngestSettings()
    engine = make_engine(settings.database_url, pool_size=1)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"importing {file.name}", total=count_rows(file))
            return await import_orders(
                engine,
                file,
                shop,
                facts_settings_for(settings.shops),
                SystemClock(),
                progress=lambda rows: progress.update(task, completed=rows),
            )
    finally:
        await engine.dispose()


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
