"""python -m rebound dlq list TOPIC | dlq replay TOPIC [--offset N ...] | import orders FILE

Reads REBOUND_KAFKA_BOOTSTRAP_SERVERS and REBOUND_TOPIC_PREFIX, with the services' defaults.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from rebound.dlq import DeadLetter, DlqError, dead_letters, dlq_topic, replay
from rebound.importer import import_cli
from shared.settings import ServiceSettings

cli = typer.Typer(help="Rebound operator commands.", no_args_is_help=True)
dlq_cli = typer.Typer(
    help="Dead letters: what a consumer could not process, with the reason.",
    no_args_is_help=True,
)
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(import_cli, name="import")

TopicArgument = Annotated[
    str, typer.Argument(help="The topic the records came from, e.g. shop.events (or its .dlq).")
]


def _where(topic: str) -> tuple[str, str]:
    settings = ServiceSettings()
    return settings.kafka_bootstrap_servers, dlq_topic(topic, settings.topic_prefix)


@dlq_cli.command("list")
def list_command(topic: TopicArgument) -> None:
    """Show every dead letter of TOPIC: offset, key, reason, when, and whether it was replayed."""
    bootstrap, dlq = _where(topic)
    letters = asyncio.run(dead_letters(bootstrap, dlq))
    if not letters:
        typer.echo(f"{dlq}: no dead letters")
        return
    typer.echo(f"{dlq}: {len(letters)} dead letter(s)")
    typer.echo("PARTITION  OFFSET  WHEN (UTC)            REPLAYED  KEY / FROM / REASON")
    for letter in letters:
        typer.echo(_line(letter))


def _line(letter: DeadLetter) -> str:
    key = letter.key.decode(errors="replace") if letter.key is not None else "-"
    when = letter.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S")
    replayed = "yes" if letter.replayed else "no"
    return (
        f"{letter.partition:>9}  {letter.offset:>6}  {when:<20}  {replayed:<8}  {key}\n"
        f"{'':>9}  {'':>6}  from {letter.origin}: {letter.reason}"
    )


@dlq_cli.command("replay")
def replay_command(
    topic: TopicArgument,
    offset: Annotated[
        list[str] | None,
        typer.Option(
            "--offset",
            help="Replay only this dead letter: N, or PARTITION:N when N is on more than one "
            "partition. Repeat for several. Without it, every dead letter not replayed yet.",
        ),
    ] = None,
) -> None:
    """Send dead letters again (original bytes and key) to their topic, each only once."""
    bootstrap, dlq = _where(topic)
    try:
        done, skipped = asyncio.run(replay(bootstrap, dlq, offset or ()))
    except DlqError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for letter in done:
        typer.echo(f"replayed {letter.partition}:{letter.offset} -> {letter.header('dlq.topic')}")
    for letter in skipped:
        typer.echo(f"skipped {letter.partition}:{letter.offset}: replayed before")
    typer.echo(f"{len(done)} replayed, {len(skipped)} already replayed")


if __name__ == "__main__":
    cli()
