"""`python -m services.dispatcher run | migrate`: start-up only."""

from __future__ import annotations

import typer
import uvloop

from services.dispatcher.app import DispatcherService
from services.dispatcher.app import migrate as migrate_schema
from services.dispatcher.settings import DispatcherSettings
from shared.clock import SystemClock
from shared.http import serve
from shared.logging import configure_logging
from shared.runtime import quiet_garbage_collector

cli = typer.Typer(
    help="Rebound dispatcher: message requests in, e-mails out.",
    no_args_is_help=True,
    add_completion=False,
)


def _settings() -> DispatcherSettings:
    settings = DispatcherSettings()
    configure_logging("dispatcher", settings.log_level, settings.log_json)
    return settings


@cli.command()
def run() -> None:
    """Consume message.requests, send e-mails, serve /healthz /readyz /metrics."""
    settings = _settings()
    service = DispatcherService(settings, SystemClock())
    quiet_garbage_collector()
    uvloop.run(serve(service, settings.http_host, settings.http_port))


@cli.command()
def migrate() -> None:
    """Create or upgrade the dispatcher schema (Alembic, schema `dispatcher`)."""
    migrate_schema(_settings())


if __name__ == "__main__":
    cli()
