"""ingest's command line: `run` serves the webhook API and/or runs the facts consumer; `migrate`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from services.ingest.adapters.tables import SCHEMA
from services.ingest.app import MIGRATIONS_DIR
from services.ingest.settings import IngestSettings
from services.ingest.workers import run_workers, serve_one
from shared.db import upgrade
from shared.logging import configure_logging, get_logger

cli = typer.Typer(help="Rebound ingest: shop events in, customer facts kept.", no_args_is_help=True)
log = get_logger(__name__)


@cli.command()
def run(
    role: Annotated[
        str | None,
        typer.Option(
            help="api (HTTP only), consumer (facts only) or all; default REBOUND_INGEST_ROLE."
        ),
    ] = None,
) -> None:
    """Serve /webhooks/shopify and /events and run the facts consumer until SIGINT/SIGTERM."""
    if role is not None and role not in ("api", "consumer", "all"):
        raise typer.BadParameter("use api, consumer or all", param_hint="--role")
    settings = IngestSettings()
    workers = settings.worker_processes()
    if workers == 1:
        serve_one(role, reuse_port=False)
    else:
        configure_logging("ingest", settings.log_level, settings.log_json)
        log.info("starting_workers", workers=workers, role=settings.role)
        sys.exit(run_workers(workers, role))


@cli.command()
def migrate() -> None:
    """Bring the ingest schema to the newest migration."""
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level, settings.log_json)
    upgrade(MIGRATIONS_DIR, settings.database_url, SCHEMA)
    log.info("migrated", schema=SCHEMA)


if __name__ == "__main__":
    cli()
