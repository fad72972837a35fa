"""python -m services.scheduler run | migrate | load-journeys"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvloop

from shared.clock import OffsetClock, SystemClock
from shared.logging import configure_logging

cli = typer.Typer(
    help="Rebound scheduler: journeys, enrolments, durable timers.", no_args_is_help=True
)
MIGRATIONS = Path(__file__).parent / "migrations"


@cli.command()
def run(
    role: Annotated[
        str | None,
        typer.Option(help="api (control plane), engine (consumers, timers) or all (default)."),
    ] = None,
) -> None:
    """Serve the control-plane API and run the activity consumer, timers and outbox relay."""
    from services.scheduler.app import SchedulerService
    from services.scheduler.settings import SchedulerSettings
    from shared.http import serve
    from shared.runtime import quiet_garbage_collector

    if role is not None and role not in ("api", "engine", "all"):
        raise typer.BadParameter("use api, engine or all", param_hint="--role")
    settings = SchedulerSettings()
    if role is not None:
        settings = settings.model_copy(update={"role": role})
    configure_logging("scheduler", settings.log_level, settings.log_json)

    clock = OffsetClock(settings.clock_offset_s) if settings.clock_offset_s else SystemClock()
    quiet_garbage_collector()

    async def main() -> None:
        # aiokafka clients bind to the running loop, so the service is built inside it.
        await serve(SchedulerService(settings, clock), settings.http_host, settings.http_port)

    uvloop.run(main())


@cli.command()
def migrate() -> None:
    """Create or upgrade the scheduler's tables (schema `scheduler`)."""
    from services.scheduler.settings import SchedulerSettings
    from shared.db import upgrade

    upgrade(MIGRATIONS, SchedulerSettings().database_url, "scheduler")


@cli.command("load-journeys")
def load_journeys_command(directory: Path | None = None) -> None:
    """Store the journey definitions (default: the shipped ones) in the database."""
    from services.scheduler.journeys.loader import load_journeys
    from services.scheduler.settings import SchedulerSettings
    from shared.db import make_engine

    settings = SchedulerSettings()

    async def load() -> None:
        engine = make_engine(settings.database_url)
        try:
            loaded = await load_journeys(engine, directory or settings.journeys_dir, SystemClock())
        finally:
            await engine.dispose()
        for journey in loaded:
            typer.echo(f"journey {journey.id} v{journey.version}: {journey.name}")

    asyncio.run(load())


if __name__ == "__main__":
    cli()
